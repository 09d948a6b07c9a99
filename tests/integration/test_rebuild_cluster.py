"""`adpulse rebuild` into a real three-master Redis Cluster (issue 16, must-show 4 in cluster
mode): a scenario (clicks, conversions by click id and direct, redemptions by registered
coupon, spend, customers whose conversions route to many parts, restatements and duplicates)
goes through a real worker into the cluster; every master is flushed; `adpulse rebuild` gives
the same counters as the readers saw before, exactly."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from adpulse.core.event import EventType
from adpulse.core.phone import STATIC, NumberEntry, NumberKeys
from stream.keys import CLUSTER_PARTS, KeySpace
from stream.number_registry import NumberRegistry
from stream.rebuild import RebuildError, ensure_empty
from stream.registry import number_entry, publish
from stream.store import KpiStore
from tests.integration.test_rebuild import registry_topic, with_duplicates
from tests.integration.test_worker_cluster import shoppers
from tests.integration.test_worker_pipeline import COUPONS, Scenario
from tests.integration.test_worker_pipeline import produce as produce_events
from tests.kafka_helpers import wait_until
from tests.rebuilds import (
    count_with_a_worker,
    import_coupons,
    rebuild,
    worker_counting_again,
)
from tests.services import KafkaService, RedisCluster
from tests.unit.test_stream_aggregate import make_event

pytestmark = pytest.mark.integration

__all__ = ["registry_topic"]


async def readings(url: str, months: set[int], scenario: Scenario) -> tuple[str, dict[str, Any]]:
    """The live key space's prefix and the counters as the readers see them."""
    store = KpiStore.from_url(url)
    try:
        keys = await store.follow_active_prefix()
        stats = await store.stats()
        # Records a live worker read twice (a rebalance) are redelivered; a rebuild reads each
        # once.
        stats.pop("redelivered", None)
        return keys.prefix, {
            "snapshot": await store.snapshot(scenario.now),
            "totals": await store.totals(),
            "stats": stats,
            "coupons": await store.list_coupons(),
            "cohorts": {month: await store.cohort(month) for month in months},
            "campaigns": {month: await store.month_campaigns(month) for month in months},
        }
    finally:
        await store.close()


async def test_flushed_cluster_is_rebuilt_exactly(
    kafka: KafkaService,
    topic: str,
    registry_topic: str,
    cluster_redis: RedisCluster,
    tmp_path: Path,
) -> None:
    url = cluster_redis.url
    kafka_flags = ["--kafka", kafka.bootstrap, "--registry-topic", registry_topic]
    import_coupons(COUPONS, url, kafka_flags, tmp_path)

    scenario = Scenario.build()
    customers = shoppers(scenario.now, 6, 40)
    events = [*with_duplicates(scenario), *customers]
    months = {int(f"{event.ts:%Y%m}") for event in events}
    group = f"adpulse-worker-t{uuid.uuid4().hex[:8]}"
    # Each customer's first conversion alone first: which of a customer's conversions in
    # different Kafka partitions is its first follows the order they are applied in, and the
    # rebuild replays them in the order they were produced (`topic_reads.read`).
    firsts = len(events) - len(customers) + 6
    batches = [events[:firsts], events[firsts:]]
    await count_with_a_worker(kafka, topic, url, group, tmp_path / "worker.log", batches)

    prefix, before = await readings(url, months, scenario)
    assert prefix == KeySpace().prefix
    assert before["coupons"] == COUPONS
    assert before["stats"]["duplicates"] > 0, before["stats"]
    assert any(before["cohorts"].values()), "customers counted"
    assert sum(counters.redemptions for counters in before["totals"].values()) > 0

    # A tracked number on the registry topic: the rebuild registers it again in the cluster's
    # number registry (its one slot, `NumberKeys.in_cluster`).
    await publish(kafka.bootstrap, registry_topic,
                  [number_entry(NumberEntry("+14155550120", STATIC, "email"))])  # fmt: skip

    cluster_redis.flush()  # FLUSHALL on every master
    _, emptied = await readings(url, months, scenario)
    assert not emptied["totals"]
    assert not emptied["coupons"]

    rebuilt = rebuild(url, topic, group, kafka_flags, records=len(events))
    assert "1 number" in rebuilt.stdout, rebuilt.stdout
    assert "skipped" not in rebuilt.stdout, rebuilt.stdout
    numbers_after = KpiStore.from_url(url)
    try:
        registry = NumberRegistry(numbers_after.client, NumberKeys.in_cluster())
        assert await registry.entries() == [NumberEntry("+14155550120", STATIC, "email")]
    finally:
        await numbers_after.close()

    prefix, after = await readings(url, months, scenario)
    assert prefix.startswith("adpulse-r")
    for name in sorted(before):
        assert after[name] == before[name], name

    # The worker started again counts into the rebuilt key space, from its committed offsets.
    click = make_event(f"after-{uuid.uuid4().hex[:8]}", EventType.CLICK, scenario.now,
                       channel="email")  # fmt: skip
    after_log = tmp_path / "worker-after.log"
    async with worker_counting_again(kafka, topic, url, group, after_log, prefix):
        await produce_events(kafka.bootstrap, topic, [click])

        def clicks(seen: dict[str, Any]) -> int:
            return sum(counters.clicks for counters in seen["totals"].values())

        async def counted() -> bool:
            _, now = await readings(url, months, scenario)
            return clicks(now) == clicks(before) + 1

        await wait_until(counted, timeout=30, interval=0.2, message="the click counted")


async def test_a_fresh_prefix_with_keys_on_any_master_is_refused(
    cluster_redis: RedisCluster,
) -> None:
    keys = KeySpace(f"adpulse-r{uuid.uuid4().hex[:8]}:")
    store = KpiStore.from_url(cluster_redis.url, keys=keys)
    try:
        await ensure_empty(store, keys)
        # One key in one part: the SCAN of its master finds it, whichever master that is (the
        # first, middle and last parts' slots are on the three masters).
        for number in (0, CLUSTER_PARTS // 2, CLUSTER_PARTS - 1):
            key = keys.part(number).prefix + "t"
            await store.client.set(key, "1")
            with pytest.raises(RebuildError, match="not empty"):
                await ensure_empty(store, keys)
            await store.client.delete(key)
    finally:
        await store.close()
