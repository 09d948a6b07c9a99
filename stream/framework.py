"""The worker's adapters to faust-streaming and aiokafka: every name of theirs that is not
public API is used here and nowhere else, checked at start-up (`check_framework`, and
`set_fetch_wait` for the attribute only a consumer instance has).

faust runs the process: the consumer group, its rebalances (pause, wait for the batch in hand,
commit, seek to the committed offsets, resume), signals and shutdown. What it does not run is
its per-event path: its Fetcher hands every record on one at a time, with tasks, queues and ack
bookkeeping per record (bench/README.md has the cost). So `BatchConsumer` replaces the
Fetcher's drain loop with `stream.batch_loop.BatchLoop`, through these private names:

faust-streaming (written for `WRITTEN_FOR`):
- `Consumer._drain_messages(fetcher)`, overridden: faust starts it after every rebalance and
  stops it before the next; it runs `BatchLoop.drain`.
- `Consumer._new_consumer_thread()`, overridden to make (and keep) a `BatchConsumerThread`.
- `AIOKafkaConsumerThread._create_worker_consumer(transport)`, overridden: faust fixes the
  aiokafka consumer's fetch wait at 1500 ms and has no setting for it.
- `Consumer._get_active_partitions()`: the assigned partitions faust's flow control has not
  paused.
- `App._new_transport()`, overridden so the app's transport makes a `BatchConsumer`.

aiokafka (written for `WRITTEN_FOR`):
- `AIOKafkaConsumer._fetch_max_wait_ms`, set before the consumer starts (`set_fetch_wait`).
- `PartitionRecords._unpack_records`, `FetchResult.getall` and `FetchResult.getone`,
  replaced process-wide
  (`hand_on_batch_records`), with the attributes they read: a partition's records are handed
  on as their record batches hold them, drained in C, not one Python call chain per record.
- The fetcher module's `MemoryRecords`, replaced by `FetchedRecords` (the same class keeping
  the fetch answer's bytes), so that a batch's CRC-32C is computed over them in hardware; only
  where google-crc32c has its C extension (else aiokafka's own check, and a warning).

Public API instead of a private name wherever it does the same job as fast:
- `AIOKafkaConsumer.getmany(*partitions, timeout_ms=, max_records=)` fetches, not faust's
  `_fetch_records` and `_ensure_consumer`: both end in the same `fetched_records` call of
  aiokafka's fetcher; getmany also raises the group coordinator's unrecoverable errors (such as
  a refused group authorisation), which faust's path leaves unread.
- The consumer thread's `commit(offsets)`, which `Consumer._commit` only forwards to. Not
  aiokafka's `commit(offsets)` alone: faust's thread also drops partitions no longer assigned
  and turns a commit refused after a rebalance into False.
- faust's `on_partitions_revoked`, `on_partitions_assigned` and `wait_empty`, not an aiokafka
  `ConsumerRebalanceListener`: faust installs its own listener and runs the rebalance; the loop
  only needs to hear of it.
- `App.consumer_generation_id`, `Consumer.highwater`, `flow_active`, `can_resume_flow`, and
  mode-streaming's `ServiceThread.call_thread` (no private name of mode is used).
- `Monitor.stream_inbound_time`, the time faust's sensor notes when a stream takes an event of a
  partition (`note_streaming`): faust's livelock check reads it.
"""

from __future__ import annotations

import gc
import logging
import struct
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from importlib import metadata
from itertools import chain, islice
from typing import Any, Final, cast

import faust
import google_crc32c
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer import fetcher
from aiokafka.consumer.fetcher import READ_COMMITTED, FetchResult, PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.memory_records import MemoryRecords
from faust.exceptions import ConsumerNotStarted
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream.batch_loop import TP, BatchLoop, Record
from stream.errors import StreamError

logger = logging.getLogger(__name__)

WRITTEN_FOR: Final = {"faust-streaming": "0.15", "aiokafka": "0.14"}
"""The release series (major.minor) this module was written and tested for; pyproject.toml
bounds the dependencies to the same (a unit test compares the two)."""

REPLACED: Final[tuple[tuple[Any, str], ...]] = (
    (PartitionRecords, "_unpack_records"),
    (FetchResult, "getall"),
    (FetchResult, "getone"),
    (fetcher, "MemoryRecords"),
)
"""What `hand_on_batch_records` replaces in aiokafka, process-wide (owner, name)."""
_HOOKS: Final = (
    ("faust-streaming", faust_aiokafka.Consumer, "_drain_messages"),
    ("faust-streaming", faust_aiokafka.Consumer, "_new_consumer_thread"),
    ("faust-streaming", faust_aiokafka.Consumer, "_get_active_partitions"),
    ("faust-streaming", faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer"),
    ("faust-streaming", faust.App, "_new_transport"),
    *(("aiokafka", owner, name) for owner, name in REPLACED),
)
"""The private methods used here, by the distribution that has them (and the class the fetcher
makes a fetch answer's records with)."""


class FrameworkMismatch(StreamError):
    """The installed faust-streaming or aiokafka is not what this module was written for."""

    def __init__(self, problems: Sequence[str]) -> None:
        written_for = ", ".join(f"{name} {series}.x" for name, series in WRITTEN_FOR.items())
        super().__init__(
            f"stream/framework.py was written for {written_for}: {'; '.join(problems)}. "
            "Install the versions pyproject.toml asks for, or update stream/framework.py"
        )
        self.problems = tuple(problems)


def installed_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in WRITTEN_FOR}


def check_framework(installed: Mapping[str, str] | None = None) -> None:
    """Fail (FrameworkMismatch) unless the installed versions are the series this module was
    written for and still have every private method it uses."""
    versions = installed_versions() if installed is None else installed
    problems = [
        f"{name} {versions[name]} is installed"
        for name, series in WRITTEN_FOR.items()
        if _series(versions[name]) != series
    ]
    problems += [
        f"{name} {versions[name]} has no {owner.__name__}.{method}"
        for name, owner, method in _HOOKS
        if not callable(getattr(owner, method, None))
    ]
    if problems:
        raise FrameworkMismatch(problems)


def _series(version: str) -> str:
    return ".".join(version.split(".")[:2])


_UNPACK_RECORDS: Final = PartitionRecords._unpack_records
_GETALL: Final = FetchResult.getall
_GETONE: Final = FetchResult.getone
"""aiokafka's own, kept for transactional reads and for the tests that compare the two."""


class FetchedRecords(MemoryRecords):  # type: ignore[misc]
    """aiokafka's `MemoryRecords` of a fetch answer, which also keeps the answer's bytes
    (`data`) for `_batch_records`' CRC check; the fetcher makes these once
    `hand_on_batch_records` ran."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.data = data


BATCH_LENGTH_AT: Final = 8
"""Where a record batch's length (of the bytes after it, a 4-byte int) is, in all formats."""
_length: Final = struct.Struct(">i").unpack_from
BATCH_CRC_FROM: Final = 21
"""Where a v2 record batch's CRC-32C starts (its attributes): it covers the batch to its end."""


def _batch_records(self: PartitionRecords) -> Iterator[Record]:
    """`PartitionRecords._unpack_records` for the worker, which reads `.value` and `.offset`
    only: the records as their record batch holds them, not each wrapped into a
    ConsumerRecord. The same checks per record batch (its CRC, control batches skipped); a
    batch whose records are all at or past the position is handed on by C iteration (`chain`
    takes its records from it directly, `_record_batches` runs only between batches), the
    position not moved per record (`_getall` sets it from the last record taken).
    Transactional reads (not the worker's) keep aiokafka's own."""
    if self._isolation_level == READ_COMMITTED:
        records: Iterator[Record] = _UNPACK_RECORDS(self)
        return records
    return chain.from_iterable(_record_batches(self))


def _record_batches(self: PartitionRecords) -> Iterator[Iterable[Record]]:
    """The batches of `_batch_records`, each checked when `chain` comes to it.

    The CRC-32C of a v2 batch is computed by google-crc32c (SSE4.2's crc32 instruction) over
    a copy of the batch's bytes in the fetch answer (its `value` takes only bytes), not by
    aiokafka's table-driven `validate_crc`: 40 instructions an event and the copy against 947
    (bench/README.md, "The fetched records' CRC and hand-over")."""
    records = self._records
    data: bytes | None = getattr(records, "data", None)  # a `FetchedRecords`' answer
    end = 0
    while records.has_next():
        batch = records.next_batch()
        if data is not None:  # the batch's bytes in the answer, walked as `next_batch` walks it
            start, end = end, end + BATCH_LENGTH_AT + 4 + _length(data, end + BATCH_LENGTH_AT)[0]
        if self._check_crcs and not (
            google_crc32c.value(data[start + BATCH_CRC_FROM : end]) == batch.crc
            if data is not None and type(batch) is DefaultRecordBatch
            else batch.validate_crc()
        ):
            raise CorruptRecordException(f"Invalid CRC - {self._tp}")
        if not batch.is_control_batch:
            if type(batch) is DefaultRecordBatch and batch.base_offset >= self.next_fetch_offset:
                yield batch
            else:  # a fetch from within a batch gets all of it: skip what is before
                yield _records_from_position(self, batch)
        # A batch's next offset, which compaction may have put past its last record.
        self.next_fetch_offset = batch.next_offset


def _records_from_position(self: PartitionRecords, batch: Iterable[Record]) -> Iterator[Record]:
    """A batch's records at or past the position, moving it past each."""
    for record in batch:
        if record.offset >= self.next_fetch_offset:
            self.next_fetch_offset = record.offset + 1
            yield record


def _getall(self: FetchResult, max_records: int | None = None) -> list[Record]:
    """`FetchResult.getall`: at most `max_records` records of the partition, taken from its
    records' iterator by `islice` (in C), its position moved past the last one taken."""
    partition = self._partition_records
    if not self.check_assignment(self._topic_partition) or not self.has_more():
        return []
    iterator = partition._records_iterator
    taken: list[Record] = [] if iterator is None else list(islice(iterator, max_records))
    if taken:
        partition.next_fetch_offset = max(partition.next_fetch_offset, taken[-1].offset + 1)
    self._update_position()
    if max_records is None or len(taken) < max_records:
        self._partition_records = None  # all taken: aiokafka fetches the partition again
    return taken


def _getone(self: FetchResult) -> Record | None:
    """`FetchResult.getone` by `_getall`, which moves the position past the record (the
    worker's own fetches take many; a record batch handed on by C iteration leaves the
    position to the taker)."""
    taken = _getall(self, 1)
    return taken[0] if taken else None


def hand_on_batch_records() -> None:
    """Make aiokafka hand fetched records on as their batch holds them (`_batch_records`,
    `_getall`, `_getone`), its fetcher keeping each answer's bytes (`FetchedRecords`).

    Class-wide, so only in the worker process, which consumes nothing else.
    """
    missing = [
        f"aiokafka {metadata.version('aiokafka')} has no {owner.__name__}.{method}"
        for owner, method in REPLACED
        if not callable(getattr(owner, method, None))
    ]
    if missing:
        raise FrameworkMismatch(missing)
    PartitionRecords._unpack_records = _batch_records
    FetchResult.getall = _getall
    FetchResult.getone = _getone
    if google_crc32c.implementation == "c":
        fetcher.MemoryRecords = FetchedRecords
    else:  # its pure-Python fallback is far slower than aiokafka's own check
        logger.warning(
            "google-crc32c has no C extension here (a wheel for this platform, or a compiler "
            "at install, gives it): record batches' CRCs are checked by aiokafka, about 900 "
            "instructions an event more"
        )


def set_fetch_wait(consumer: AIOKafkaConsumer, seconds: float) -> None:
    """The fetch.max.wait.ms of an aiokafka consumer not started yet (it reads it at start)."""
    if not isinstance(getattr(consumer, "_fetch_max_wait_ms", None), int):
        raise FrameworkMismatch(
            [f"aiokafka {metadata.version('aiokafka')} has no AIOKafkaConsumer._fetch_max_wait_ms"]
        )
    consumer._fetch_max_wait_ms = max(1, round(seconds * 1000))


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, with the aiokafka consumer's fetch wait from the settings, on a
    uvloop loop of its own."""

    kafka_consumer: AIOKafkaConsumer | None = None

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        # uvloop, as the worker's main loop: mode would make asyncio's default, whose Python
        # selector and transport read every fetch answer (bench/README.md, "The consumer
        # thread's loop").
        super().__init__(consumer, thread_loop=uvloop.new_event_loop(), **kwargs)

    async def stop(self) -> None:
        """mode's stop, which waits for the thread to end, then the thread's loop closed: mode
        closes only a loop it made itself (an open uvloop loop keeps its file descriptors)."""
        await super().stop()
        if not self.thread_loop.is_running() and not self.thread_loop.is_closed():
            self.thread_loop.close()

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # On the Tansu broker a fetch that finds no new record is held for half the wait and is
        # not answered early when records arrive meanwhile, so faust's fixed 1500 ms delays every
        # record; real Kafka answers as soon as data arrives, where a short wait only means more
        # empty fetches while idle.
        set_fetch_wait(consumer, cast(WorkerApp, self.app).batch_loop.settings.fetch_wait)
        self.kafka_consumer = consumer
        return consumer

    async def fetch_batch(
        self, partitions: Sequence[TopicPartition], timeout: float, max_records: int
    ) -> dict[TP, list[Record]]:
        """`getmany` in the consumer thread's loop (`call_thread`)."""
        # A fetch queued before a rebalance stopped the flow must not start after it: the
        # rebalance would wait for it (faust's own fetch checks the same).
        if not self.consumer.flow_active:
            return {}
        consumer = self.kafka_consumer
        if consumer is None:
            raise ConsumerNotStarted("Consumer thread not yet started")
        records: dict[TP, list[Record]] = await consumer.getmany(
            *partitions, timeout_ms=timeout * 1000, max_records=max_records
        )
        return records


GC_YOUNG_THRESHOLD: Final = 50_000
"""Young objects that trigger a collection, above the records of a batch in hand (5,000 by
default, each aiokafka record and its headers list tracked by the collector): at the default
700 every batch's records were walked several times and moved to the old generations, whose
collections walked all of faust besides (bench/README.md, "The worker's own CPU")."""


def settle_heap() -> None:
    """Keep the garbage collector off the batch path once startup is over: freeze what startup
    built (never walked again) and collect the young generation only when it outgrows a
    batch, so a batch's records are usually freed before any collection sees them."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


class BatchConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with the per-record drain loop replaced by `BatchLoop`;
    a `stream.batch_loop.RecordSource`."""

    batch_thread: BatchConsumerThread
    heap_settled = False

    @property
    def batch_loop(self) -> BatchLoop:
        return cast(WorkerApp, self.app).batch_loop

    @property
    def generation(self) -> int:
        generation: int = self.app.consumer_generation_id
        return generation

    def _new_consumer_thread(self) -> BatchConsumerThread:
        self.batch_thread = BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)
        return self.batch_thread

    async def _drain_messages(self, fetcher: Any) -> None:
        if not self.heap_settled:  # startup is over once faust first starts the drain
            settle_heap()
            self.heap_settled = True
        await self.batch_loop.drain(self, fetcher)

    async def fetch(self, timeout: float, max_records: int) -> dict[TP, list[Record]]:
        """Raw records of the active (assigned, not paused) partitions, at most `max_records`."""
        if not self.flow_active:
            await self.wait(self.can_resume_flow)  # type: ignore[arg-type]
            return {}
        active = self._get_active_partitions()
        if not active:
            await self.sleep(min(timeout, 0.2))
            return {}
        partitions = [TopicPartition(tp.topic, tp.partition) for tp in active]
        thread = self.batch_thread
        records: dict[TP, list[Record]] = await thread.call_thread(
            thread.fetch_batch, partitions, timeout, max_records
        )
        if records:
            note_streaming(self.app.monitor, records)
        return records

    async def commit_offsets(self, offsets: dict[TP, int]) -> bool:
        """Commit exactly these offsets (of partitions still assigned); False if refused."""
        committed: bool = await self.batch_thread.commit(offsets)
        return committed

    async def wait_empty(self) -> None:
        # faust calls this on stop and when partitions are revoked, before it commits.
        await self.batch_loop.finish_in_hand()
        await super().wait_empty()

    async def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        logger.info("partitions revoked: %s", _partitions(revoked))
        await super().on_partitions_revoked(revoked)
        self.batch_loop.forget(revoked)

    async def on_partitions_assigned(self, assigned: Set[TP], generation_id: int = 0) -> None:
        logger.info("partitions assigned: %s", _partitions(assigned))
        # Before the loop applies a batch of them (`KpiStore.partitions_moved`).
        self.batch_loop.writer.partitions_moved()
        await super().on_partitions_assigned(assigned, generation_id)


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer


class WorkerApp(faust.App):
    batch_loop: BatchLoop

    def _new_transport(self) -> BatchTransport:
        return BatchTransport(self.conf.broker_consumer, self)


def note_streaming(monitor: Any, partitions: Iterable[TP]) -> None:
    """Tell faust's monitor these partitions' records are being taken, as its per-event stream
    does for each event (`Monitor.on_stream_event_in`). Its livelock check, every few seconds,
    reads that time: without it, a worker behind its partitions' end for 5 minutes logged an
    error for every partition, saying its stream had not started processing, every 10 s."""
    inbound = getattr(monitor, "stream_inbound_time", None)
    if inbound is None:
        return
    now = time.monotonic()  # the clock of faust's monitor and its check
    for tp in partitions:
        inbound[tp] = now


def _partitions(tps: Set[TP]) -> str:
    return ",".join(str(tp.partition) for tp in sorted(tps)) or "none"
