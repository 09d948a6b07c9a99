"""The exporter against a real redis-server: values, an outage, the channel cap."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adpulse.core.event import Event, EventRules, parse_event
from stream.exporter import CURRENCY_INFO
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.kafka_helpers import wait_until_sync
from tests.metrics import scrape, value
from tests.processes import Exporter, exiting_cleanly
from tests.services import RedisService


def events(channel: str, clicks: int, conversions: int, revenue: str, cost: str) -> list[Event]:
    now = datetime.now(UTC)
    rules = EventRules()
    made = [
        parse_event({"type": "click", "channel": channel}, rules=rules, received_at=now)
        for _ in range(clicks)
    ]
    made += [
        parse_event(
            {
                "type": "conversion",
                "channel": channel,
                "value": revenue,
                "order_id": f"{channel}-{n}",
            },
            rules=rules,
            received_at=now,
        )
        for n in range(conversions)
    ]
    made.append(
        parse_event(
            {
                "type": "spend",
                "channel": channel,
                "cost": cost,
                "start": (now - timedelta(minutes=2)).isoformat(),
                "end": (now - timedelta(minutes=1)).isoformat(),
            },
            rules=rules,
            received_at=now,
        )
    )
    return made


async def fill(url: str, batch: list[Event]) -> None:
    store = KpiStore.from_url(url)
    try:
        await store.apply_batch(batch)
    finally:
        await store.close()


@pytest.fixture
def exporter(redis_db: RedisDatabase, tmp_path: Path) -> Iterator[Exporter]:
    process = Exporter(
        redis_url=redis_db.url,
        log=tmp_path / "exporter.log",
        extra=["--max-channels", "5", "--scrape-timeout", "2"],
    )
    yield from exiting_cleanly(process)


async def test_exported_values_are_the_store_s(exporter: Exporter, redis_db: RedisDatabase) -> None:
    await fill(
        redis_db.url,
        events("email", 40, 4, "25.50", "30") + events("paid_search", 100, 5, "80", "250"),
    )
    samples = scrape(exporter.url)
    assert value(samples, "adpulse_events_total", channel="email", type="click") == 40
    assert value(samples, "adpulse_events_total", channel="paid_search", type="conversion") == 5
    assert value(samples, "adpulse_spend_total", channel="paid_search") == 250
    assert value(samples, "adpulse_revenue_total", channel="email") == 102
    assert value(samples, "adpulse_cpa", channel="email", window="5m") == 7.5
    assert value(samples, "adpulse_cpa", channel="paid_search", window="1h") == 50
    assert value(samples, "adpulse_conversion_rate", channel="paid_search", window="24h") == 0.05
    assert value(samples, "adpulse_roas", channel="paid_search", window="5m") == 1.6
    assert value(samples, "adpulse_aov", channel="email", window="1h") == 25.5
    assert value(samples, "adpulse_exporter_redis_up") == 1


async def test_redis_outage_sets_the_error_metric_and_values_come_back(
    exporter: Exporter, redis_db: RedisDatabase, restartable_redis: RedisService
) -> None:
    await fill(redis_db.url, events("email", 10, 1, "10", "5"))
    assert value(scrape(exporter.url), "adpulse_events_total", channel="email", type="click") == 10

    restartable_redis.stop()
    during = scrape(exporter.url)
    assert value(during, "adpulse_exporter_redis_up") == 0
    assert (value(during, "adpulse_exporter_scrape_errors_total") or 0) >= 1
    assert value(during, "adpulse_events_total", channel="email", type="click") is None
    assert exporter.process.poll() is None, "the exporter survives the outage"

    restartable_redis.start()
    wait_until_sync(
        lambda: (
            value(scrape(exporter.url), "adpulse_events_total", channel="email", type="click") == 10
        ),
        timeout=20,
        interval=0.2,
        message="values back after Redis returned",
    )
    assert value(scrape(exporter.url), "adpulse_exporter_redis_up") == 1


async def test_channel_cap_bounds_series_and_keeps_totals(
    exporter: Exporter, redis_db: RedisDatabase
) -> None:
    batch: list[Event] = []
    for number in range(12):
        batch += events(f"channel_{number:02d}", 10 + number, 1, "10", "2")
    await fill(redis_db.url, batch)
    samples = scrape(exporter.url)
    channels = {
        dict(labels)["channel"] for (name, labels) in samples if name == "adpulse_events_total"
    }
    assert len(channels) == 5
    assert "other" in channels
    clicks = sum(
        v
        for (name, labels), v in samples.items()
        if name == "adpulse_events_total" and dict(labels)["type"] == "click"
    )
    assert clicks == sum(10 + number for number in range(12))
    spend = sum(v for (name, _), v in samples.items() if name == "adpulse_spend_total")
    assert spend == 24


async def test_campaign_series_are_opt_in_and_capped(
    redis_db: RedisDatabase, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    rules = EventRules()
    clicks = {"spring": 5, "summer": 4, "autumn": 1, "winter": 1}
    batch = [
        parse_event(
            {"type": "click", "channel": "email", "campaign": campaign},
            rules=rules,
            received_at=now,
        )
        for campaign, count in clicks.items()
        for _ in range(count)
    ]
    batch.append(
        parse_event(
            {"type": "conversion", "channel": "email", "campaign": "autumn", "value": "12.34",
             "order_id": "o-1"},
            rules=rules,
            received_at=now,
        )
    )  # fmt: skip
    await fill(redis_db.url, batch)
    plain = Exporter(redis_url=redis_db.url, log=tmp_path / "plain.log")
    try:
        samples = scrape(plain.url)
    finally:
        assert plain.terminate() == 0, plain.log()
    assert not [name for name, _ in samples if name.startswith("adpulse_campaign_")]
    capped = Exporter(
        redis_url=redis_db.url,
        log=tmp_path / "capped.log",
        extra=["--max-campaign-series", "2"],
        env={"ADPULSE_EXPORTER_CAMPAIGN_SERIES": "on"},
    )
    try:
        samples = scrape(capped.url)
    finally:
        assert capped.terminate() == 0, capped.log()

    def events(campaign: str, kind: str = "click") -> float | None:
        return value(
            samples, "adpulse_campaign_events_total", channel="email", campaign=campaign, type=kind
        )

    assert events("spring") == 5
    assert events("summer") == 4
    # autumn and winter: beyond the cap, summed exactly, and counted.
    assert events("other") == 2
    assert events("other", "conversion") == 1
    assert value(samples, "adpulse_campaign_revenue_total", channel="email", campaign="other") == (
        12.34
    )
    assert events("autumn") is None
    assert events("winter") is None
    assert value(samples, "adpulse_exporter_campaigns_folded") == 2
    # Month-to-date counters: created at the month's first local midnight (UTC here).
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    created = value(samples, "adpulse_campaign_spend_created", channel="email", campaign="spring")
    assert created == month_start.timestamp()


async def test_the_ltv_gauge_reads_the_cohorts_the_worker_wrote(
    exporter: Exporter, redis_db: RedisDatabase
) -> None:
    """Ann is acquired by paid_search, buys again through email, and that order is refunded;
    Bob is acquired by paid_search, Cy by email."""
    now = datetime.now(UTC)
    rules = EventRules(hash_key=b"k" * 32)

    def order(order_id: str, channel: str, value: str, **more: str) -> Event:
        fields = {"type": "conversion", "channel": channel, "order_id": order_id, "value": value}
        return parse_event({**fields, **more}, rules=rules, received_at=now)

    await fill(
        redis_db.url,
        [
            order("a1", "paid_search", "100", customer_id="ann@example.com"),
            order("b1", "paid_search", "50", customer_id="bob-17"),
            order("a2", "email", "40", customer_id="ann@example.com"),
            order("c1", "email", "60", customer_id="cy-3"),
        ],
    )
    await fill(redis_db.url, [order("a2", "email", "40", status="refunded")])
    expected = {
        (channel, f"{days}d"): ltv
        for channel, ltv in (("paid_search", 75.0), ("email", 60.0))
        for days in (30, 90, 365)
    }

    def ltv() -> dict[tuple[str, str], float]:
        return {
            (dict(labels)["channel"], dict(labels)["horizon"]): found
            for (name, labels), found in scrape(exporter.url).items()
            if name == "adpulse_ltv"
        }

    wait_until_sync(lambda: ltv() == expected, timeout=10, message="the LTV per channel")


def test_the_reporting_currency_is_exported_for_the_dashboard(
    redis_db: RedisDatabase, tmp_path: Path
) -> None:
    # The dashboard's money panels name the currency from this series (CURRENCY_INFO).
    process = Exporter(
        redis_url=redis_db.url, log=tmp_path / "exporter.log", env={"ADPULSE_CURRENCY": "eur"}
    )
    try:
        samples = scrape(process.url)
    finally:
        assert process.terminate() == 0, process.log()
    assert value(samples, f"{CURRENCY_INFO}_info", currency="EUR") == 1
    assert [name for name, _ in samples if name == f"{CURRENCY_INFO}_info"] == [
        f"{CURRENCY_INFO}_info"
    ]
