"""Batches of clicks with their Kafka offsets, and stores in key spaces of their own, for the
tests of the store's script against a real Redis (one instance or a cluster): redelivery is
recognised by each partition's applied offset, a new log (a broker restarted empty) is not."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from stream.batch import DecodedBatch, make_row
from stream.keys import KeySpace, Retention
from stream.store import KpiStore

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


@asynccontextmanager
async def scratch_store(
    url: str, retention: Retention | None = None, prefix: str = "re"
) -> AsyncIterator[KpiStore]:
    """A store on `url` in a key space of its own (`prefix` and a random part), with `retention`
    (the store's default when None); its keys deleted and the store closed after."""
    store = KpiStore.from_url(
        url, keys=KeySpace(f"{prefix}{uuid.uuid4().hex[:8]}:"), retention=retention
    )
    try:
        yield store
    finally:
        async for name in store.client.scan_iter(match=store.keys.pattern, count=1000):
            await store.client.unlink(name)
        await store.close()


async def apply_a_log_twice(store: KpiStore) -> list[str]:
    """A log's first 10 records applied, then the same batch again (a retry, or a worker killed
    before it committed): none applied twice, all 10 recognised as redelivered by their
    partition's applied offset. The log's 15 event ids (the last 5 not applied yet)."""
    log = new_ids(15)
    first = await store.apply_decoded(clicks(log[:10], 0))
    assert (first.applied, first.redelivered) == (10, 0)
    again = await store.apply_decoded(clicks(log[:10], 0))
    assert (again.applied, again.duplicates, again.redelivered) == (0, 0, 10)
    return log


async def apply_a_new_log(store: KpiStore) -> list[str]:
    """After `apply_a_log_twice` and its last 5 records, the broker restarted empty: a new log
    from offset 0. First shorter than the one applied (its row at the applied offset, 14, is
    not in the batch), then past it (its row there is another event): nothing is skipped
    either time, and the applied offset is the new log's from then on. The longer batch's 20
    event ids."""
    short = await store.apply_decoded(clicks(new_ids(5), 0))
    assert (short.applied, short.redelivered) == (5, 0)
    newer = new_ids(20)
    longer = await store.apply_decoded(clicks(newer, 0))
    assert (longer.applied, longer.redelivered) == (20, 0)
    return newer
