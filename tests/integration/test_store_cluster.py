"""`KpiStore` in cluster mode against a real three-master Redis Cluster: the same figures as one
instance, every script call in one slot, the parts spread over the masters, and the readers
that do not gather yet refusing (`keys`, "Redis Cluster")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from redis.asyncio.cluster import RedisCluster as RedisClusterClient
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, ResponseError

from adpulse.core.event import Event, EventType
from stream.aggregate import BatchResult
from stream.batch import DecodedBatch, decode_events
from stream.cluster import Fact, fact_calls
from stream.errors import ClusterUnsupported, StoreUnavailable
from stream.keys import CLUSTER_PARTS, KeySpace, part_of
from stream.report import parse_request
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.integration.test_store_redis import scenario
from tests.kafka_helpers import wait_until
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
    for operation in ("rebuild", "the number registry"):
        with pytest.raises(ClusterUnsupported, match=f"{operation} .*ADPULSE_REDIS_URL"):
            cluster_store.single_client(operation)


def _in_distinct_parts(prefix: str, count: int) -> list[str]:
    """`count` order ids, each routed to a part of its own (`stream.cluster.row_key`)."""
    found: dict[int, str] = {}
    for number in range(10_000):
        found.setdefault(part_of(f"{prefix}{number}"), f"{prefix}{number}")
        if len(found) == count:
            break
    return list(found.values())


def customer_batches() -> list[list[Event]]:
    """Customers whose conversions route to different parts (order ids without click ids):
    first reports, repeat sales in other channels (one in the same batch as the first),
    restatements that move LTV (one without its customer), a re-sent conversion."""
    a1, a2, a3, b1, b2, c1 = _in_distinct_parts("ord-", 6)
    hours = [NOW - timedelta(hours=h) for h in (5, 4, 3, 2, 1)]
    conversion = EventType.CONVERSION

    def sale(event_id: str, order: str, at: int, **fields: object) -> Event:
        return make_event(event_id, conversion, hours[at], order_id=order, **fields)

    first = [
        sale("e1", a1, 0, channel="search", customer_id="cust-a", value_micros=10_000_000),
        sale("e2", b1, 0, channel="social", customer_id="cust-b", value_micros=5_000_000),
        sale("e3", b2, 1, channel="search", customer_id="cust-b", value_micros=7_000_000),
        sale("e4", c1, 1, channel="email", customer_id="cust-c", value_micros=3_250_000),
    ]
    second = [
        sale("e5", a2, 2, channel="social", customer_id="cust-a", value_micros=20_000_000,
             status="pending"),
        sale("e6", a3, 2, channel="email", customer_id="cust-a", value_micros=4_000_000),
        first[0],  # re-sent: a duplicate
    ]  # fmt: skip
    third = [
        # Restatements: refunded (its customer named), a new value (its customer not named).
        sale("e7", a1, 3, channel="search", customer_id="cust-a", value_micros=10_000_000,
             status="refunded"),
        sale("e8", c1, 4, channel="email", value_micros=9_000_000),
        sale("e9", a2, 4, channel="social", customer_id="cust-a", value_micros=20_000_000),
    ]  # fmt: skip
    return [first, second, third]


async def assert_same_customers(cluster_store: KpiStore, single_store: KpiStore) -> None:
    """Every figure customers touch, from the cluster and from one instance."""
    cluster_totals, single_totals = await cluster_store.totals(), await single_store.totals()
    for channel in {*cluster_totals, *single_totals}:
        assert cluster_totals.get(channel) == single_totals.get(channel), channel
    assert await cluster_store.snapshot(NOW) == await single_store.snapshot(NOW)
    months = {int(f"{NOW - timedelta(hours=5):%Y%m}"), int(f"{NOW:%Y%m}")}
    for month in months:
        assert await cluster_store.cohort(month) == await single_store.cohort(month)
    params = {"from": f"{NOW - timedelta(hours=5):%Y-%m-%d}", "to": f"{NOW:%Y-%m-%d}",
              "group_by": "channel"}  # fmt: skip
    request = parse_request(params, NOW.date(), int(NOW.timestamp()) // 60)
    assert await cluster_store.acquisition_sums(request) == await single_store.acquisition_sums(
        request
    )


async def test_customers_across_parts_count_as_one_instance_counts(
    cluster_store: KpiStore, single_store: KpiStore
) -> None:
    batches = customer_batches()
    for batch in batches:
        await single_store.apply_batch(batch, now=NOW)
    # The worker's way: every batch sent without waiting for the one before.
    pending = [await cluster_store.send_decoded(decode_events(b), now=NOW) for b in batches]
    for answer in pending:
        await answer
    totals = await single_store.totals()
    # One new customer each, in the first conversion's channel; the rest repeat sales.
    assert {name: c.new_customers for name, c in totals.items() if c.new_customers} == {
        "search": 1, "social": 1, "email": 1
    }  # fmt: skip
    assert sum(c.repeat_sales for c in totals.values()) == 3
    await assert_same_customers(cluster_store, single_store)
    # Every outbox emptied once its customer parts confirmed.
    assert not await cluster_store._read_outboxes()


class _StopsBetweenCalls(KpiStore):
    """A store whose worker dies (`crash`) or whose cluster goes down (`outage`) after a batch's
    parts were applied and before their customer facts were sent."""

    cluster_service: RedisCluster
    how = "crash"
    batches = 0

    async def _forward_customers(self, facts: list[Fact], now_seconds: int) -> None:
        self.batches += 1
        if self.batches != 2:  # the first batch's, and the resends after the second's
            await super()._forward_customers(facts, now_seconds)
        elif self.how == "crash":
            raise asyncio.CancelledError  # as a SIGKILL: nothing more happens
        else:
            await asyncio.to_thread(self.cluster_service.stop, 0)
            try:
                await super()._forward_customers(facts, now_seconds)
            finally:
                await asyncio.to_thread(self.cluster_service.start)


@pytest.mark.parametrize("how", ["crash", "outage"])
async def test_customers_stay_exact_when_the_second_call_does_not_happen(
    cluster_redis: RedisCluster, single_store: KpiStore, how: str
) -> None:
    batches = customer_batches()
    for batch in batches:
        await single_store.apply_batch(batch, now=NOW)
    failing = _StopsBetweenCalls.from_url(cluster_redis.url)
    failing.cluster_service, failing.how = cluster_redis, how
    await failing.import_coupons(COUPONS.items())
    await failing.apply_batch(batches[0], now=NOW)
    with pytest.raises((asyncio.CancelledError, StoreUnavailable)):
        await failing.apply_batch(batches[1], now=NOW)
    await failing.close()
    # A facts' second call applied but its outbox not trimmed: sent again, applied once.
    restarted = KpiStore.from_url(cluster_redis.url)
    try:
        if how == "crash":
            facts = await restarted._read_outboxes()
            assert facts
            for destination, (rows, sources) in fact_calls(facts).items():
                await restarted._apply_facts(destination, rows, sources, int(NOW.timestamp()))
        # At start, the outboxes are sent (the facts applied already are skipped) and emptied.
        await restarted.send_customer_facts()
        assert not await restarted._read_outboxes()
        # The batch again (Kafka redelivers what was not committed), then the last one.
        await restarted.apply_batch(batches[1], now=NOW)
        await restarted.apply_batch(batches[2], now=NOW)
        await assert_same_customers(restarted, single_store)
        assert not await restarted._read_outboxes()
    finally:
        await restarted.close()


class _DiesAfterFirstCalls(KpiStore):
    """A worker SIGKILLed after a batch's parts were applied, before their customer facts were
    sent: the facts stay in the outboxes."""

    async def _forward_customers(self, facts: list[Fact], now_seconds: int) -> None:
        raise asyncio.CancelledError


@asynccontextmanager
async def _taking_over_from_dying(url: str) -> AsyncIterator[tuple[KpiStore, KpiStore]]:
    """Worker B's store (running already) and worker A's, which dies after a batch's first
    calls (`_DiesAfterFirstCalls`); both closed after."""
    taking_over = KpiStore.from_url(url)
    dying = _DiesAfterFirstCalls.from_url(url)
    try:
        yield taking_over, dying
    finally:
        await dying.close()
        await taking_over.close()


def _two_sales(prefix: str, name: str) -> tuple[Event, Event]:
    """Customer "cust-{name}"'s first sale (search, 2 hours ago) and second sale (social, an hour
    ago), events "{name}1" and "{name}2", their orders in parts of their own."""
    first_order, second_order = _in_distinct_parts(prefix, 2)
    conversion = EventType.CONVERSION
    first = make_event(
        f"{name}1",
        conversion,
        NOW - timedelta(hours=2),
        order_id=first_order,
        channel="search",
        customer_id=f"cust-{name}",
        value_micros=1_000_000,
    )
    second = make_event(f"{name}2", conversion, NOW - timedelta(hours=1), order_id=second_order,
                        channel="social", customer_id=f"cust-{name}", value_micros=2_000_000)  # fmt: skip
    return first, second


async def test_a_fact_stranded_by_a_crash_stays_first_after_the_partitions_move(
    cluster_redis: RedisCluster, single_store: KpiStore
) -> None:
    # One customer's first sale (its fact stranded) and second sale, in parts of their own.
    first, second = _two_sales("move-", "m")
    for batch in ([first], [second]):
        await single_store.apply_batch(batch, now=NOW)
    # Worker B runs already: its start's resend is behind it.
    async with _taking_over_from_dying(cluster_redis.url) as (taking_over, dying):
        await taking_over.import_coupons(COUPONS.items())
        await taking_over.send_customer_facts()
        with pytest.raises(asyncio.CancelledError):
            await dying.apply_batch([first], now=NOW)
        assert len(await taking_over._read_outboxes()) == 1
        # B is assigned A's partitions: the first sale again (skipped) with the second one.
        taking_over.partitions_moved()
        answer = await taking_over.send_decoded(decode_events([first, second]), now=NOW)
        await answer
        await assert_same_customers(taking_over, single_store)
        totals = await taking_over.totals()
        assert totals["search"].new_customers == 1
        assert totals["social"].repeat_sales == 1
        assert not await taking_over._read_outboxes()


async def test_facts_left_in_outboxes_are_sent_again_without_a_batch(
    cluster_redis: RedisCluster, single_store: KpiStore
) -> None:
    sale, _ = _two_sales("idle-", "i")
    await single_store.apply_batch([sale], now=NOW)
    async with _taking_over_from_dying(cluster_redis.url) as (taking_over, dying):
        await taking_over.send_customer_facts()
        with pytest.raises(asyncio.CancelledError):
            await dying.apply_batch([sale], now=NOW)
        taking_over.partitions_moved()

        # No batch comes: the resend empties the outboxes on its own.
        async def outboxes_sent() -> bool:
            return not await taking_over._read_outboxes()

        await wait_until(outboxes_sent, timeout=10, interval=0.05, message="outboxes sent again")
        await assert_same_customers(taking_over, single_store)


async def test_a_script_call_refused_for_its_slot_is_redis_unavailable_naming_resharding(
    cluster_store: KpiStore,
) -> None:
    """As a slot migrating under a call: the script touches a key it did not declare, another
    master's (`keys`, "Resharding")."""
    elsewhere = cluster_store.keys.part(CLUSTER_PARTS - 1).stats
    cluster_store._apply = cluster_store.client.register_script(
        f"return redis.call('GET', '{elsewhere}')"
    )
    with pytest.raises(RedisClusterException, match="resharding while workers run"):
        await cluster_store._call_script([cluster_store.keys.part(0).stats], [])
    # What other answers the script gives stay as they are.
    cluster_store._apply = cluster_store.client.register_script("return redis.error_reply('x')")
    with pytest.raises(ResponseError, match="x"):
        await cluster_store._call_script([cluster_store.keys.part(0).stats], [])


class _SlowFirstPart(KpiStore):
    """A store whose first part call waits for `gate`, and which notes each batch's second
    calls by the stamp of their facts."""

    gate: asyncio.Event
    calls = 0
    forwarded: list[int]

    async def _apply_in(
        self,
        keys: KeySpace,
        batch: DecodedBatch,
        now_seconds: int,
        outbox: tuple[int, int, list[int], list[Fact]] | None = None,
    ) -> BatchResult:
        self.calls += 1
        if self.calls == 1:
            await self.gate.wait()
        return await super()._apply_in(keys, batch, now_seconds, outbox)

    async def _forward_customers(self, facts: list[Fact], now_seconds: int) -> None:
        self.forwarded += sorted({fact.order[0] for fact in facts})
        await super()._forward_customers(facts, now_seconds)


async def test_second_calls_keep_the_batch_order_across_resume_sending(
    cluster_redis: RedisCluster,
) -> None:
    first, second = _two_sales("resume-", "r")
    store = _SlowFirstPart.from_url(cluster_redis.url)
    store.gate, store.forwarded = asyncio.Event(), []
    try:
        await store.send_customer_facts()
        earlier = await store.send_decoded(decode_events([first]), now=NOW)
        store.resume_sending()  # as after a failure, while the batch before is still on its way
        later = await store.send_decoded(decode_events([second]), now=NOW)
        await wait_until(lambda: store.calls >= 2, timeout=10, interval=0.01, message="both calls")
        assert not later.done()  # its second calls wait for the earlier batch's
        store.gate.set()
        await earlier
        await later
        assert len(store.forwarded) == 2
        assert store.forwarded == sorted(store.forwarded)
        totals = await store.totals()
        assert totals["search"].new_customers == 1
        assert totals["social"].repeat_sales == 1
    finally:
        await store.close()
