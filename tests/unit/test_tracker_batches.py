"""The publisher's produce batches: every record once, in its partition, in order.

`EventPublisher._build_batches` writes records straight into aiokafka's record batch builder
(`tracker.framework.fill_batch`); these read the built batches back with aiokafka's own reader.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.record.memory_records import MemoryRecords
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.framework import batch_bytes
from tracker.publisher import EventPublisher, PublisherSettings, TopicSpec
from tracker.spool import SpoolRecord
from tracker.wal import WriteAheadLog

EVENTS = "adpulse.events"
REJECTED = "adpulse.events.rejected"


def publisher(partitions: int, spool_dir: Path) -> EventPublisher:
    spool = WriteAheadLog.open(spool_dir, max_bytes=1 << 20)
    built = EventPublisher(
        PublisherSettings(
            bootstrap="127.0.0.1:9", topics=(TopicSpec(EVENTS, partitions), TopicSpec(REJECTED, 1))
        ),
        spool,
    )
    built._partitions = {EVENTS: partitions, REJECTED: 1}
    return built


def read_back(batch: Any) -> list[tuple[bytes | None, bytes | None, int]]:
    records = MemoryRecords(batch_bytes(batch))
    found: list[tuple[bytes | None, bytes | None, int]] = []
    while (read := records.next_batch()) is not None:
        found.extend((record.key, record.value, record.offset) for record in read)
    return found


async def build(
    records: list[SpoolRecord], partitions: int, batch_bytes: int
) -> list[tuple[tuple[str, int], list[int], list[tuple[bytes | None, bytes | None, int]]]]:
    # Never started: create_batch only needs the producer's settings, not a broker.
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", max_batch_size=batch_bytes)
    try:
        with tempfile.TemporaryDirectory(prefix="adpulse-test-spool-") as spool_dir:
            batches = publisher(partitions, Path(spool_dir))._build_batches(producer, records)
        return [(target, indices, read_back(batch)) for target, (batch, indices) in batches]
    finally:
        await producer.stop()


def records_of(topics: list[str]) -> st.SearchStrategy[list[tuple[str, bytes, bytes]]]:
    return st.lists(
        st.tuples(
            st.sampled_from(topics),
            st.binary(min_size=0, max_size=40),
            st.binary(min_size=1, max_size=600),
        ),
        min_size=1,
        max_size=120,
    )


# Mixed topics, and one topic alone (the usual produce cycle, which takes its own path).
record_lists = st.one_of(records_of([EVENTS, EVENTS, EVENTS, REJECTED]), records_of([EVENTS]))


@settings(max_examples=60, deadline=None)
@given(record_lists, st.integers(min_value=1, max_value=12), st.sampled_from([512, 2048, 65536]))
async def test_every_record_lands_once_in_its_partition_in_order(
    raw: list[tuple[str, bytes, bytes]], partitions: int, batch_bytes: int
) -> None:
    records = [SpoolRecord(*fields) for fields in raw]
    built = await build(records, partitions, batch_bytes)

    seen: list[int] = []
    for (topic, partition), indices, read in built:
        # The batch holds exactly the records its indices name, in that order, offsets from 0.
        assert [(key, value) for key, value, _ in read] == [
            (records[index].key, records[index].value) for index in indices
        ]
        assert [offset for _, _, offset in read] == list(range(len(indices)))
        for index in indices:
            assert records[index].topic == topic
            count = partitions if topic == EVENTS else 1
            assert partition == (murmur2(records[index].key) & 0x7FFFFFFF) % count
        seen.extend(indices)
    assert sorted(seen) == list(range(len(records)))
    # Within a partition, records keep the order they were submitted in.
    by_target: dict[tuple[str, int], list[int]] = {}
    for target, indices, _ in built:
        by_target.setdefault(target, []).extend(indices)
    for indices in by_target.values():
        assert indices == sorted(indices)


async def test_a_full_batch_continues_in_the_next() -> None:
    records = [SpoolRecord(EVENTS, b"same-key", os.urandom(300)) for _ in range(20)]
    built = await build(records, 1, 1024)
    assert len(built) > 1
    assert [index for _, indices, _ in built for index in indices] == list(range(20))
    assert all(read for _, _, read in built)
