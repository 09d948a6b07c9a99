"""The worker's one settings object, built from flags and ADPULSE_* variables in one place."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from adpulse.core.options import (
    parse_int,
    parse_log_level,
    parse_port,
    parse_positive_float,
    resolve,
)
from stream.days import zone_named
from stream.keys import DEFAULT_MAX_CAMPAIGNS, DEFAULT_MAX_CHANNELS, Retention

DEFAULT_PORT = 9109
DEFAULT_TOPIC = "adpulse.events"
DEFAULT_GROUP = "adpulse-worker"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    kafka: str = "localhost:9092"
    redis_url: str = "redis://localhost:6379/0"
    topic: str = DEFAULT_TOPIC
    group: str = DEFAULT_GROUP
    batch_size: int = 5000
    batch_within: float = 0.1
    """Seconds a batch may wait for more records once its first one is in."""
    fetch_wait: float = 0.1
    """Seconds a Kafka fetch may wait for records (fetch.max.wait.ms); see `stream.framework`."""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path | None = None
    """faust's data directory; None: a temporary directory of this process."""
    session_timeout: float = 3.0
    """Kafka group session timeout, seconds; see `stream.worker.build_app` for why it is short."""
    shutdown_timeout: float = 10.0
    """Seconds a stop or a rebalance waits for the batch in hand (Redis down: it gives up)."""
    attribution_days: int = 30
    max_channels: int = DEFAULT_MAX_CHANNELS
    """Channels counted under their own name; the events of any further one count as
    "unlisted" (see `stream.keys`)."""
    log_level: str = "INFO"
    # Day buckets (issue 13): the reporting time zone and the campaigns per channel and month.
    timezone: str = "UTC"
    """IANA name; day and month buckets are its local dates (see `stream.days`)."""
    max_campaigns: int = DEFAULT_MAX_CAMPAIGNS
    """Campaigns of a channel and month counted under their own name; beyond, as "other"."""

    @property
    def retention(self) -> Retention:
        return Retention(attribution=timedelta(days=self.attribution_days))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--kafka",
        help="Kafka bootstrap servers, host:port[,...] (ADPULSE_KAFKA, default localhost:9092)",
    )
    add(
        "--redis-url",
        help="Redis holding the counters (ADPULSE_REDIS_URL, default redis://localhost:6379/0)",
    )
    add("--topic", help=f"topic of valid events (ADPULSE_TOPIC, default {DEFAULT_TOPIC})")
    add(
        "--group",
        help="Kafka consumer group; workers of one group share the partitions "
        f"(ADPULSE_WORKER_GROUP, default {DEFAULT_GROUP})",
    )
    add(
        "--batch-size",
        help="most events applied to Redis in one call (ADPULSE_WORKER_BATCH_SIZE, default 5000)",
    )
    add(
        "--batch-within",
        help="seconds a batch waits to fill once it has its first event "
        "(ADPULSE_WORKER_BATCH_WITHIN, default 0.1)",
    )
    add(
        "--fetch-wait",
        help="seconds a Kafka fetch waits for new records before it answers empty; bounds "
        "how long a record can wait on brokers that do not answer early "
        "(ADPULSE_WORKER_FETCH_WAIT, default 0.1)",
    )
    add(
        "--host",
        help="address of the worker's own /metrics (ADPULSE_WORKER_HOST, default 127.0.0.1)",
    )
    add(
        "--port",
        help=f"port of the worker's own /metrics (ADPULSE_WORKER_PORT, default {DEFAULT_PORT})",
    )
    add(
        "--data-dir",
        help="faust's data directory, one per worker (ADPULSE_WORKER_DATA_DIR, "
        "default: a temporary directory removed at exit)",
    )
    add(
        "--session-timeout",
        help="Kafka group session timeout in seconds: how soon a dead worker's partitions move "
        "(ADPULSE_WORKER_SESSION_TIMEOUT, default 3)",
    )
    add(
        "--shutdown-timeout",
        help="seconds SIGTERM or a rebalance waits for the batch in hand to be written and "
        "committed (ADPULSE_SHUTDOWN_TIMEOUT, default 10)",
    )
    add(
        "--attribution-days",
        help="days a click id stays attributable to its channel "
        "(ADPULSE_ATTRIBUTION_DAYS, default 30)",
    )
    add(
        "--max-channels",
        help="channels kept in Redis under their own name; events of any further channel count "
        f"as 'unlisted' (ADPULSE_WORKER_MAX_CHANNELS, default {DEFAULT_MAX_CHANNELS})",
    )
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR (ADPULSE_LOG_LEVEL, default INFO)")
    # Day buckets (issue 13)
    add(
        "--timezone",
        help="reporting time zone, an IANA name: days and months are its local dates "
        "(ADPULSE_TIMEZONE, default UTC)",
    )
    add(
        "--max-campaigns",
        help="campaigns of a channel and month counted under their own name; further ones count "
        f"as 'other' (ADPULSE_WORKER_MAX_CAMPAIGNS, default {DEFAULT_MAX_CAMPAIGNS})",
    )


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> WorkerSettings:
    """The worker's settings: each flag, else its ADPULSE_* variable, else the default."""
    d = WorkerSettings()
    data_dir: Path | None = resolve(args, env, "data_dir", "ADPULSE_WORKER_DATA_DIR", None, Path)
    return WorkerSettings(
        kafka=resolve(args, env, "kafka", "ADPULSE_KAFKA", d.kafka, str),
        redis_url=resolve(args, env, "redis_url", "ADPULSE_REDIS_URL", d.redis_url, parse_url),
        topic=resolve(args, env, "topic", "ADPULSE_TOPIC", d.topic, str),
        group=resolve(args, env, "group", "ADPULSE_WORKER_GROUP", d.group, parse_group),
        batch_size=resolve(
            args, env, "batch_size", "ADPULSE_WORKER_BATCH_SIZE", d.batch_size, parse_batch_size
        ),
        batch_within=resolve(
            args,
            env,
            "batch_within",
            "ADPULSE_WORKER_BATCH_WITHIN",
            d.batch_within,
            parse_positive_float,
        ),
        fetch_wait=resolve(
            args, env, "fetch_wait", "ADPULSE_WORKER_FETCH_WAIT", d.fetch_wait, parse_fetch_wait
        ),
        host=resolve(args, env, "host", "ADPULSE_WORKER_HOST", d.host, str),
        port=resolve(args, env, "port", "ADPULSE_WORKER_PORT", d.port, parse_port),
        data_dir=data_dir,
        session_timeout=resolve(
            args,
            env,
            "session_timeout",
            "ADPULSE_WORKER_SESSION_TIMEOUT",
            d.session_timeout,
            parse_session_timeout,
        ),
        shutdown_timeout=resolve(
            args,
            env,
            "shutdown_timeout",
            "ADPULSE_SHUTDOWN_TIMEOUT",
            d.shutdown_timeout,
            parse_positive_float,
        ),
        attribution_days=resolve(
            args,
            env,
            "attribution_days",
            "ADPULSE_ATTRIBUTION_DAYS",
            d.attribution_days,
            parse_days,
        ),
        max_channels=resolve(
            args,
            env,
            "max_channels",
            "ADPULSE_WORKER_MAX_CHANNELS",
            d.max_channels,
            parse_max_channels,
        ),
        log_level=resolve(args, env, "log_level", "ADPULSE_LOG_LEVEL", "INFO", parse_log_level),
        # Day buckets (issue 13)
        timezone=resolve(args, env, "timezone", "ADPULSE_TIMEZONE", d.timezone, parse_timezone),
        max_campaigns=resolve(
            args,
            env,
            "max_campaigns",
            "ADPULSE_WORKER_MAX_CAMPAIGNS",
            d.max_campaigns,
            parse_max_campaigns,
        ),
    )


def parse_url(text: str) -> str:
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
    return text


def parse_group(text: str) -> str:
    group = text.strip()
    if not group or any(char.isspace() for char in group):
        raise ValueError("a group name is non-empty and without whitespace")
    return group


def parse_batch_size(text: str) -> int:
    size = parse_int(text)
    if not 1 <= size <= 100_000:
        raise ValueError("from 1 to 100000 events")
    return size


def parse_fetch_wait(text: str) -> float:
    seconds = parse_positive_float(text)
    if not 0.001 <= seconds <= 5:
        raise ValueError("from 0.001 to 5 seconds")
    return seconds


def parse_session_timeout(text: str) -> float:
    seconds = parse_positive_float(text)
    if not 1 <= seconds <= 300:
        raise ValueError("from 1 to 300 seconds")
    return seconds


def parse_max_channels(text: str) -> int:
    count = parse_int(text)
    if not 1 <= count <= 100_000:
        raise ValueError("from 1 to 100000 channels")
    return count


def parse_days(text: str) -> int:
    days = parse_int(text)
    if not 1 <= days <= 400:
        raise ValueError("from 1 to 400 days")
    return days


def parse_timezone(text: str) -> str:
    return zone_named(text.strip()).key


def parse_max_campaigns(text: str) -> int:
    count = parse_int(text)
    if not 1 <= count <= 10_000:
        raise ValueError("from 1 to 10000 campaigns")
    return count
