"""Reading a topic's retained records from given offsets up to its end, committing nothing.

Used by `adpulse rebuild` (the events, then the registry) and `adpulse snapshot export` (a
group's committed offsets). The consumers here have no group (`group_id=None`), so they can
neither join the worker's group nor commit for it; `committed_offsets` reads a group's offsets
with a consumer that never subscribes, so it does not join either.

The end of a partition is read from its last records, not from ListOffsets alone: Tansu answers
ListOffsets with the base offset of the partition's last record batch + 1, not the end of the
log (tests/integration/test_worker_pipeline.py `produce` says the same).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from stream.errors import StreamError

_FETCH_MS: Final = 500
_END_FETCH_MS: Final = 2000
_END_FETCH_TRIES: Final = 10
_EMPTY_FETCHES: Final = 20
"""Empty fetches in a row, while records below the end are still missing, before giving up."""


class TopicReadError(StreamError):
    """A topic could not be read as far as it must be; names the topic and why."""

    retriable = True

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"cannot read topic {topic}: {reason}")
        self.topic = topic
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Span:
    """Per partition of one topic: where reading starts (inclusive) and ends (exclusive)."""

    topic: str
    starts: Mapping[int, int]
    ends: Mapping[int, int]

    @property
    def total(self) -> int:
        return sum(max(0, self.ends[p] - self.starts[p]) for p in self.ends)


def reader(bootstrap: str, client_id: str) -> AIOKafkaConsumer:
    """A consumer without a group: it reads what it is assigned and cannot commit."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        fetch_max_wait_ms=100,
    )


async def partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions; empty when the topic does not exist."""
    await consumer.topics()  # fills the client's metadata
    numbers = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, number) for number in sorted(numbers)]


async def span(consumer: AIOKafkaConsumer, topic: str) -> Span:
    """From the first retained offset to the end of every partition, read now."""
    tps = await partitions(consumer, topic)
    if not tps:
        return Span(topic, {}, {})
    try:
        firsts = await consumer.beginning_offsets(tps)
        listed = await consumer.end_offsets(tps)
        consumer.assign(tps)
        ends = {}
        for tp in tps:
            ends[tp.partition] = await _end(consumer, tp, firsts[tp], listed[tp])
    except KafkaError as error:
        raise TopicReadError(topic, f"{type(error).__name__}: {error}") from error
    return Span(topic, {tp.partition: firsts[tp] for tp in tps}, ends)


async def _end(consumer: AIOKafkaConsumer, tp: TopicPartition, first: int, listed: int) -> int:
    """The offset after the partition's last record. A fetch from the last listed offset
    answers with at least the whole record batch holding it: Tansu's last batch (see above),
    or on Kafka the last record alone."""
    if listed <= first:
        return listed
    # The record before `listed` exists, so an empty answer is a slow broker, not the end:
    # taking `listed` then would end the read inside the last batch.
    for _ in range(_END_FETCH_TRIES):
        consumer.seek(tp, listed - 1)
        fetched = await consumer.getmany(tp, timeout_ms=_END_FETCH_MS)
        records = fetched.get(tp, [])
        if records:
            last: int = records[-1].offset
            return max(listed, last + 1)
    raise TopicReadError(
        tp.topic,
        f"partition {tp.partition}'s last records did not arrive within "
        f"{_END_FETCH_TRIES * _END_FETCH_MS / 1000:.0f} s: the broker is too slow or gone",
    )


async def read(
    consumer: AIOKafkaConsumer, span: Span, max_records: int
) -> AsyncIterator[Sequence[tuple[int, ConsumerRecord[bytes, bytes]]]]:
    """The records of `span` in batches of at most `max_records` (partition, record) pairs; a
    partition stops at its end. TopicReadError when records below an end stay unreadable
    (deleted by retention meanwhile, or the broker gone).

    Partitions are merged by record timestamp (then partition and offset): the order they were
    produced in, which is the order a worker that keeps up applies them in. A partition's own
    records stay in offset order. So events of different partitions that the apply-batch script
    relates (two conversions with one order id under different partition keys) meet in the
    order they met live.
    """
    tps = [TopicPartition(span.topic, p) for p in sorted(span.ends)]
    consumer.assign(tps)
    left: dict[TopicPartition, int] = {}
    for tp in tps:
        if span.starts[tp.partition] < span.ends[tp.partition]:
            consumer.seek(tp, span.starts[tp.partition])
            left[tp] = span.ends[tp.partition]
    buffered: dict[TopicPartition, deque[ConsumerRecord[bytes, bytes]]] = {
        tp: deque() for tp in left
    }
    empty = 0
    while left or any(buffered.values()):
        # Fetch until every partition not yet read to its end has records in hand.
        hungry = [tp for tp in left if not buffered[tp]]
        if hungry:
            try:
                fetched = await consumer.getmany(*hungry, timeout_ms=_FETCH_MS)
            except KafkaError as error:
                raise TopicReadError(span.topic, f"{type(error).__name__}: {error}") from error
            got = False
            for tp, records in fetched.items():
                end = left.get(tp)
                if end is None:
                    continue
                kept = [record for record in records if record.offset < end]
                buffered[tp].extend(kept)
                got = got or bool(kept)
                if records and records[-1].offset + 1 >= end:
                    del left[tp]
            if not got and any(not buffered[tp] for tp in left):
                empty += 1
                if empty >= _EMPTY_FETCHES:
                    missing = ", ".join(
                        f"partition {tp.partition} up to offset {end}" for tp, end in left.items()
                    )
                    raise TopicReadError(span.topic, f"no records arrive for {missing}")
                continue
            empty = 0
        batch: list[tuple[int, ConsumerRecord[bytes, bytes]]] = []
        while len(batch) < max_records:
            # A partition still being read but with nothing in hand may hold an earlier record.
            if any(not buffered[tp] for tp in left):
                break
            ready = [tp for tp, records in buffered.items() if records]
            if not ready:
                break
            tp = min(ready, key=lambda t: (buffered[t][0].timestamp, t.partition))
            batch.append((tp.partition, buffered[tp].popleft()))
        if batch:
            yield batch


async def committed_offsets(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    """`group`'s committed offset of each partition of `topic` (absent: none committed).

    The consumer names the group only to ask for its offsets: it never subscribes, so it does
    not join the group, and it commits nothing.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        await consumer.start()
        offsets = {}
        for tp in await partitions(consumer, topic):
            offset = await consumer.committed(tp)
            if offset is not None:
                offsets[tp.partition] = offset
        return offsets
    except KafkaError as error:
        raise TopicReadError(topic, f"{type(error).__name__}: {error}") from error
    finally:
        await consumer.stop()
