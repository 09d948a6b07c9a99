"""Redis memory per remembered id (issue 16): at most 24 bytes for event ids, click ids and
orders (with their state), and for customers.

200,000 ids of each kind go through the real apply-batch script (`KpiStore.apply_decoded`, in
the worker's batch size) into a real redis-server with its default encoding limits: UUID event
ids (redemptions, which remember nothing else), gclid-like click ids (clicks, which register
their click id for attribution) and UUID order ids (conversions, which keep their order's
state, in its compact form: `stream.states`). Each kind's memory is MEMORY USAGE (exact,
SAMPLES 0) summed over its keys, the buckets, their layouts and their dictionaries, divided by
its ids.
"""

from __future__ import annotations

import base64
import os
import random
import time
import uuid
from collections.abc import Callable

import pytest

from stream.batch import ROW, DecodedBatch, make_row
from stream.fingerprints import bucket_of, fingerprint
from stream.keys import IdLayout, KeySpace, Retention
from stream.states import (
    CUSTOMER_SPAN,
    ORDER_SPAN,
    origin,
    unpack_customer,
    unpack_order,
)
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.services import RedisService

pytestmark = pytest.mark.integration

IDS = 200_000
BATCH = 5_000
TARGET_BYTES = 24
CHANNELS = ("paid_search", "paid_social", "email", "affiliate", "display", "podcast")


def gclid() -> str:
    """96 characters of the URL-safe alphabet, as long as a Google Ads click id."""
    return base64.urlsafe_b64encode(os.urandom(72)).decode()


async def apply(store: KpiStore, make: Callable[[int], list[str | int]]) -> list[str | int]:
    """Apply IDS rows made by `make` in batches; the first batch's rows."""
    batches: list[list[str | int]] = []
    for first in range(0, IDS, BATCH):
        rows: list[str | int] = []
        for number in range(first, first + BATCH):
            rows += make(number)
        result = await store.apply_decoded(DecodedBatch(rows=rows))
        assert result.applied == BATCH
        batches = batches or [rows]
    return batches[0]


async def memory(store: KpiStore, kind: str) -> tuple[int, int]:
    """(bytes, keys) of every key of one kind of remembered id."""
    total = keys = 0
    async for name in store.client.scan_iter(match=f"{store.keys.prefix}{kind}:*", count=1000):
        total += await store.client.memory_usage(name, samples=0) or 0
        keys += 1
    return total, keys


async def test_remembered_ids_take_at_most_24_bytes_each(redis_db: RedisDatabase) -> None:
    rng = random.Random(16)
    minute = int(time.time()) // 60
    store = KpiStore.from_url(redis_db.url, keys=KeySpace(f"mem{uuid.uuid4().hex[:8]}:"))
    try:
        assert await store.check_encodings() == []
        # Event ids alone: redemptions of a known channel remember their event id only.
        redemptions = await apply(
            store,
            lambda n: make_row(
                kind="r", event_id=str(uuid.uuid4()), minute=minute, channel="email"
            ),
        )
        event_bytes, event_keys = await memory(store, "ids")
        # Clicks: their event id, and their click id with its channel, campaign and minute.
        clicks = await apply(
            store,
            lambda n: make_row(
                kind="k",
                event_id=str(uuid.uuid4()),
                minute=minute - rng.randrange(60),
                channel=rng.choice(CHANNELS),
                campaign=f"spring_sale_{n % 50}",
                click_id=gclid(),
            ),
        )
        click_bytes, click_keys = await memory(store, "clicks")
        # Orders: conversions with their order's state (status, minute, value, channel ...),
        # each of a new customer (acquisition channel, first minute, cohort).
        conversions = await apply(
            store,
            lambda n: make_row(
                kind="c",
                event_id=str(uuid.uuid4()),
                minute=minute,
                channel=rng.choice(CHANNELS),
                campaign=f"spring_sale_{n % 50}",
                order_id=str(uuid.uuid4()),
                value_micros=rng.randrange(5_000_000, 500_000_000),
                customer_id=os.urandom(32).hex(),
            ),
        )
        order_bytes, order_keys = await memory(store, "ord")
        customer_bytes, customer_keys = await memory(store, "cust")
        figures = {
            "event ids": (event_bytes / IDS, event_keys),
            "click ids": (click_bytes / IDS, click_keys),
            "order ids": (order_bytes / IDS, order_keys),
            "customers": (customer_bytes / IDS, customer_keys),
        }
        print("bytes per id (keys):", {k: (round(b, 1), n) for k, (b, n) in figures.items()})
        assert figures["event ids"][0] <= TARGET_BYTES, figures
        assert figures["click ids"][0] <= TARGET_BYTES, figures
        assert figures["order ids"][0] <= TARGET_BYTES, figures
        assert figures["customers"][0] <= TARGET_BYTES, figures
        # The script's compact states read back with `stream.states`: the first batch's orders
        # and customers as sent (so Python and Lua agree on the form).
        orders, customers = await stored_states(store, conversions)
        # Each order is a new customer's first: its LTV share is in the first horizon.
        sent = columns(conversions, "order_id", "value_micros", "minute", "channel", "campaign")
        assert orders == {
            fingerprint("order_id", str(o)): (str(v), int(m), f"{cohort(int(m))}:1:{h}\t{h}\t{a}")
            for o, v, m, h, a in sent
        }
        assert customers == {
            fingerprint("customer_id", str(c)): (int(m), f"{ch}\t{cohort(int(m))}")
            for c, m, ch in columns(conversions, "customer_id", "minute", "channel")
        }
        stats = await store.stats()
        assert stats["applied"] == 3 * IDS
        # Every kind still finds its ids among the 200,000: each first batch again is all
        # duplicates (event ids; the orders would be restatements that change nothing).
        for rows in (redemptions, clicks, conversions):
            again = await store.apply_decoded(DecodedBatch(rows=rows))
            assert (again.applied, again.duplicates) == (0, BATCH)
        # The same orders under new event ids: found by order id, unchanged, so duplicates.
        resent = list(conversions)
        resent[ROW.index("event_id") :: len(ROW)] = [str(uuid.uuid4()) for _ in range(BATCH)]
        again = await store.apply_decoded(DecodedBatch(rows=resent))
        assert (again.applied, again.duplicates) == (0, BATCH)
    finally:
        async for name in store.client.scan_iter(match=store.keys.pattern, count=1000):
            await store.client.unlink(name)
        await store.close()


def columns(rows: list[str | int | bool], *names: str) -> zip[tuple[str | int | bool, ...]]:
    return zip(*(rows[ROW.index(name) :: len(ROW)] for name in names), strict=True)


def cohort(minute: int) -> str:
    """The local month (YYYYMM) of `minute`, in the default reporting time zone (UTC)."""
    return time.strftime("%Y%m", time.gmtime(minute * 60))


async def stored_states(
    store: KpiStore, rows: list[str | int | bool]
) -> tuple[dict[str, tuple[str, int, str]], dict[str, tuple[int, str]]]:
    """The stored states of the orders and customers of `rows`, decoded: order fingerprint ->
    (value, minute, its dictionary text), customer fingerprint -> (minute, dictionary text)."""
    wanted = {
        "ord": {fingerprint("order_id", str(o)) for (o,) in columns(rows, "order_id")},
        "cust": {fingerprint("customer_id", str(c)) for (c,) in columns(rows, "customer_id")},
    }
    windows = {"ord": Retention().order, "cust": Retention().customer}
    orders: dict[str, tuple[str, int, str]] = {}
    customers: dict[str, tuple[int, str]] = {}
    for kind, ids in wanted.items():
        async for name in store.client.scan_iter(match=f"{store.keys.prefix}{kind}:*"):
            generation, _, part = name[len(f"{store.keys.prefix}{kind}:") :].partition(":")
            if not part.isdigit():
                continue
            names = await store.client.hgetall(f"{store.keys.prefix}{kind}:{generation}:names")
            window = int(windows[kind].total_seconds())
            for raw_id, raw_text in (await store.client.hgetall(name)).items():
                id_, text = str(raw_id), str(raw_text)
                if id_ not in ids:
                    continue
                assert text.isdigit(), text  # the compact form
                if kind == "ord":
                    order = unpack_order(text, origin(window, int(generation), ORDER_SPAN))
                    assert order.status == "a"
                    entry = (
                        str(order.value_micros),
                        order.minute,
                        str(names[str(order.reference)]),
                    )
                    orders[id_] = entry
                else:
                    customer = unpack_customer(text, origin(window, int(generation), CUSTOMER_SPAN))
                    customers[id_] = (customer.minute, str(names[str(customer.reference)]))
    return orders, customers


async def test_a_lower_encoding_limit_is_warned_about_and_buckets_follow_it(
    redis_db: RedisDatabase, redis_server: RedisService
) -> None:
    """The worker reads Redis's limits at start (`KpiStore.check_encodings`): a limit below the
    default is named in a warning, and buckets are sized for it."""
    store = KpiStore.from_url(redis_db.url)
    try:
        if not redis_server.restartable:
            pytest.skip("changes the server's configuration: only on the session's own Redis")
        before = await store.client.config_get("set-max-intset-entries")
        await store.client.config_set("set-max-intset-entries", 64)
        try:
            warnings = await store.check_encodings()
        finally:
            await store.client.config_set(
                "set-max-intset-entries", str(before["set-max-intset-entries"])
            )
        assert len(warnings) == 1
        assert "set-max-intset-entries is 64" in warnings[0]
        assert store.layout == IdLayout.for_limits(64, 512)
        assert store.layout.set_load == 25
    finally:
        await store.close()


async def test_the_script_places_ids_as_fingerprints_bucket_of_says(
    redis_db: RedisDatabase,
) -> None:
    """Every fingerprint the script stored is in the bucket `fingerprints.bucket_of` names for
    its generation's layout, so the Python side and the Lua side agree on where an id is."""
    store = KpiStore.from_url(redis_db.url, keys=KeySpace(f"pl{uuid.uuid4().hex[:8]}:"))
    minute = int(time.time()) // 60
    try:
        event_ids = [str(uuid.uuid4()) for _ in range(3_000)]
        rows: list[str | int] = []
        for event_id in event_ids:
            rows += make_row(kind="r", event_id=event_id, minute=minute, channel="email")
        await store.apply_decoded(DecodedBatch(rows=rows))
        layouts = [
            name async for name in store.client.scan_iter(match=f"{store.keys.prefix}ids:*:m")
        ]
        assert len(layouts) == 1
        shape = await store.client.hgetall(layouts[0])
        buckets, split = int(shape["n"]), int(shape["s"])
        assert int(shape["c"]) == len(event_ids)
        assert buckets + split > len(event_ids) // store.layout.set_load - 1
        base = layouts[0][: -len(":m")]
        found = 0
        for bucket in range(buckets + split):
            for member in await store.client.smembers(f"{base}:{bucket}"):
                assert bucket_of(str(member), buckets, split) == bucket
                found += 1
        assert found == len(event_ids)
        assert {fingerprint("event_id", e) for e in event_ids} == {
            str(m)
            for bucket in range(buckets + split)
            for m in await store.client.smembers(f"{base}:{bucket}")
        }
    finally:
        async for name in store.client.scan_iter(match=store.keys.pattern, count=1000):
            await store.client.unlink(name)
        await store.close()
