"""Order and customer states in Redis in both their forms (`stream.states`): the compact form
the script writes, and the text form it keeps for a state that does not fit and that older
versions (and the snapshots they exported) hold. The script reads both, so the counters stay
the reference fold's, through a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adpulse.core.event import Event, EventType
from stream.keys import Retention
from stream.snapshot import export_snapshot, load, restore, save
from stream.states import (
    CUSTOMER_SPAN,
    ORDER_SPAN,
    StoredCustomer,
    StoredOrder,
    customer_text,
    order_text,
    origin,
    unpack_customer,
    unpack_order,
)
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.integration.test_order_restatements import folded
from tests.integration.test_store_redis import DAY_TIERS, counters_in_redis, drop_keys, unique_keys
from tests.unit.test_stream_aggregate import make_event

pytestmark = pytest.mark.integration

WINDOWS = {"ord": Retention().order, "cust": Retention().customer}
SPANS = {"ord": ORDER_SPAN, "cust": CUSTOMER_SPAN}


def conversion(
    event_id: str,
    ts: datetime,
    order: str,
    customer: str,
    status: str | None = None,
    value: int | None = None,
) -> Event:
    return make_event(
        event_id,
        EventType.CONVERSION,
        ts,
        channel="search",
        campaign="spring",
        order_id=order,
        status=status,
        value_micros=value,
        customer_id=customer,
    )


@pytest.fixture
async def store(redis_db: RedisDatabase) -> AsyncIterator[KpiStore]:
    kpi_store = KpiStore.from_url(redis_db.url, keys=unique_keys())
    yield kpi_store
    await drop_keys(kpi_store.client, kpi_store.keys)
    await kpi_store.close()


async def stored(store: KpiStore, kind: str) -> dict[tuple[str, str], str]:
    """(bucket key, id fingerprint) -> stored state, of every bucket of `kind` ("ord"/"cust")."""
    found: dict[tuple[str, str], str] = {}
    async for name in store.client.scan_iter(match=f"{store.keys.prefix}{kind}:*"):
        if name.rpartition(":")[2].isdigit():
            for id_, state in (await store.client.hgetall(name)).items():
                found[str(name), str(id_)] = str(state)
    return found


async def as_older_versions_wrote(store: KpiStore) -> None:
    """Every compact state rewritten in the text form, its texts referenced as before: an order's
    "channel\\tcampaign" and its LTV share apart, a customer's channel alone."""

    async def refer(base: str, text: str) -> str:
        ref = await store.client.hget(f"{base}:refs", text)
        if ref is None:
            ref = str(await store.client.hlen(f"{base}:names") + 1)
            await store.client.hset(f"{base}:names", ref, text)
            await store.client.hset(f"{base}:refs", text, ref)
        return str(ref)

    for kind in ("ord", "cust"):
        for (bucket, id_), state in (await stored(store, kind)).items():
            base = bucket.rpartition(":")[0]
            generation = int(base.rpartition(":")[2])
            start = origin(int(WINDOWS[kind].total_seconds()), generation, SPANS[kind])
            if kind == "ord":
                order = unpack_order(state, start)
                if order.ltv_reference is None:  # one reference for the three texts
                    texts = str(await store.client.hget(f"{base}:names", str(order.reference)))
                    ltv, channel, campaign = texts.split("\t", 2)
                    ltv_ref = await refer(base, ltv) if ltv else ""
                    ref = int(await refer(base, f"{channel}\t{campaign}"))
                    order = StoredOrder(
                        order.status, order.minute, order.value_micros, ref, ltv_ref
                    )
                text = order_text(order)
            else:
                customer = unpack_customer(state, start)
                texts = str(await store.client.hget(f"{base}:names", str(customer.reference)))
                channel, cohort = texts.split("\t")
                ref = int(await refer(base, channel))
                text = customer_text(StoredCustomer(ref, customer.minute, cohort))
            await store.client.hset(bucket, id_, text)


async def counters(store: KpiStore) -> dict[str, dict[str, int]]:
    found = await counters_in_redis(store, ("m:", "h:", *DAY_TIERS))
    return {key.removeprefix(store.keys.prefix): fields for key, fields in found.items()}


async def apply(store: KpiStore, batches: Sequence[list[Event]], now: datetime) -> None:
    for batch in batches:
        await store.apply_batch(batch, now=now)


async def test_states_older_versions_wrote_are_read_and_restated_exactly(store: KpiStore) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = [
        conversion("e1", now - timedelta(days=3), "o1", "ann", "pending", 25_000_000),
        conversion("e2", now - timedelta(days=2), "o2", "bob", None, 10_123_456),
    ]
    await apply(store, [first], now)
    assert all(state.isdigit() for state in (await stored(store, "ord")).values())
    assert all(state.isdigit() for state in (await stored(store, "cust")).values())
    await as_older_versions_wrote(store)
    orders = await stored(store, "ord")
    assert len(orders) == 2
    assert not any(state.isdigit() for state in orders.values())

    # Restatements of both orders and a repeat sale of ann's, after the upgrade.
    later = [
        conversion("e3", now - timedelta(hours=5), "o1", "ann", None, 30_000_000),
        conversion("e4", now - timedelta(hours=4), "o2", "bob", "refunded"),
        conversion("e5", now - timedelta(hours=3), "o3", "ann", None, 7_000_000),
    ]
    await apply(store, [later], now)
    assert await counters(store) == folded([first, later], now)
    totals = (await counters(store))["t"]
    assert (totals["search:u"], totals["search:y"], totals["search:f"]) == (2, 1, 1)
    # Restated orders are written back compact; customers are written once, so ann's and bob's
    # stay as they were, and are still read.
    assert all(state.isdigit() for state in (await stored(store, "ord")).values())
    assert len(await stored(store, "cust")) == 2


async def test_states_past_the_compact_forms_reach_are_kept_as_text(store: KpiStore) -> None:
    """A value past what the compact form holds exactly, an order and a customer of long ago."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = [
        conversion("e1", now - timedelta(days=2), "big", "cat", None, 10**15),
        conversion("e2", now - timedelta(days=200), "old", "dan", "pending", 5_000_000),
        conversion("e3", now - timedelta(days=800), "older", "eve", None, 6_000_000),
    ]
    await apply(store, [first], now)
    orders = await stored(store, "ord")
    assert sorted(state.isdigit() for state in orders.values()) == [False, False, False]
    customers = await stored(store, "cust")
    assert sorted(state.isdigit() for state in customers.values()) == [False, True, True]

    later = [
        # The big order refunded; the old one re-sent unchanged (a duplicate, found by its
        # order id); eve buys again: a repeat sale of the customer kept as text.
        conversion("e4", now - timedelta(hours=2), "big", "cat", "refunded"),
        conversion("e5", now - timedelta(days=200), "old", "dan", "pending", 5_000_000),
        conversion("e6", now - timedelta(hours=1), "new", "eve", None, 8_000_000),
    ]
    result = await store.apply_batch(later, now=now)
    assert (result.applied, result.duplicates) == (2, 1)
    assert await counters(store) == folded([first, later], now)
    totals = (await counters(store))["t"]
    assert (totals["search:f"], totals["search:F"]) == (1, 10**15)
    assert (totals["search:u"], totals["search:y"], totals["search:Y"]) == (3, 1, 8_000_000)


async def test_a_snapshot_carries_both_forms_to_another_key_space(
    store: KpiStore, redis_db: RedisDatabase, tmp_path: Path
) -> None:
    """`adpulse snapshot export/import`'s functions: the states, compact and text, go through
    the JSON file as they are and are read in the key space they were restored to."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = [
        conversion("e1", now - timedelta(days=3), "cents", "ann", "pending", 25_000_000),
        conversion("e2", now - timedelta(days=2), "micros", "bob", None, 10_123_456),
    ]
    again = [conversion("e3", now - timedelta(days=1), "big", "cat", None, 10**15)]
    await apply(store, [first], now)
    await as_older_versions_wrote(store)  # ann's and bob's orders as text from here
    await apply(store, [again], now)  # cat's too (its value does not fit), cat compact
    await apply(store, [[conversion("e4", now, "cents", "ann", None, 30_000_000)]], now)
    forms = {state.isdigit() for state in (await stored(store, "ord")).values()}
    assert forms == {True, False}  # the restated order compact again
    path = tmp_path / "snapshot.json"
    await save(
        await export_snapshot(
            store.single_client("snapshot export"), store.keys, {0: 4}, "events", "worker"
        ),
        path,
    )

    restored = KpiStore.from_url(redis_db.url, keys=unique_keys())
    try:
        assert (
            await restore(
                restored.single_client("snapshot import"), await load(path), restored.keys
            )
            > 0
        )
        later = [
            conversion("e5", now, "cents", "ann", "refunded"),
            conversion("e6", now, "micros", "bob", "declined"),
            conversion("e7", now, "big", "cat", "pending"),
            conversion("e8", now, "o5", "bob", None, 2_000_000),  # a repeat sale
        ]
        result = await restored.apply_batch(later, now=now)
        assert (result.applied, result.duplicates) == (4, 0)
        restatement = [conversion("e4", now, "cents", "ann", None, 30_000_000)]
        assert await counters(restored) == folded([first, again, restatement, later], now)
        assert (await counters(restored))["t"]["search:u"] == 3
    finally:
        await drop_keys(restored.client, restored.keys)
        await restored.close()
