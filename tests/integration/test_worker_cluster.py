"""The worker's exactness tests against a real three-master Redis Cluster (issue 16, must-show
3): the same tests as against one redis-server (`test_worker_pipeline`, `test_redelivery`), with
`redis_db` (the Redis every worker, store and reader of a test uses) and `restartable_redis`
(the Redis a test stops and starts) the harness's cluster, and ADPULSE_REDIS_URL's cluster form
``redis+cluster://`` in every process (`keys`, "Redis Cluster").

Redelivery has a test of its own here: a part holds a subsequence of a partition's rows, so a
new log (a broker restarted empty) is recognised in a part only once its rows pass the offset
that part applied last; until then its re-read records are caught by their event ids, counted
as duplicates rather than redelivered. The counters are exact either way. So has a customer
whose conversions route to many parts (`keys`, "Customers across parts"), under SIGKILL."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from adpulse.core.event import Event, EventType
from stream.keys import KeySpace
from stream.store import KpiStore
from tests.batches import apply_a_log_twice, apply_a_new_log, clicks, scratch_store
from tests.conftest import RedisDatabase
from tests.integration.test_worker_pipeline import (
    Workers,
    assigned,
    produce,
    produce_paced,
    store,
    test_duplicates_and_resent_orders_change_nothing,
    test_killed_workers_restarted_give_the_same_counters,
    test_redis_outage_commits_nothing_and_loses_nothing,
    test_scenario_gives_exact_counters_and_kpis,
    test_two_workers_split_the_partitions_and_one_takes_over,
    workers,
)
from tests.kafka_helpers import wait_until
from tests.services import KafkaService, RedisCluster, RedisService
from tests.unit.test_stream_aggregate import make_event

pytestmark = pytest.mark.integration

__all__ = [
    "store",
    "test_duplicates_and_resent_orders_change_nothing",
    "test_killed_workers_restarted_give_the_same_counters",
    "test_redis_outage_commits_nothing_and_loses_nothing",
    "test_scenario_gives_exact_counters_and_kpis",
    "test_two_workers_split_the_partitions_and_one_takes_over",
    "workers",
]


@pytest.fixture
def redis_db(cluster_redis: RedisCluster) -> RedisDatabase:
    """The cluster, flushed before and after the test (`cluster_redis`); one database there."""
    return RedisDatabase(url=cluster_redis.url, number=0)


@pytest.fixture
def restartable_redis(cluster_redis: RedisCluster) -> RedisCluster:
    """The cluster: stopped and started by the outage test, every node at once."""
    return cluster_redis


async def test_redelivered_records_are_skipped_in_every_part_and_a_new_log_is_not(
    cluster_redis: RedisCluster,
) -> None:
    async with scratch_store(cluster_redis.url) as store:
        # The same batch again: every part finds the row it applied last in its slice.
        log = await apply_a_log_twice(store)
        overlap = await store.apply_decoded(clicks(log[5:15], 5))
        assert overlap.applied == 5
        assert overlap.duplicates + overlap.redelivered == 5
        # A new log from offset 0: none of its records is skipped.
        newer = await apply_a_new_log(store)
        reread = await store.apply_decoded(clicks(newer[10:], 10))
        assert reread.applied == 0
        assert reread.duplicates + reread.redelivered == 10

        assert (await store.totals())["email"].clicks == 15 + 5 + 20
        assert (await store.stats())["applied"] == 15 + 5 + 20


def shoppers(now: datetime, customers: int, count: int) -> list[Event]:
    """Conversions of a few customers, each with an order id of its own (no click id), so a
    customer's conversions route to many parts; the first `customers` are each customer's
    first; some orders restated later (without their customer), some re-sent."""
    run = uuid.uuid4().hex[:8]
    rng = random.Random(run)
    events: list[Event] = []
    channels = ("search", "social", "email", "video")
    for number in range(count):
        at = now - timedelta(minutes=count - number)
        customer = number if number < customers else rng.randrange(customers)
        events.append(
            make_event(
                f"{run}-{number}", EventType.CONVERSION, at, order_id=f"o{run}-{number}",
                channel=rng.choice(channels), customer_id=f"c{run}-{customer}",
                value_micros=rng.randrange(1, 500) * 10_000,
            )
        )  # fmt: skip
        if number < customers:
            continue  # the first conversions alone first: `customers` events
        if number % 5 == 4:
            restated = events[rng.randrange(len(events))]
            events.append(
                make_event(
                    f"{run}-r{number}", EventType.CONVERSION, restated.ts,
                    order_id=restated.order_id, channel=restated.channel,
                    status=rng.choice(("refunded", "pending", "declined")),
                    value_micros=restated.value_micros,
                )
            )  # fmt: skip
        if number % 7 == 6:
            events.append(events[rng.randrange(len(events))])
    return events


async def test_killed_workers_keep_customers_exact_across_parts(
    kafka: KafkaService, topic: str, store: KpiStore, workers: Workers, redis_server: RedisService
) -> None:
    """Workers SIGKILLed at random points (between a batch's two calls among them) and restarted
    give the customer figures one instance gives for the same events. Each customer's first
    conversion is applied before the others are sent: the worker reads Kafka partitions side by
    side, so which of a customer's conversions is first would otherwise depend on the read."""
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    events = shoppers(now, 12, 240)
    single = KpiStore.from_url(
        redis_server.url_for(0), keys=KeySpace(f"one{uuid.uuid4().hex[:8]}:")
    )
    try:
        for start in range(0, len(events), 25):
            await single.apply_batch(events[start : start + 25], now=now)
        expected = await single.totals()
        expected_cohort = await single.cohort(int(f"{now:%Y%m}"))
    finally:
        async for key in single.client.scan_iter(match=single.keys.pattern):
            await single.client.delete(key)
        await single.close()
    assert sum(c.new_customers for c in expected.values()) == 12
    worker = workers.start("worker-0")
    await produce(kafka.bootstrap, topic, events[:12])

    async def acquired() -> bool:
        return (await store.stats()).get("applied", 0) == 12

    await wait_until(acquired, timeout=30, message="the first conversions applied")
    streaming = asyncio.create_task(
        produce_paced(kafka.bootstrap, topic, events[12:], chunks=30, pause=0.2)
    )
    worker = await workers.kill_while_counting(store, worker, pause=0.5)
    await streaming

    async def exact() -> bool:
        return await store.totals() == expected

    try:
        await wait_until(exact, timeout=60, interval=0.2, message="exact customers")
    except TimeoutError:
        assert await store.totals() == expected  # says what differs
        raise
    assert await store.cohort(int(f"{now:%Y%m}")) == expected_cohort
    # A worker stopped while it starts exits by the signal: let the last one join first.
    await wait_until(lambda: bool(assigned(worker)), timeout=30, message="the last one joined")
    assert worker.terminate() == 0
