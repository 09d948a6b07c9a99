"""Kafka redelivery recognised by each partition's applied offset (issue 16), in the real script.

The worker hands the script each row's partition and offset (`DecodedBatch.sources`); the
script skips rows at or below the offset it applied last in that partition, but only once the
batch shows the same log (its row at that offset has the event id applied there), so a broker
restarted empty, which numbers a new log from 0 again, has none of its records skipped.
"""

from __future__ import annotations

import pytest

from stream.batch import DecodedBatch
from tests.batches import apply_a_log_twice, apply_a_new_log, clicks, new_ids, scratch_store
from tests.conftest import RedisDatabase

pytestmark = pytest.mark.integration


async def test_redelivered_records_are_skipped_and_a_new_log_is_not(
    redis_db: RedisDatabase,
) -> None:
    async with scratch_store(redis_db.url) as store:
        log = await apply_a_log_twice(store)
        # Read again from offset 5 after a rebalance, with five records not applied yet.
        overlap = await store.apply_decoded(clicks(log[5:15], 5))
        assert (overlap.applied, overlap.duplicates, overlap.redelivered) == (5, 0, 5)
        # Without offsets (a rebuild, a test): the event ids still recognise them.
        unsourced = clicks(log[:3], 0)
        unsourced.sources = []
        assert (await store.apply_decoded(unsourced)).duplicates == 3

        newer = await apply_a_new_log(store)
        assert (await store.apply_decoded(clicks(newer[10:], 10))).redelivered == 10

        totals = await store.totals()
        assert totals["email"].clicks == 15 + 5 + 20
        stats = await store.stats()
        assert stats["redelivered"] == 10 + 5 + 10
        assert stats["applied"] == 15 + 5 + 20


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
    async with scratch_store(redis_db.url) as store:
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
