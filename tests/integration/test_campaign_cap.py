"""The campaign cap through the real apply-batch script: beyond `max_campaigns` a channel's
campaigns in a month are summed into "other", exactly, and memory stays where it is."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from adpulse.core.event import Event, EventType
from stream.days import LocalDays
from stream.keys import KeySpace
from stream.store import KpiStore
from tests.conftest import RedisDatabase

pytestmark = pytest.mark.integration

CAP = 5


def clicks(campaigns: range, per_campaign: int, ts: datetime) -> list[Event]:
    return [
        Event(
            event_id=uuid.uuid4().hex,
            type=EventType.CLICK,
            ts=ts,
            received_at=ts,
            channel="display",
            campaign=f"campaign-{number}",
        )
        for number in campaigns
        for _ in range(per_campaign)
    ]


async def memory(store: KpiStore, keys: list[str]) -> int:
    total = 0
    for key in keys:
        total += await store.client.memory_usage(key, samples=0) or 0
    return total


async def test_campaigns_beyond_the_cap_are_summed_into_other_with_bounded_memory(
    redis_db: RedisDatabase,
) -> None:
    store = KpiStore.from_url(redis_db.url, keys=KeySpace(), max_campaigns=CAP)
    now = datetime.now(UTC)
    ts = now - timedelta(minutes=5)
    minute = int(ts.timestamp()) // 60
    day, _, month, _ = LocalDays().of_minute(minute)
    day_key = store.keys.day_campaigns(day)
    keys = [day_key, store.keys.month_campaigns(month), store.keys.campaign_set(month, "display")]
    try:
        first = await store.apply_batch(clicks(range(40), 3, ts), now=now)
        assert first.other_campaigns == 35 * 3
        fields = await store.client.hgetall(day_key)
        named = {name: int(value) for name, value in fields.items() if "\tother:" not in name}
        assert len(named) == CAP
        assert all(value == 3 for value in named.values())
        assert int(fields["display\tother:k"]) == 35 * 3
        assert int((await store.client.hgetall(store.keys.day(day)))["display:k"]) == 120
        assert await store.client.scard(keys[2]) == CAP
        after_40 = await memory(store, keys)

        # Ten times the campaigns: the same number of fields, the same memory.
        second = await store.apply_batch(clicks(range(40, 400), 2, ts), now=now)
        assert second.other_campaigns == 360 * 2
        fields = await store.client.hgetall(day_key)
        assert len(fields) == CAP + 1
        assert int(fields["display\tother:k"]) == 35 * 3 + 360 * 2
        assert await memory(store, keys) == after_40
        assert (await store.stats())["other_campaigns"] == 35 * 3 + 360 * 2
    finally:
        await store.close()
