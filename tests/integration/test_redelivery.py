"""Kafka redelivery recognised by each partition's applied offset (issue 16), in the real script.

The worker hands the script each row's partition and offset (`DecodedBatch.sources`); the
script skips rows at or below the offset it applied last in that partition, but only once the
batch shows the same log (its row at that offset has the event id applied there), so a broker
restarted empty, which numbers a new log from 0 again, has none of its records skipped.
"""

from __future__ import annotations

import time
import uuid

import pytest

from stream.batch import DecodedBatch, make_row
from stream.keys import KeySpace
from stream.store import KpiStore
from tests.conftest import RedisDatabase

pytestmark = pytest.mark.integration

PARTITION = "adpulse.events:0"


def clicks(event_ids: list[str], first_offset: int) -> DecodedBatch:
    """Clicks of channel email with these event ids, at consecutive offsets of one partition."""
    minute = int(time.time()) // 60
    rows: list[str | int] = []
    for event_id in event_ids:
        rows += make_row(kind="k", event_id=event_id, minute=minute, channel="email")
    offsets = list(range(first_offset, first_offset + len(event_ids)))
    return DecodedBatch(rows=rows, sources=[(PARTITION, 0, offsets)])


def new_ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


async def test_redelivered_records_are_skipped_and_a_new_log_is_not(
    redis_db: RedisDatabase,
) -> None:
    store = KpiStore.from_url(redis_db.url, keys=KeySpace(f"re{uuid.uuid4().hex[:8]}:"))
    try:
        log = new_ids(15)
        first = await store.apply_decoded(clicks(log[:10], 0))
        assert (first.applied, first.redelivered) == (10, 0)
        # The same batch again (a retry, or a worker killed before it committed).
        again = await store.apply_decoded(clicks(log[:10], 0))
        assert (again.applied, again.duplicates, again.redelivered) == (0, 0, 10)
        # Read again from offset 5 after a rebalance, with five records not applied yet.
        overlap = await store.apply_decoded(clicks(log[5:15], 5))
        assert (overlap.applied, overlap.duplicates, overlap.redelivered) == (5, 0, 5)
        # Without offsets (a rebuild, a test): the event ids still recognise them.
        unsourced = clicks(log[:3], 0)
        unsourced.sources = []
        assert (await store.apply_decoded(unsourced)).duplicates == 3

        # The broker restarted empty: a new log from offset 0, shorter than the one applied.
        # Its row at the applied offset (14) is not in the batch: nothing is skipped.
        short = await store.apply_decoded(clicks(new_ids(5), 0))
        assert (short.applied, short.redelivered) == (5, 0)
        # The new log passes the applied offset: its row there is another event, so nothing is
        # skipped and the applied offset is the new log's from now on.
        newer = new_ids(20)
        longer = await store.apply_decoded(clicks(newer, 0))
        assert (longer.applied, longer.redelivered) == (20, 0)
        assert (await store.apply_decoded(clicks(newer[10:], 10))).redelivered == 10

        totals = await store.totals()
        assert totals["email"].clicks == 15 + 5 + 20
        stats = await store.stats()
        assert stats["redelivered"] == 10 + 5 + 10
        assert stats["applied"] == 15 + 5 + 20
    finally:
        async for name in store.client.scan_iter(match=store.keys.pattern, count=1000):
            await store.client.unlink(name)
        await store.close()


def sourced(batch: DecodedBatch, log: str) -> DecodedBatch:
    """`batch` as read from the broker whose cluster id is `log`."""
    batch.sources = [(f"{name}/{log}", first, offsets) for name, first, offsets in batch.sources]
    return batch


async def test_two_workers_on_two_brokers_interleave_one_partition_and_count_each_event_once(
    redis_db: RedisDatabase,
) -> None:
    # A blue/green broker replacement: the old worker drains the old log while the new one
    # counts the new log from offset 0, both into the same Redis, batches of partition 0 taking
    # turns. A record the tracker resent holds the same event id in both logs, even at the same
    # offset after records only one log holds: none may be skipped, none counted twice.
    store = KpiStore.from_url(redis_db.url, keys=KeySpace(f"re{uuid.uuid4().hex[:8]}:"))
    try:
        old_log, new_log = new_ids(30), new_ids(30)
        resent = old_log[2]
        new_log[2] = resent  # offset 2 in both logs, after two records only the new one has
        applied = [
            await store.apply_decoded(sourced(clicks(old_log[:3], 0), "old")),
            await store.apply_decoded(sourced(clicks(new_log[:10], 0), "new")),
            await store.apply_decoded(sourced(clicks(old_log[3:20], 3), "old")),
            await store.apply_decoded(sourced(clicks(new_log[10:15], 10), "new")),
            # The new worker restarted before it committed: its log again from offset 5.
            await store.apply_decoded(sourced(clicks(new_log[5:25], 5), "new")),
            await store.apply_decoded(sourced(clicks(old_log[20:], 20), "old")),
            await store.apply_decoded(sourced(clicks(new_log[25:], 25), "new")),
        ]
        assert sum(result.applied for result in applied) == 59
        assert sum(result.duplicates for result in applied) == 1  # the resent record
        # The restarted new worker's overlap is recognised by the offsets of its own log.
        assert applied[4].redelivered == 10
        totals = await store.totals()
        assert totals["email"].clicks == 59
    finally:
        async for name in store.client.scan_iter(match=store.keys.pattern, count=1000):
            await store.client.unlink(name)
        await store.close()
