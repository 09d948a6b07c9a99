"""Imports count where events would: history rows within the worker's channel and campaign
caps, cost rows as spend records that outlive a year, both idempotent (a real redis-server)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from adpulse.core.event import Event, EventType
from stream.imports import CostRow, HistoryRow, cost_id, write_costs, write_history
from stream.keys import DAY_RETENTION
from stream.report import Period, ReportRequest
from stream.store import KpiStore
from tests.conftest import RedisDatabase

pytestmark = pytest.mark.integration

M = 1_000_000
DAY = date(2025, 3, 14)  # a year back: what a history or cost import is for


def row(campaign: str, clicks: int, spend: int, channel: str = "display") -> HistoryRow:
    return HistoryRow(DAY, channel, campaign, clicks, 0, 1, 10 * M, spend * M)


async def campaign_rows(store: KpiStore) -> dict[tuple[str, str | None], tuple[int, int]]:
    request = ReportRequest(Period(DAY.replace(day=1), date(2025, 3, 31)), None, "campaign", {})
    sums = (await store.report_sums(request))["current"]
    return {key: (counters.clicks, counters.spend_micros // M) for key, counters in sums.items()}


async def test_history_rows_beyond_the_campaign_cap_count_under_other_idempotently(
    redis_db: RedisDatabase,
) -> None:
    store = KpiStore.from_url(redis_db.url, max_campaigns=2)
    rows = [row("a", 1, 10), row("b", 2, 20), row("c", 4, 40), row("d", 8, 80)]
    try:
        result = await write_history(store, rows)
        assert (result.rows, result.other_campaigns, result.unlisted) == (4, 2, 0)
        expected = {
            ("display", "a"): (1, 10),
            ("display", "b"): (2, 20),
            ("display", "other"): (12, 120),
        }
        assert await campaign_rows(store) == expected
        month_set = store.keys.campaign_set(202503, "display")
        assert await store.client.smembers(month_set) == {"a", "b"}

        # Re-importing changes nothing; a restated row moves only its own difference.
        await write_history(store, rows)
        assert await campaign_rows(store) == expected
        await write_history(store, [row("c", 5, 41)])
        assert await campaign_rows(store) == {**expected, ("display", "other"): (13, 121)}

        # An event of a new campaign that month meets the same full set.
        moment = datetime.combine(DAY, time(12), tzinfo=UTC)
        click = Event(
            event_id=uuid.uuid4().hex, type=EventType.CLICK, ts=moment, received_at=moment,
            channel="display", campaign="e",
        )  # fmt: skip
        applied = await store.apply_batch([click])
        assert applied.other_campaigns == 1
        assert (await campaign_rows(store))["display", "other"] == (14, 121)
    finally:
        await store.close()


async def test_history_rows_beyond_the_channel_cap_count_under_unlisted(
    redis_db: RedisDatabase,
) -> None:
    store = KpiStore.from_url(redis_db.url, max_channels=1)
    try:
        result = await write_history(store, [row("a", 1, 10, "email"), row("b", 2, 20, "search")])
        assert (result.rows, result.unlisted) == (2, 1)
        assert await campaign_rows(store) == {("email", "a"): (1, 10), ("unlisted", "b"): (2, 20)}
        assert await store.client.smembers(store.keys.channels) == {"email"}
        await write_history(store, [row("b", 3, 20, "search")])
        assert (await campaign_rows(store))["unlisted", "b"] == (3, 20)
    finally:
        await store.close()


async def test_a_record_written_before_the_caps_is_restated_where_it_counted(
    redis_db: RedisDatabase,
) -> None:
    store = KpiStore.from_url(redis_db.url, max_campaigns=1)
    try:
        # What an import wrote before rows were capped: figures only, under their own names.
        async with store.client.pipeline(transaction=True) as pipe:
            pipe.hset(store.keys.history(20250314), "display\tlegacy", f"5,0,0,0,{50 * M}")
            for key, name in (
                (store.keys.day_campaigns(20250314), "display\tlegacy"),
                (store.keys.month_campaigns(202503), "display\tlegacy"),
                (store.keys.day(20250314), "display"),
                (store.keys.month(202503), "display"),
            ):
                pipe.hset(key, mapping={f"{name}:k": 5, f"{name}:s": 50 * M})
            # The month's set is full since: a new row of "legacy" would count under "other".
            pipe.sadd(store.keys.campaign_set(202503, "display"), "since")
            await pipe.execute()
        await write_history(store, [row("legacy", 7, 70)])
        assert await campaign_rows(store) == {("display", "legacy"): (7, 70)}
    finally:
        await store.close()


async def test_cost_records_outlive_a_year_and_keep_to_the_caps(redis_db: RedisDatabase) -> None:
    store = KpiStore.from_url(redis_db.url, max_campaigns=1, zone=ZoneInfo("UTC"))
    rows = [CostRow(DAY, "display", "a", 30 * M), CostRow(DAY, "display", "b", 12 * M)]
    try:
        await write_costs(store, rows, "csv")
        expected = {("display", "a"): (0, 30), ("display", "other"): (0, 12)}
        assert await campaign_rows(store) == expected
        ttl = await store.client.ttl(store.keys.spend(cost_id("csv", rows[0])))
        assert ttl > DAY_RETENTION.total_seconds() - 60
        await write_costs(store, rows, "csv")
        assert await campaign_rows(store) == expected
    finally:
        await store.close()
