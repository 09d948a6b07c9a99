"""`KpiStore` in cluster mode against a real three-master Redis Cluster: the same figures as one
instance, every script call in one slot, the parts spread over the masters, and the readers
that do not gather yet refusing (`keys`, "Redis Cluster")."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster as RedisClusterClient
from redis.crc import key_slot

from adpulse.core.event import Event, EventType
from stream.aggregate import BatchResult
from stream.batch import decode_events
from stream.errors import ClusterUnsupported
from stream.imports import write_history
from stream.keys import CLUSTER_PARTS, KeySpace
from stream.registry import NumberBook
from stream.report import parse_request
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.integration.test_store_redis import scenario
from tests.services import RedisCluster
from tests.unit.test_stream_aggregate import COUPONS, NOW, make_event

pytestmark = pytest.mark.integration


@pytest.fixture
async def cluster_store(cluster_redis: RedisCluster) -> AsyncIterator[KpiStore]:
    store = KpiStore.from_url(cluster_redis.url)
    await store.import_coupons(COUPONS.items())
    yield store
    await store.close()


@pytest.fixture
async def single_store(redis_db: RedisDatabase) -> AsyncIterator[KpiStore]:
    store = KpiStore.from_url(redis_db.url)
    await store.import_coupons(COUPONS.items())
    yield store
    await store.close()


async def test_a_cluster_counts_what_one_instance_counts(
    cluster_store: KpiStore, single_store: KpiStore
) -> None:
    assert cluster_store.cluster
    assert not single_store.cluster
    events = scenario()
    for store in (cluster_store, single_store):
        # Twice, and a half again: duplicates across batches, within the same parts.
        assert await store.apply_batch(events, now=NOW) == BatchResult(applied=20, late=2)
        again = await store.apply_batch([*events[5:], *events], now=NOW)
        assert again == BatchResult(duplicates=2 * len(events) - 5)
    assert await cluster_store.snapshot(NOW) == await single_store.snapshot(NOW)
    assert await cluster_store.stats() == await single_store.stats()
    assert (await cluster_store.stats())["applied"] == 17
    assert await cluster_store.totals() == await single_store.totals()
    for group_by in ("channel", "campaign"):
        params = {"from": f"{NOW:%Y-%m}-01", "to": f"{NOW:%Y-%m-%d}", "group_by": group_by,
                  "compare": "previous_period"}  # fmt: skip
        request = parse_request(params, NOW.date(), int(NOW.timestamp()) // 60)
        sums = await cluster_store.report_sums(request)
        assert sums["current"]
        assert sums == await single_store.report_sums(request)
        acquired = await cluster_store.acquisition_sums(request)
        assert acquired == await single_store.acquisition_sums(request)
    month = int(NOW.strftime("%Y%m"))
    assert await cluster_store.month_campaigns(month) == await single_store.month_campaigns(month)
    assert await cluster_store.cohort(month) == await single_store.cohort(month)


async def test_every_key_is_in_a_part_and_the_parts_spread_over_the_masters(
    cluster_store: KpiStore,
) -> None:
    await cluster_store.apply_batch(scenario(), now=NOW)
    client = cluster_store.client
    assert isinstance(client, RedisClusterClient)
    keys = [key async for key in client.scan_iter(match="adpulse:*", count=1000)]
    part_slots = {key_slot(KeySpace().part(n).stats.encode()) for n in range(CLUSTER_PARTS)}
    registry = {KeySpace().coupons, KeySpace().channels}
    assert set(keys) - registry
    assert {key_slot(key.encode()) for key in keys if key not in registry} <= part_slots
    used = {key_slot(key.encode()) for key in keys if key not in registry}
    assert len(used) > 3
    # Each master serves some of the parts: the load spreads over the cluster.
    masters = {
        node.name for node in client.get_primaries() if any(
            client.get_node_from_key(KeySpace().part(n).stats) == node
            for n in range(CLUSTER_PARTS)
        )
    }  # fmt: skip
    assert len(masters) == 3


async def test_batches_sent_without_waiting_apply_in_order_per_part(
    cluster_store: KpiStore,
) -> None:
    """`send_decoded`: a part's batches one after another, the parts side by side; clicks and
    then the conversions naming them, a later batch each, all attributed."""
    batches = []
    for number in range(6):
        events = [
            make_event(f"k{number}-{n}", EventType.CLICK, NOW, channel=f"ch{n % 3}",
                       click_id=f"click-{number}-{n}")
            for n in range(30)
        ]  # fmt: skip
        if number:
            events += [
                make_event(f"v{number}-{n}", EventType.CONVERSION, NOW,
                           click_id=f"click-{number - 1}-{n}", order_id=f"o{number}-{n}")
                for n in range(30)
            ]  # fmt: skip
        batches.append(decode_events(events))
    answers = [await cluster_store.send_decoded(batch, NOW) for batch in batches]
    results = [await answer for answer in answers]
    assert sum(result.applied for result in results) == 6 * 30 + 5 * 30
    totals = await cluster_store.totals()
    assert {name: (c.clicks, c.conversions) for name, c in totals.items()} == {
        "ch0": (60, 50), "ch1": (60, 50), "ch2": (60, 50)
    }  # fmt: skip


async def test_a_coupon_removed_from_the_registry_no_longer_attributes_in_any_part(
    cluster_store: KpiStore,
) -> None:
    def redemption(number: int) -> Event:
        return make_event(f"r{number}", EventType.REDEMPTION, NOW, coupon="GONE5")

    await cluster_store.add_coupon("GONE5", "podcast")
    await cluster_store.apply_batch([redemption(n) for n in range(40)], now=NOW)
    assert await cluster_store.remove_coupon("GONE5")
    await cluster_store.apply_batch([redemption(n) for n in range(40, 80)], now=NOW)
    totals = await cluster_store.totals()
    assert totals["podcast"].redemptions == 40
    assert totals["unattributed"].redemptions == 40


async def test_what_cluster_mode_does_not_do_is_refused_naming_the_setting(
    cluster_store: KpiStore,
) -> None:
    for operation in ("rebuild", "snapshot export", "the number registry"):
        with pytest.raises(ClusterUnsupported, match=f"{operation} .*ADPULSE_REDIS_URL"):
            cluster_store.single_client(operation)
    with pytest.raises(ClusterUnsupported, match="history import"):
        await write_history(cluster_store, [])
    with pytest.raises(ClusterUnsupported, match="number registry"):
        NumberBook(cluster_store)
