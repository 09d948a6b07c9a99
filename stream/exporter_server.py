"""Serving the exporter: the KPI snapshot from Redis as Prometheus metrics, read on every scrape."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import time

import redis.asyncio as redis
from prometheus_client import CollectorRegistry, start_http_server

from stream.evidence import BASELINE_HOURS, WINDOW_HOURS
from stream.exporter import AdviceCollector, HourBuckets, KpiCollector
from stream.exporter_settings import ExporterSettings
from stream.kpi import Snapshot
from stream.store import KpiStore

log = logging.getLogger("adpulse.exporter")


async def serve(settings: ExporterSettings) -> int:
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

    def read_hours() -> tuple[int, HourBuckets]:
        now_hour = int(time.time()) // 3600
        first = now_hour - WINDOW_HOURS - BASELINE_HOURS
        future = asyncio.run_coroutine_threadsafe(store.hour_buckets(first, now_hour), loop)
        try:
            return now_hour, future.result(settings.scrape_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    registry = CollectorRegistry()
    registry.register(KpiCollector(read_snapshot, max_channels=settings.max_channels))
    registry.register(AdviceCollector(read_hours, max_channels=settings.max_channels))
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
