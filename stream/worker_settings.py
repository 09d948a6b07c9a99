"""The worker's one settings object, each setting declared once in its fields."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from adpulse.core.click_ids import ClickKeys
from adpulse.core.options import (
    CLICK_KEY,
    CLICK_KEY_PREVIOUS,
    KAFKA,
    LOG_LEVEL,
    REDIS_URL,
    TIMEZONE,
    TOPIC,
    Secret,
    Setting,
    click_keys,
    declarations,
    declare,
    option,
    parse_int,
    parse_port,
    parse_positive_float,
    resolve_all,
    switch,
)
from adpulse.core.options import add_arguments as add_setting_arguments
from stream.keys import DEFAULT_MAX_CAMPAIGNS, DEFAULT_MAX_CHANNELS, Retention


def parse_group(text: str) -> str:
    group = text.strip()
    if not group or any(char.isspace() for char in group):
        raise ValueError("a group name is non-empty and without whitespace")
    return group


CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")


def parse_client_id(text: str) -> str:
    client_id = text.strip()
    if not CLIENT_ID.fullmatch(client_id):
        raise ValueError("1 to 100 letters, digits, '.', '_' or '-'")
    return client_id


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


def parse_max_campaigns(text: str) -> int:
    count = parse_int(text)
    if not 1 <= count <= 10_000:
        raise ValueError("from 1 to 10000 campaigns")
    return count


def parse_days(text: str) -> int:
    days = parse_int(text)
    if not 1 <= days <= 400:
        raise ValueError("from 1 to 400 days")
    return days


def parse_data_dir(text: str) -> Path | None:
    return Path(text)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    kafka: str = declare(KAFKA)
    redis_url: str = declare(REDIS_URL)
    topic: str = declare(TOPIC)
    group: str = option(
        "--group",
        "ADPULSE_WORKER_GROUP",
        "adpulse-worker",
        parse_group,
        "Kafka consumer group; workers of one group share the partitions",
    )
    client_id: str = option(
        "--client-id",
        "ADPULSE_WORKER_CLIENT_ID",
        "adpulse-worker",
        parse_client_id,
        "Kafka client id of the worker's consumer, listed with its group's members: the dev "
        "stack gives its worker one of its own to find it among them",
    )
    batch_size: int = option(
        "--batch-size",
        "ADPULSE_WORKER_BATCH_SIZE",
        5000,
        parse_batch_size,
        "most events applied to Redis in one call",
    )
    batch_within: float = option(
        "--batch-within",
        "ADPULSE_WORKER_BATCH_WITHIN",
        0.02,
        parse_positive_float,
        "seconds a batch waits to fill once it has its first event; below the rate that fills "
        "a batch, every batch waits this long (bench/README.md, Soak)",
    )
    fetch_wait: float = option(
        "--fetch-wait",
        "ADPULSE_WORKER_FETCH_WAIT",
        0.05,
        parse_fetch_wait,
        "seconds a Kafka fetch waits for new records before it answers empty (fetch.max.wait.ms; "
        "see `stream.framework`); bounds how long a record can wait on brokers that do not "
        "answer early",
    )
    host: str = option(
        "--host", "ADPULSE_WORKER_HOST", "127.0.0.1", str, "address of the worker's own `/metrics`"
    )
    port: int = option(
        "--port", "ADPULSE_WORKER_PORT", 9109, parse_port, "port of the worker's own `/metrics`"
    )
    share_port: bool = switch(
        "--share-port",
        "let another worker of this user listen on the same `/metrics` port (SO_REUSEPORT; "
        "the kernel spreads scrapes between them): the dev stack's broker replacement runs a "
        "second worker for a moment and keeps the port; SIGHUP then stops this worker serving "
        "`/metrics` (the stack sends it to the old worker once the new one serves)",
    )
    data_dir: Path | None = option(
        "--data-dir",
        "ADPULSE_WORKER_DATA_DIR",
        None,
        parse_data_dir,
        "faust's data directory, one per worker",
        shown_default="a temporary directory removed at exit",
    )
    session_timeout: float = option(
        "--session-timeout",
        "ADPULSE_WORKER_SESSION_TIMEOUT",
        3.0,
        parse_session_timeout,
        "Kafka group session timeout in seconds: how soon a dead worker's partitions move (see "
        "`stream.worker.build_app` for why it is short)",
    )
    shutdown_timeout: float = option(
        "--shutdown-timeout",
        "ADPULSE_SHUTDOWN_TIMEOUT",
        10.0,
        parse_positive_float,
        "seconds SIGTERM or a rebalance waits for the batch in hand to be written and committed "
        "(Redis down: it gives up)",
    )
    attribution_days: int = option(
        "--attribution-days",
        "ADPULSE_ATTRIBUTION_DAYS",
        30,
        parse_days,
        "days a click id stays attributable to its channel",
    )
    order_days: int = option(
        "--order-days",
        "ADPULSE_ORDER_DAYS",
        90,
        parse_days,
        "days an order's state is kept after its last conversion, so that a later one with the "
        "same order_id restates it (status, value); later still, it counts as a new order",
    )
    max_channels: int = option(
        "--max-channels",
        "ADPULSE_WORKER_MAX_CHANNELS",
        DEFAULT_MAX_CHANNELS,
        parse_max_channels,
        "channels kept in Redis under their own name, for all workers and trackers together; "
        "events of any further channel count as `unlisted` (see `stream.keys`)",
    )
    timezone: str = declare(TIMEZONE)
    max_campaigns: int = option(
        "--max-campaigns",
        "ADPULSE_WORKER_MAX_CAMPAIGNS",
        DEFAULT_MAX_CAMPAIGNS,
        parse_max_campaigns,
        "campaigns of a channel and month counted under their own name; further ones count "
        "as `other`",
    )
    click_key: Secret | None = declare(CLICK_KEY)
    click_key_previous: Secret | None = declare(CLICK_KEY_PREVIOUS)
    log_level: str = declare(LOG_LEVEL)

    @property
    def click_keys(self) -> ClickKeys | None:
        return click_keys(self.click_key, self.click_key_previous)

    @property
    def retention(self) -> Retention:
        return Retention(
            attribution=timedelta(days=self.attribution_days),
            order=timedelta(days=self.order_days),
        )


SETTINGS: tuple[Setting[Any], ...] = declarations(WorkerSettings)
"""Every setting of `adpulse worker`, in the order of --help and the README."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_setting_arguments(parser, SETTINGS)


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> WorkerSettings:
    """The worker's settings: each flag, else its ADPULSE_* variable, else the default."""
    return WorkerSettings(**resolve_all(args, env, SETTINGS))
