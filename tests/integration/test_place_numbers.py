"""The placing numbers the worker sends with a batch (`fingerprints.script_arguments`, ARGV[22])
against a real redis-server: the script pairs each with its id as it scans the rows, and
lists of another length than the rows' ids leave every id placed by its own digits."""

from __future__ import annotations

import time
import uuid

import msgspec
import pytest

from stream.batch import DecodedBatch, make_row
from stream.fingerprints import PLACED, bucket_of, fingerprint
from stream.keys import KeySpace, Retention
from stream.lua import APPLY_BATCH, encode_batch
from stream.store import KpiStore
from tests.conftest import RedisDatabase

pytestmark = pytest.mark.integration

PLACES_ARGUMENT = 21  # ARGV[22]


def mixed_rows(count: int, minute: int) -> list[str | int]:
    """Clicks with click ids, conversions with orders and customers, leads with lead ids."""
    rows: list[str | int] = []
    for number in range(count):
        base: dict[str, str | int] = {
            "event_id": str(uuid.uuid4()), "minute": minute, "channel": "email"
        }  # fmt: skip
        if number % 3 == 0:
            rows += make_row(kind="k", click_id=f"g{uuid.uuid4().hex}", **base)
        elif number % 3 == 1:
            rows += make_row(
                kind="c", order_id=f"o{number}", customer_id=f"u{number % 7}",
                value_micros=1_000_000, **base,
            )  # fmt: skip
        else:
            rows += make_row(kind="l", lead_id=f"d{number}", **base)
    return rows


@pytest.mark.parametrize("numbers", ["sent", "mismatched"])
async def test_ids_go_to_the_bucket_their_digits_name(
    redis_db: RedisDatabase, numbers: str
) -> None:
    keys = KeySpace(f"place{uuid.uuid4().hex[:8]}:")
    retention = Retention()
    store = KpiStore.from_url(redis_db.url, keys=keys, retention=retention)
    now = int(time.time())
    rows = mixed_rows(900, now // 60)
    try:
        argv = encode_batch(
            DecodedBatch(rows=rows), keys=keys, retention=retention, now_seconds=now,
            stored_spend={},
        ).argv  # fmt: skip
        if numbers == "mismatched":
            # The event ids' list one number short at its start, each id given the next one's:
            # the script finds more ids than numbers and places every id by its digits.
            sent = argv[PLACES_ARGUMENT]
            assert isinstance(sent, bytes)
            places = msgspec.msgpack.decode(sent, type=list[list[int]])
            places[PLACED.index("event_id")].pop(0)
            argv[PLACES_ARGUMENT] = msgspec.msgpack.encode(places)
        reply = await store.client.eval(APPLY_BATCH, 0, *argv)
        assert reply[0] == 900
        # Every event id is in the bucket `bucket_of` names (from its digits) of its
        # generation: what a look-up of a later batch, placed the same way, reads.
        generation_keys = [key async for key in store.client.scan_iter(f"{keys.prefix}ids:*:m")]
        assert len(generation_keys) == 1
        base = generation_keys[0].removesuffix(":m")
        shape = await store.client.hgetall(f"{base}:m")
        n, s = int(shape["n"]), int(shape["s"])
        assert int(shape["c"]) == 900
        for at in range(0, len(rows), len(rows) // 900):
            event_id = fingerprint("event_id", str(rows[at + 1]))
            bucket = bucket_of(event_id, n, s)
            assert await store.client.sismember(f"{base}:{bucket}", event_id)
        # The same rows again: every one a duplicate.
        again = encode_batch(
            DecodedBatch(rows=rows), keys=keys, retention=retention, now_seconds=now,
            stored_spend={},
        ).argv  # fmt: skip
        reply = await store.client.eval(APPLY_BATCH, 0, *again)
        assert (reply[0], reply[1]) == (0, 900)
    finally:
        await store.close()
