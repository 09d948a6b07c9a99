"""Issue 12, item 1: orders that change after the fact, through a real tracker, broker, worker
and redis-server, with the worker killed (SIGKILL) in the middle; every figure by hand."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis

from stream.kpi import Counters, counters_by_channel, kpis
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.integration.conftest import API_TOKEN, serve_tracker
from tests.kafka_helpers import TopicReader, wait_until
from tests.processes import Tracker, Worker
from tests.services import KafkaService

pytestmark = pytest.mark.integration

DOLLAR = 1_000_000
STATUS_MAP = "1=approved,2=pending,3=declined,5=pending"
HASH_KEY = "9c1f0e7a5b3d2c4e6f8a0b1c2d3e4f5a"


@pytest.fixture
def status_tracker(kafka: KafkaService, topic: str, tmp_path: Path) -> Iterator[Tracker]:
    """A tracker that maps an affiliate network's numeric status codes."""
    yield from serve_tracker(
        kafka, topic, tmp_path, env={"ADPULSE_STATUS_MAP": STATUS_MAP, "ADPULSE_HASH_KEY": HASH_KEY}
    )


def conversion(
    event_id: str, order: str, status: object, value: str | None, **more: str
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "conversion",
        "event_id": event_id,
        "order_id": order,
        "channel": "paid_search",
        **more,
    }
    if status is not None:
        body["status"] = status
    if value is not None:
        body["value"] = value
    return body


async def post(http: aiohttp.ClientSession, tracker: Tracker, path: str, body: object) -> None:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with http.post(f"{tracker.url}{path}", json=body, headers=headers) as response:
        assert response.status == 202, await response.text()


async def test_orders_restated_count_in_their_own_days_through_a_worker_kill(
    kafka: KafkaService,
    topic: str,
    status_tracker: Tracker,
    redis_db: RedisDatabase,
    tmp_path: Path,
) -> None:
    today = datetime.now(UTC).date()
    day1, day2 = today - timedelta(days=2), today - timedelta(days=1)

    def at(day: date) -> str:
        return datetime.combine(day, time(12), tzinfo=UTC).isoformat()

    def spend(day: date) -> dict[str, str]:
        start = datetime.combine(day, time(9), tzinfo=UTC)
        return {
            "event_id": f"spend-{day}",
            "channel": "paid_search",
            "cost": "40",
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
        }

    first_reports = [
        # day 1: A pending (code 2) $50, B declined (code 3) $30, C approved $100
        conversion("a0", "A", 2, "50", ts=at(day1)),
        conversion("b0", "B", "3", "30", ts=at(day1)),
        conversion("c0", "C", None, "100", ts=at(day1)),
        # day 2: D approved $60, E pending $40
        conversion("d0", "D", "approved", "60", ts=at(day2)),
        conversion("e0", "E", "Pending", "40", ts=at(day2)),
    ]
    restatements = [
        conversion("a1", "A", 1, None),  # approved, at its value
        conversion("c1", "C", "refunded", None),  # a full refund
        conversion("d1", "D", "approved", "45"),  # a partial refund: $15 back
        conversion("e1", "E", "approved", "45"),  # restated once ...
    ]
    later = [
        conversion("e2", "E", "approved", "35"),  # ... and twice
        conversion("d2", "D", "approved", "45"),  # d1 re-sent under a new id: a duplicate
        conversion("d1", "D", "approved", "45"),  # d1 itself again: a duplicate too
    ]

    store = KpiStore.from_url(redis_db.url)
    group = f"adpulse-worker-t{uuid.uuid4().hex[:8]}"
    started: list[Worker] = []

    def start_worker(name: str) -> Worker:
        worker = Worker(
            kafka=kafka.bootstrap,
            topic=topic,
            redis_url=redis_db.url,
            log=tmp_path / f"{name}.log",
            group=group,
        )
        started.append(worker)
        return worker

    async def applied_at_least(count: int) -> bool:
        return (await store.stats()).get("applied", 0) >= count

    try:
        worker = start_worker("worker-0")
        async with aiohttp.ClientSession() as http:
            await post(http, status_tracker, "/v1/events", first_reports)
            for day in (day1, day2):
                await post(http, status_tracker, "/v1/spend", spend(day))
            await wait_until(lambda: applied_at_least(5), timeout=30, message="first reports")
            await post(http, status_tracker, "/v1/events", restatements)
            # Killed as soon as the restatements are in Redis: most likely before the worker
            # committed their offsets, so its successor reads them again.
            await wait_until(lambda: applied_at_least(9), timeout=30, message="restatements")
            worker.kill()
            worker = start_worker("worker-1")
            await post(http, status_tracker, "/v1/events", later)

        async def day_counters(day: date) -> Counters:
            number = int(day.strftime("%Y%m%d"))
            fields = await store.client.hgetall(store.keys.day(number))
            found = counters_by_channel({str(k): int(v) for k, v in fields.items()})
            return found.get("paid_search", Counters())

        async def settled() -> bool:
            stats = await store.stats()
            return (
                stats.get("restated", 0) >= 5
                and stats.get("duplicates", 0) >= 2
                and (await day_counters(day2)).spend_micros > 0
            )

        await wait_until(settled, timeout=60, message="every restatement and spend counted")
        assert worker.terminate() == 0
        stats = await store.stats()
        assert stats["restated"] == 5

        first, second = await day_counters(day1), await day_counters(day2)
        # Day 1: gross A, B, C = 3 orders, $180; net only A (approved) $50; B declined $30; C
        # refunded $100. Spend $40: CPA 40 / 1, ROAS 50 / 40; gross ROAS 180 / 40.
        assert first == Counters(
            conversions=1,
            revenue_micros=50 * DOLLAR,
            spend_micros=40 * DOLLAR,
            gross_conversions=3,
            gross_revenue_micros=180 * DOLLAR,
            declined=1,
            declined_micros=30 * DOLLAR,
            refunded=1,
            refunded_micros=100 * DOLLAR,
        )
        figures = kpis(first)
        assert (figures.cpa, figures.roas) == (Decimal(40), Decimal("1.25"))
        assert figures.gross_roas == Decimal("4.5")
        assert figures.gross_cpa is not None
        assert figures.gross_cpa.quantize(Decimal("0.000001")) == Decimal("13.333333")
        # Day 2: gross D and E, $60 + $40; net D at $45 (partial refund), E at $35 (restated
        # twice), nothing pending any more. CPA 40 / 2, ROAS 80 / 40.
        assert second == Counters(
            conversions=2,
            revenue_micros=80 * DOLLAR,
            spend_micros=40 * DOLLAR,
            gross_conversions=2,
            gross_revenue_micros=100 * DOLLAR,
        )
        figures = kpis(second)
        assert (figures.cpa, figures.roas) == (Decimal(20), Decimal(2))
        # Today: the moments of change, five restatements; net revenue moved by
        # A 0, C -100, D -15, E +5 then -10.
        restated_today = await day_counters(today)
        assert restated_today == Counters(restatements=5, net_revenue_change_micros=-120 * DOLLAR)
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.terminate()
        await store.close()


async def test_customers_across_channels_by_hand_and_never_in_clear(
    kafka: KafkaService,
    topic: str,
    status_tracker: Tracker,
    tracker: Tracker,
    redis_db: RedisDatabase,
    tmp_path: Path,
) -> None:
    """Issue 12, item 2: Ann is acquired by paid_search and buys again through email (then
    half of that comes back), Bob is acquired by email."""
    ann, bob = "Ann.Lee@Example.com", "bob-crm-4711"
    now = datetime.now(UTC)
    spend = [
        {"event_id": f"spend-{channel}", "channel": channel, "cost": cost,
         "start": (now - timedelta(minutes=30)).isoformat(),
         "end": (now - timedelta(minutes=20)).isoformat()}
        for channel, cost in (("paid_search", "50"), ("email", "20"))
    ]  # fmt: skip
    events = [
        conversion("p1", "P1", None, "100", customer_id=ann),
        conversion("p2", "P2", None, "40", channel="email", customer_id=" ann.lee@example.com "),
        conversion("b1", "B1", None, "30", channel="email", customer_id=bob),
    ]
    refund = conversion("p2r", "P2", "approved", "25", channel="email")
    store = KpiStore.from_url(redis_db.url)
    worker = Worker(
        kafka=kafka.bootstrap,
        topic=topic,
        redis_url=redis_db.url,
        log=tmp_path / "worker.log",
        group=f"adpulse-worker-t{uuid.uuid4().hex[:8]}",
    )
    try:
        async with aiohttp.ClientSession() as http:
            # A tracker without a key refuses the field, naming the setting and the remedy.
            async with http.post(f"{tracker.url}/v1/events", json=events[0]) as response:
                assert response.status == 400
                error = await response.text()
            assert "customer_id" in error
            assert "ADPULSE_HASH_KEY" in error
            assert "secrets.token_hex(32)" in error
            # Ann's first order is counted before she buys again (different orders may be in
            # different partitions, which the worker reads in no set order).
            await post(http, status_tracker, "/v1/events", events[:1])

            async def acquired() -> bool:
                return (await store.stats()).get("applied", 0) >= 1

            await wait_until(acquired, timeout=30, message="Ann's first order")
            await post(http, status_tracker, "/v1/events", events[1:])
            for body in spend:
                await post(http, status_tracker, "/v1/spend", body)
            await post(http, status_tracker, "/v1/events", [refund])

        async def settled() -> bool:
            stats = await store.stats()
            totals = await store.totals()
            return (
                stats.get("restated", 0) == 1 and totals.get("email", Counters()).spend_micros > 0
            )

        await wait_until(settled, timeout=60, message="every event counted")
        assert worker.terminate() == 0
        totals = await store.totals()
        search, email = totals["paid_search"], totals["email"]
        assert (search.new_customers, search.repeat_sales) == (1, 0)
        assert (email.new_customers, email.repeat_sales) == (1, 1)
        assert email.repeat_revenue_micros == 40 * DOLLAR  # as first reported
        assert email.revenue_micros == (25 + 30) * DOLLAR  # net, after the partial refund
        assert kpis(search).cac == Decimal(50)
        assert kpis(email).cac == Decimal(20)
        month = int(now.strftime("%Y%m"))
        cohort = await store.cohort(month)
        # Ann's LTV belongs to paid_search: $100 + the $25 left of her email order.
        assert cohort["paid_search"].customers == 1
        assert cohort["paid_search"].revenue_micros == dict.fromkeys((30, 90, 365), 125 * DOLLAR)
        assert cohort["paid_search"].ltv(30) == Decimal(125)
        assert cohort["email"].customers == 1
        assert cohort["email"].ltv(365) == Decimal(30)

        # No clear-text customer id anywhere: every record of the topic, every Redis key.
        clear = [ann.lower().encode(), bob.lower().encode(), b"ann.lee"]
        async with TopicReader(kafka.bootstrap, topic) as reader:
            records = await reader.wait_for_count(6, timeout=30)
        assert len(records) == 6
        assert all(part not in record.value.lower() for record in records for part in clear)
        hashed = {r.json().get("customer_id") for r in records} - {None}
        assert len(hashed) == 2  # Ann twice (case and spaces aside), Bob once
        raw = redis.from_url(redis_db.url)  # bytes as stored, nothing decoded
        try:
            found = 0
            async for key in raw.scan_iter(count=1000):
                found += 1
                kind = await raw.type(key)
                # Each value as stored (a DUMP may compress it, hiding a clear id).
                if kind == b"hash":
                    stored = [part for item in (await raw.hgetall(key)).items() for part in item]
                elif kind == b"set":
                    stored = list(await raw.smembers(key))
                elif kind == b"string":
                    stored = [await raw.get(key) or b""]
                else:
                    raise AssertionError(f"a {kind!r} key the test cannot read: {key!r}")
                for text in [key, *stored]:
                    assert all(part not in text.lower() for part in clear), (key, text)
        finally:
            await raw.aclose()
        assert found > 10
    finally:
        if worker.process.poll() is None:
            worker.terminate()
        await store.close()
