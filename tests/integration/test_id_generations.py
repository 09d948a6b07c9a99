"""Generations of remembered ids (`keys`, "Remembered ids") against a real redis-server: a fresh
generation is laid out for the size of the one before it, and every bucket still gets its
expiry although the generation's first write creates only some of them."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from stream.batch import DecodedBatch, make_row
from stream.fingerprints import bucket_of, fingerprint
from stream.keys import Retention
from stream.store import KpiStore
from tests.batches import scratch_store
from tests.conftest import RedisDatabase

pytestmark = pytest.mark.integration

WINDOW = timedelta(hours=4)
PERIOD = 3600  # a quarter of the window: one generation
# 30 s into the generation before the clock's (keys expire by the clock: EXPIREAT).
START = datetime.fromtimestamp((int(time.time()) // PERIOD - 1) * PERIOD + 30, UTC)
GENERATION = int(START.timestamp()) // PERIOD


@pytest.fixture
async def store(redis_db: RedisDatabase) -> AsyncIterator[KpiStore]:
    """A store whose dedupe window is `WINDOW`, in a key space of its own, emptied after."""
    async with scratch_store(redis_db.url, Retention(dedupe=WINDOW), prefix="gen") as kpi:
        yield kpi


def base_of(store: KpiStore) -> str:
    """The key prefix of `START`'s generation of event ids."""
    return f"{store.keys.prefix}ids:{GENERATION}"


def redemptions(event_ids: list[str], now: datetime) -> DecodedBatch:
    """Rows that remember their event id only (a redemption of a known channel)."""
    minute = int(now.timestamp()) // 60
    rows: list[str | int] = []
    for event_id in event_ids:
        rows += make_row(kind="r", event_id=event_id, minute=minute, channel="email")
    return DecodedBatch(rows=rows)


async def test_a_generation_is_laid_out_for_the_one_before_and_every_bucket_expires(
    store: KpiStore,
) -> None:
    base = base_of(store)
    earlier = [str(uuid.uuid4()) for _ in range(3_000)]
    hour_before = START - timedelta(hours=1)
    result = await store.apply_decoded(redemptions(earlier, hour_before), hour_before)
    assert result.applied == len(earlier)
    before = await store.client.hgetall(f"{store.keys.prefix}ids:{GENERATION - 1}:m")
    assert int(before["c"]) == len(earlier)
    # As many buckets as its ids need (15 at the default load of 204: 8, and 7 split).
    needed = -(-len(earlier) // store.layout.set_load)
    buckets = 1 << (needed.bit_length() - 1)
    split = needed - buckets
    assert (int(before["n"]), int(before["s"])) == (buckets, split)

    # The next generation, ten ids a batch: laid out at once for the one before, so its
    # first batches create a few of its buckets each, and it never splits.
    later = [str(uuid.uuid4()) for _ in range(400)]
    for first in range(0, len(later), 10):
        now = START + timedelta(seconds=first)
        result = await store.apply_decoded(redemptions(later[first : first + 10], now), now)
        assert result.applied == 10
        shape = await store.client.hgetall(f"{base}:m")
        assert (int(shape["n"]), int(shape["s"])) == (buckets, split)
        assert int(shape["c"]) == first + 10
    # Past the size of the one before: it splits on from that layout.
    more = [str(uuid.uuid4()) for _ in range(3_000)]
    now = START + timedelta(minutes=10)
    assert (await store.apply_decoded(redemptions(more, now), now)).applied == len(more)
    shape = await store.client.hgetall(f"{base}:m")
    grown = int(shape["n"]) + int(shape["s"])
    assert grown > buckets + split
    assert int(shape["c"]) == len(later) + len(more)
    assert shape["x"] == "1"  # a script of before the expiry bits sets it on every write

    # Every id in the bucket `bucket_of` names; every bucket with its generation's expiry,
    # and the expiry bits naming exactly the buckets there are.
    expire_at = (GENERATION + 2) * PERIOD + int(WINDOW.total_seconds())
    stored: set[str] = set()
    present = set()
    for bucket in range(grown):
        members = await store.client.smembers(f"{base}:{bucket}")
        if not members:
            continue
        present.add(bucket)
        assert await store.client.expiretime(f"{base}:{bucket}") == expire_at
        for member in members:
            assert bucket_of(str(member), int(shape["n"]), int(shape["s"])) == bucket
            stored.add(str(member))
    assert stored == {fingerprint("event_id", e) for e in later + more}
    # Text: bucket b is bit 1 + b % 7, from the high bit, of byte b // 7.
    bits = await store.client.get(f"{base}:e")
    assert isinstance(bits, str)
    assert bits.isascii()
    marked = {b for b in range(len(bits) * 7) if ord(bits[b // 7]) & 64 >> b % 7}
    assert marked == present
    for suffix in ("m", "e"):
        assert await store.client.expiretime(f"{base}:{suffix}") == expire_at

    # Each id is still recognised: in this generation and in the one before.
    now = START + timedelta(minutes=20)
    again = await store.apply_decoded(redemptions(earlier + later + more, now), now)
    assert (again.applied, again.duplicates) == (0, len(earlier) + len(later) + len(more))


async def test_a_bucket_an_older_script_emptied_gets_its_expiry_when_written_again(
    store: KpiStore,
) -> None:
    """During a rolling deploy an older worker, one without the expiry bits, may split a
    generation this one laid out and empty a bucket: it counts that in ``x`` but leaves the
    bucket's bit set. A write that creates the bucket again must still give it its expiry."""
    base = base_of(store)
    first = [str(uuid.uuid4()) for _ in range(1_000)]
    assert (await store.apply_decoded(redemptions(first, START), START)).applied == len(first)
    shape = await store.client.hgetall(f"{base}:m")
    n, s = int(shape["n"]), int(shape["s"])
    assert n + s > 1
    # What the older script's split leaves: bucket 0 gone, its bit still set, x counted.
    assert await store.client.delete(f"{base}:0") == 1
    await store.client.hset(f"{base}:m", "x", "2")
    again = [e for e in (str(uuid.uuid4()) for _ in range(2_000))
             if bucket_of(fingerprint("event_id", e), n, s) == 0][:5]  # fmt: skip
    assert len(again) == 5
    now = START + timedelta(seconds=5)
    assert (await store.apply_decoded(redemptions(again, now), now)).applied == len(again)
    expire_at = (GENERATION + 2) * PERIOD + int(WINDOW.total_seconds())
    assert await store.client.scard(f"{base}:0") == len(again)
    assert await store.client.expiretime(f"{base}:0") == expire_at
    assert (await store.client.hgetall(f"{base}:m"))["x"] == "1"


@pytest.mark.parametrize("mostly_seen", [False, True], ids=["few seen", "mostly seen"])
async def test_a_write_reusing_the_look_ups_groups_writes_exactly_the_new_ids(
    store: KpiStore, mostly_seen: bool
) -> None:
    """A generation whose layout a batch leaves as it is writes the batch's new ids from the
    groups its look-up made: ids seen before (in it and in the generation before) and a
    duplicate within the batch are taken out of them, each new id written once, in its
    bucket; so too when nearly all of a batch is left out (a replay of re-sent events, each
    seen id many times, a new one repeated)."""
    base = base_of(store)
    earlier = [str(uuid.uuid4()) for _ in range(1_000)]
    hour_before = START - timedelta(hours=1)
    assert (await store.apply_decoded(redemptions(earlier, hour_before), hour_before)).applied
    later = [str(uuid.uuid4()) for _ in range(10)]
    assert (await store.apply_decoded(redemptions(later, START), START)).applied == 10
    layout = await store.client.hgetall(f"{base}:m")
    new = [str(uuid.uuid4()) for _ in range(20)]
    # Seen ids first, among and after the new ones, and a new id twice.
    batch = [earlier[0], *new[:10], later[0], new[3], *new[10:], earlier[1], later[1]]
    if mostly_seen:
        batch = [*earlier[:200], *later, *new, *earlier[:200] * 10, *[new[7]] * 30]
    now = START + timedelta(seconds=5)
    result = await store.apply_decoded(redemptions(batch, now), now)
    assert (result.applied, result.duplicates) == (len(new), len(batch) - len(new))
    shape = await store.client.hgetall(f"{base}:m")
    assert (shape["n"], shape["s"]) == (layout["n"], layout["s"])  # the look-up's layout
    assert int(shape["c"]) == len(later) + len(new)
    stored: set[str] = set()
    n, s = int(shape["n"]), int(shape["s"])
    for bucket in range(n + s):
        for member in await store.client.smembers(f"{base}:{bucket}"):
            assert bucket_of(str(member), n, s) == bucket
            stored.add(str(member))
    assert stored == {fingerprint("event_id", e) for e in later + new}
