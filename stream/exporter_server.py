"""Serving the exporter: the KPI snapshot from Redis as Prometheus metrics, read on every scrape,
and the read API (`stream.read_api`), on one port."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import time
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import CollectorRegistry, Info

from stream.advice_settings import SpikeSpan, advice_options
from stream.campaign_series import CampaignCollector, MonthCampaigns
from stream.customers import CohortValue
from stream.days import LocalDays, month_number
from stream.errors import StoreUnavailable
from stream.evidence import HourReading, read_reading
from stream.exporter import (
    CURRENCY_INFO,
    AdviceCollector,
    KpiCollector,
    LtvCollector,
    cohort_months,
)
from stream.exporter_settings import ExporterSettings
from stream.keys import Retention
from stream.kpi import Snapshot
from stream.read_api import build_app
from stream.store import KpiStore

log = logging.getLogger("adpulse.exporter")


async def serve(settings: ExporterSettings) -> int:
    store = KpiStore.from_url(settings.redis_url, timeout=settings.scrape_timeout)
    loop = asyncio.get_running_loop()
    options = advice_options(settings)
    try:
        spike = SpikeSpan(settings.spike_window, settings.spike_baseline)
    except ValueError as error:
        log.error("%s", error)
        await store.close()
        return 2
    spike_minutes = 0 if spike.hourly else spike.window + spike.baseline

    async def live_snapshot() -> Snapshot:
        # Every scrape reads the live key space first: after `adpulse rebuild` switches it,
        # the metrics (and the read API, on the same store) follow within a scrape.
        await store.follow_active_prefix()
        return await store.snapshot()

    def read_snapshot() -> Snapshot:
        # collect() runs in the thread /metrics renders in; the store lives on this loop.
        future = asyncio.run_coroutine_threadsafe(live_snapshot(), loop)
        try:
            return future.result(settings.scrape_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def read_hours() -> HourReading:
        reading = read_reading(store, time.time(), options.lookback_hours, spike_minutes)
        future = asyncio.run_coroutine_threadsafe(reading, loop)
        try:
            return future.result(settings.scrape_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    zone = ZoneInfo(settings.timezone)
    days = LocalDays(zone, Retention().day_seconds)

    def read_month() -> MonthCampaigns:
        today = days.today()
        future = asyncio.run_coroutine_threadsafe(store.month_campaigns(month_number(today)), loop)
        try:
            campaigns = future.result(settings.scrape_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise
        return MonthCampaigns(days.start(today.replace(day=1)), campaigns)

    async def cohorts() -> list[dict[str, CohortValue]]:
        months = cohort_months(days.today())
        return list(await asyncio.gather(*(store.cohort(month) for month in months)))

    def read_cohorts() -> list[dict[str, CohortValue]]:
        future = asyncio.run_coroutine_threadsafe(cohorts(), loop)
        try:
            return future.result(settings.scrape_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    registry = CollectorRegistry()
    Info(CURRENCY_INFO, "The reporting currency every money metric is in", registry=registry).info(
        {"currency": settings.currency}
    )
    registry.register(KpiCollector(read_snapshot, max_channels=settings.max_channels))
    registry.register(
        AdviceCollector(
            read_hours, max_channels=settings.max_channels, options=options, spike=spike
        )
    )
    registry.register(LtvCollector(read_cohorts, max_channels=settings.max_channels))
    if settings.campaign_series:
        registry.register(CampaignCollector(read_month, max_series=settings.max_campaign_series))
        log.info(
            "exporting campaign series: this month's counters of at most %d campaigns",
            settings.max_campaign_series,
        )
    read_token = None if settings.read_token is None else settings.read_token.reveal()
    app = build_app(
        store,
        registry,
        days=days,
        currency=settings.currency,
        read_token=read_token,
        advice=options,
    )
    with contextlib.suppress(StoreUnavailable):  # Redis down at start: the first scrape retries
        await store.follow_active_prefix()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except OSError as error:
        log.error(
            "cannot listen on %s:%d (%s); choose another with --port or ADPULSE_EXPORTER_PORT",
            settings.host,
            settings.port,
            error.strerror or error,
        )
        await runner.cleanup()
        await store.close()
        return 2
    log.info(
        "exporter listening on http://%s:%d/metrics, /v1/report and /v1/advice (time zone %s), "
        "reading %s",
        settings.host,
        settings.port,
        settings.timezone,
        settings.redis_url,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    await store.close()
    log.info("exporter stopped")
    return 0
