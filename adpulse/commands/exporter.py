"""`adpulse exporter`: the KPI snapshot from Redis as Prometheus metrics, read on every scrape."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adpulse.options import (
    parse_int,
    parse_log_level,
    parse_port,
    parse_positive_float,
    resolve,
)

log = logging.getLogger("adpulse.exporter")

DEFAULT_PORT = 9108


@dataclass(frozen=True, slots=True)
class ExporterSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    redis_url: str = "redis://localhost:6379/0"
    max_channels: int = 50
    scrape_timeout: float = 5.0
    log_level: str = "INFO"


def register(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "exporter",
        help="serve the per-channel KPIs from Redis as Prometheus metrics",
        description=(
            "Serve /metrics: adpulse_events_total, adpulse_spend_total, adpulse_revenue_total "
            "(counters per channel) and adpulse_cpa, adpulse_cpc, adpulse_conversion_rate, "
            "adpulse_roas, adpulse_romi, adpulse_aov (gauges per channel and window 5m/1h/24h), "
            "read from Redis on every scrape. When Redis does not answer, a scrape still "
            "answers, with adpulse_exporter_redis_up 0."
        ),
    )
    add = parser.add_argument
    add("--host", help="address to listen on (ADPULSE_EXPORTER_HOST, default 127.0.0.1)")
    add("--port", help=f"port to listen on (ADPULSE_EXPORTER_PORT, default {DEFAULT_PORT})")
    add("--redis-url", help="the KPI store (ADPULSE_REDIS_URL, default redis://localhost:6379/0)")
    add(
        "--max-channels",
        help='channels with a series of their own; the rest are summed into channel="other" '
        "(ADPULSE_EXPORTER_MAX_CHANNELS, default 50)",
    )
    add(
        "--scrape-timeout",
        help="seconds a scrape may wait for Redis (ADPULSE_EXPORTER_SCRAPE_TIMEOUT, default 5)",
    )
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR (ADPULSE_LOG_LEVEL, default INFO)")
    parser.set_defaults(run=run)


def parse_max_channels(text: str) -> int:
    value = parse_int(text)
    if not 1 <= value <= 10_000:
        raise ValueError("from 1 to 10000 channels")
    return value


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> ExporterSettings:

    defaults = ExporterSettings()
    return ExporterSettings(
        host=resolve(args, env, "host", "ADPULSE_EXPORTER_HOST", defaults.host, str),
        port=resolve(args, env, "port", "ADPULSE_EXPORTER_PORT", defaults.port, parse_port),
        redis_url=resolve(args, env, "redis_url", "ADPULSE_REDIS_URL", defaults.redis_url, str),
        max_channels=resolve(
            args,
            env,
            "max_channels",
            "ADPULSE_EXPORTER_MAX_CHANNELS",
            defaults.max_channels,
            parse_max_channels,
        ),
        scrape_timeout=resolve(
            args,
            env,
            "scrape_timeout",
            "ADPULSE_EXPORTER_SCRAPE_TIMEOUT",
            defaults.scrape_timeout,
            parse_positive_float,
        ),
        log_level=resolve(args, env, "log_level", "ADPULSE_LOG_LEVEL", "INFO", parse_log_level),
    )


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import uvloop

    from adpulse import logs

    settings = settings_from(args, env)
    logs.configure(settings.log_level, "exporter")
    return uvloop.run(serve(settings))


async def serve(settings: ExporterSettings) -> int:
    import redis.asyncio as redis
    from prometheus_client import CollectorRegistry, start_http_server

    from stream.exporter import KpiCollector
    from stream.kpi import Snapshot
    from stream.store import KpiStore

    client = redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=settings.scrape_timeout,
        socket_connect_timeout=settings.scrape_timeout,
    )
    store = KpiStore(client)
    loop = asyncio.get_running_loop()

    def read_snapshot() -> Snapshot:
        # collect() runs in prometheus-client's HTTP thread; the store lives on this loop.
        future = asyncio.run_coroutine_threadsafe(store.snapshot(), loop)
        try:
            return future.result(settings.scrape_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    registry = CollectorRegistry()
    registry.register(KpiCollector(read_snapshot, max_channels=settings.max_channels))
    try:
        server, thread = start_http_server(settings.port, settings.host, registry=registry)
    except OSError as error:
        log.error(
            "cannot listen on %s:%d (%s); choose another with --port or ADPULSE_EXPORTER_PORT",
            settings.host,
            settings.port,
            error.strerror or error,
        )
        await store.close()
        return 2
    log.info(
        "exporter listening on http://%s:%d/metrics, reading %s",
        settings.host,
        settings.port,
        settings.redis_url,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await asyncio.to_thread(server.shutdown)
    thread.join(5)
    await store.close()
    log.info("exporter stopped")
    return 0
