"""The worker's batch loop on its own: batches in flight, stale batches, give-ups.

`BatchLoop` reads through the `RecordSource` protocol and writes through `BatchWriter` to the
`BatchStore` protocol; here both are small in-memory implementations that write every step
into one log, so a test can state the whole order of sends, writes and commits. The real
faust consumer and Redis behind those protocols are exercised end to end in
tests/integration/test_worker_pipeline.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from adpulse.core.event import EventType
from stream.aggregate import BatchResult
from stream.batch import EVENT_FIELDS, DecodedBatch
from stream.batch_loop import IN_FLIGHT, BatchLoop, _add_part
from stream.batch_writer import Backoff, BatchWriter
from stream.errors import StoreUnavailable
from stream.worker_metrics import WorkerMetrics
from stream.worker_settings import WorkerSettings
from tests.unit.test_stream_aggregate import NOW, make_event

TOPIC = "adpulse.events"
TP0 = TopicPartition(TOPIC, 0)
TP1 = TopicPartition(TOPIC, 1)
BATCH = 2
"""Records per batch: one fetch fills a batch, so no test waits for batch_within."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    value: bytes | None
    offset: int


def records(name: str, offset: int) -> list[StoredRecord]:
    """BATCH clicks with event ids "<name>0", "<name>1", ... from `offset` on."""
    return [
        StoredRecord(make_event(f"{name}{i}", EventType.CLICK, NOW).to_wire(), offset + i)
        for i in range(BATCH)
    ]


def name_of(batch: DecodedBatch) -> str:
    """The batch's name: its event ids without their numbers, in order ("A", or "AB")."""
    ids = batch.rows[1::EVENT_FIELDS]
    return "".join(dict.fromkeys(str(event_id)[0] for event_id in ids))


class MemorySource:
    """A `RecordSource` whose fetches return what the test delivered, one delivery each."""

    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log
        self.generation = 1
        self.should_stop = False
        self.highwaters: dict[TopicPartition, int] = {}
        self._deliveries: asyncio.Queue[dict[TopicPartition, list[StoredRecord]]] = asyncio.Queue()

    def deliver(self, tp: TopicPartition, batch: list[StoredRecord]) -> None:
        self._deliveries.put_nowait({tp: batch})

    @property
    def fetched_all(self) -> bool:
        return self._deliveries.empty()

    def stop(self) -> None:
        self.should_stop = True
        self._deliveries.put_nowait({})  # wakes the fetch in progress

    async def fetch(
        self, timeout: float, max_records: int
    ) -> Mapping[TopicPartition, Sequence[StoredRecord]]:
        try:
            return await asyncio.wait_for(self._deliveries.get(), timeout)
        except TimeoutError:
            return {}

    async def commit_offsets(self, offsets: dict[TopicPartition, int]) -> bool:
        self.log.append(("committed", _offsets(offsets)))
        return True

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)


def _offsets(offsets: dict[TopicPartition, int]) -> str:
    return ",".join(f"{tp.partition}:{offset}" for tp, offset in sorted(offsets.items()))


class MemoryStore:
    """A `BatchStore` that answers sent batches when the test says, like `KpiStore` on
    `OrderedCalls`: after a failed answer it refuses sends until `resume_sending`."""

    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log
        self.answers: dict[str, asyncio.Future[BatchResult]] = {}
        self.refusing = False
        self.failing_writes = 0
        """Writes (`apply_decoded`) to fail before one succeeds; -1: fail every one."""
        self.write_attempts = 0

    async def send_decoded(
        self, batch: DecodedBatch, now: datetime | None = None
    ) -> asyncio.Future[BatchResult]:
        name = name_of(batch)
        if self.refusing:
            self.log.append(("refused", name))
            raise StoreUnavailable("send_decoded", ConnectionError("an earlier call failed"))
        self.log.append(("sent", name))
        answer: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self.answers[name] = answer
        return answer

    def answer(self, name: str) -> None:
        self.log.append(("answered", name))
        self.answers[name].set_result(BatchResult(applied=BATCH))

    def fail(self, name: str) -> None:
        self.log.append(("failed", name))
        self.refusing = True
        self.answers[name].set_exception(StoreUnavailable("send_decoded", ConnectionError()))

    def resume_sending(self) -> None:
        self.refusing = False

    def partitions_moved(self) -> None:
        pass

    async def apply_decoded(self, batch: DecodedBatch, now: datetime | None = None) -> BatchResult:
        self.write_attempts += 1
        if self.failing_writes:
            if self.failing_writes > 0:
                self.failing_writes -= 1
            raise StoreUnavailable("apply_batch", ConnectionError("connection refused"))
        self.log.append(("written", name_of(batch)))
        return BatchResult(applied=len(batch))


@dataclass
class Harness:
    log: list[tuple[str, str]]
    source: MemorySource
    store: MemoryStore
    loop: BatchLoop
    metrics: WorkerMetrics
    drain: asyncio.Task[None]

    async def finish(self) -> None:
        self.source.stop()
        await asyncio.wait_for(self.drain, 5)


def start(shutdown_timeout: float = 10.0) -> Harness:
    log: list[tuple[str, str]] = []
    source, store = MemorySource(log), MemoryStore(log)
    metrics = WorkerMetrics(CollectorRegistry())
    writer = BatchWriter(store, metrics, Backoff(first=0.001, cap=0.004))
    settings = WorkerSettings(batch_size=BATCH, shutdown_timeout=shutdown_timeout)
    loop = BatchLoop(settings, writer)
    drain = asyncio.ensure_future(loop.drain(source, source))
    return Harness(log, source, store, loop, metrics, drain)


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.001)


async def let_run() -> None:
    """Let every task that can go on do so (to show that one that must wait does not)."""
    for _ in range(50):
        await asyncio.sleep(0)


def steps(log: list[tuple[str, str]], kind: str) -> list[str]:
    return [what for step, what in log if step == kind]


def lag(metrics: WorkerMetrics, partition: int) -> float | None:
    return metrics.registry.get_sample_value(
        "adpulse_worker_consumer_lag", {"partition": str(partition)}
    )


async def test_two_batches_in_flight_commit_in_fetch_order() -> None:
    run = start()
    run.source.highwaters[TP0] = 10
    run.source.deliver(TP0, records("A", 0))
    run.source.deliver(TP1, records("B", 0))
    run.source.deliver(TP0, records("C", 2))
    await until(lambda: run.source.fetched_all, "all three batches fetched")
    await let_run()
    # A and B are on their way together, neither answered; C waits for room.
    assert IN_FLIGHT == 2
    assert run.log == [("sent", "A"), ("sent", "B")]

    run.store.answer("B")
    await let_run()
    assert steps(run.log, "committed") == [], "B committed before A was written"
    assert steps(run.log, "sent") == ["A", "B"]

    run.store.answer("A")
    await until(lambda: "C" in steps(run.log, "sent"), "C sent once A is done")
    run.store.answer("C")
    await until(lambda: len(steps(run.log, "committed")) == 3, "C committed")
    assert steps(run.log, "committed") == ["0:2", "1:2", "0:4"]
    assert run.log.index(("sent", "C")) > run.log.index(("committed", "0:2"))
    # The lag: the partition's highwater minus the offset committed last.
    assert lag(run.metrics, 0) == 6
    run.loop.forget({TP0})
    assert lag(run.metrics, 0) is None
    await run.finish()


async def test_stop_waits_for_the_batches_in_flight() -> None:
    run = start()
    run.source.deliver(TP0, records("A", 0))
    await until(lambda: run.log == [("sent", "A")], "A sent")
    run.source.stop()
    await let_run()
    assert not run.drain.done(), "the loop ended with a batch in flight"
    run.store.answer("A")
    await asyncio.wait_for(run.drain, 5)
    assert run.log == [("sent", "A"), ("answered", "A"), ("committed", "0:2")]


async def test_a_failed_batch_is_written_again_before_anything_after_it() -> None:
    run = start()
    run.source.deliver(TP0, records("A", 0))
    await until(lambda: run.log == [("sent", "A")], "A sent")
    run.store.failing_writes = 2  # Redis still away for A's first two retries
    run.store.fail("A")
    # B cannot be sent (the connection failed); it is written on its own, after A.
    run.source.deliver(TP1, records("B", 0))
    run.source.deliver(TP0, records("C", 2))
    await until(lambda: "C" in steps(run.log, "sent"), "C sent again after the failure")
    run.store.answer("C")
    await until(lambda: len(steps(run.log, "committed")) == 3, "C committed")
    assert run.log == [
        ("sent", "A"),
        ("failed", "A"),
        ("refused", "B"),
        ("written", "A"),
        ("committed", "0:2"),
        ("written", "B"),
        ("committed", "1:2"),
        ("sent", "C"),
        ("answered", "C"),
        ("committed", "0:4"),
    ]
    assert run.store.write_attempts == 4  # A three times, B once
    await run.finish()


async def test_a_batch_fetched_before_a_rebalance_is_dropped_unsent() -> None:
    run = start()
    run.source.deliver(TP0, records("A", 0))
    run.source.deliver(TP1, records("B", 0))
    run.source.deliver(TP0, records("C", 2))
    await until(lambda: run.source.fetched_all, "all three batches fetched")
    await let_run()
    assert steps(run.log, "sent") == ["A", "B"]
    # The group rebalances while C waits for room: faust seeks back to the committed
    # offsets, so C's records are read again and C itself must go nowhere.
    run.source.generation += 1
    run.store.answer("A")
    run.store.answer("B")
    run.source.deliver(TP0, records("D", 2))
    await until(lambda: "D" in steps(run.log, "sent"), "D sent")
    run.store.answer("D")
    await until(lambda: len(steps(run.log, "committed")) == 3, "D committed")
    assert steps(run.log, "sent") == ["A", "B", "D"]
    assert steps(run.log, "committed") == ["0:2", "1:2", "0:4"]
    await run.finish()


async def test_a_batch_waiting_to_be_written_alone_is_dropped_after_a_rebalance() -> None:
    run = start()
    run.source.deliver(TP0, records("A", 0))
    await until(lambda: run.log == [("sent", "A")], "A sent")
    run.store.failing_writes = -1  # Redis away: A is retried until the test lets it in
    run.store.fail("A")
    run.source.deliver(TP1, records("B", 0))
    await until(lambda: ("refused", "B") in run.log, "B refused, waiting for A")
    await until(lambda: run.store.write_attempts >= 2, "A retried")
    run.source.generation += 1  # partition 1 goes elsewhere while B waits
    run.store.failing_writes = 0
    await until(lambda: ("committed", "0:2") in run.log, "A written and committed")
    run.source.deliver(TP0, records("C", 2))
    await until(lambda: "C" in steps(run.log, "sent"), "C sent")
    run.store.answer("C")
    await until(lambda: ("committed", "0:4") in run.log, "C committed")
    assert "B" not in steps(run.log, "written")
    assert steps(run.log, "committed") == ["0:2", "0:4"]
    await run.finish()


async def test_records_fetched_as_a_rebalance_starts_are_not_batched() -> None:
    run = start()

    class Rebalancing(MemorySource):
        async def fetch(
            self, timeout: float, max_records: int
        ) -> Mapping[TopicPartition, Sequence[StoredRecord]]:
            fetched = await super().fetch(timeout, max_records)
            if fetched:
                self.generation += 1  # the rebalance began while this fetch was out
            return fetched

    source = Rebalancing(run.log)
    await run.finish()
    drain = asyncio.ensure_future(run.loop.drain(source, source))
    source.deliver(TP0, records("A", 0))
    await until(lambda: source.fetched_all, "A fetched")
    await let_run()
    source.stop()
    await asyncio.wait_for(drain, 5)
    assert run.log == []


async def test_given_up_batches_commit_nothing_and_drop_the_batch_behind_them() -> None:
    run = start(shutdown_timeout=0.05)
    run.source.deliver(TP0, records("A", 0))
    run.source.deliver(TP1, records("B", 0))
    run.source.deliver(TP0, records("C", 2))
    await until(lambda: run.source.fetched_all, "all three batches fetched")
    await let_run()
    assert steps(run.log, "sent") == ["A", "B"]
    # Redis never answers A and B; a rebalance or a stop waits shutdown_timeout for them.
    await asyncio.wait_for(run.loop.finish_in_hand(), 5)
    # C was collected before the give-up and is dropped: faust seeks back to the committed
    # offsets after the rebalance, so its records and A's are read again (here: as D and E).
    run.source.deliver(TP0, records("D", 0))
    await until(lambda: "D" in steps(run.log, "sent"), "D sent")
    run.store.answer("D")
    run.source.deliver(TP0, records("E", 2))
    await until(lambda: "E" in steps(run.log, "sent"), "E sent")
    run.store.answer("E")
    await until(lambda: ("committed", "0:4") in run.log, "E committed")
    # Nothing of A or B is committed. D follows a given-up batch still in hand, so it
    # commits nothing either; E, behind D, commits past both.
    assert run.log == [
        ("sent", "A"),
        ("sent", "B"),
        ("sent", "D"),
        ("answered", "D"),
        ("sent", "E"),
        ("answered", "E"),
        ("committed", "0:4"),
    ]
    await run.finish()


def test_each_row_carries_its_partition_and_offset() -> None:
    """The script's applied offsets (`stream.keys`, "Redelivery") need each row's offset: a
    rejected record is no row, and a partition's part with spend carries none."""
    writer = BatchWriter(MemoryStore([]), WorkerMetrics(CollectorRegistry()))
    batch = DecodedBatch()
    first = [*records("A", 10), StoredRecord(b"not json", 12), records("B", 13)[0]]
    _add_part(batch, "adpulse.events:0", first, writer.decode([r.value or b"" for r in first]))
    cost = make_event(
        "S0", EventType.SPEND, NOW, channel="search", cost_micros=1_000_000,
        start=NOW - timedelta(minutes=5), end=NOW,
    )  # fmt: skip
    second = [StoredRecord(cost.to_wire(), 3), *records("C", 4)]
    _add_part(batch, "adpulse.events:1", second, writer.decode([r.value or b"" for r in second]))
    assert batch.sources == [("adpulse.events:0", 0, [10, 11, 13])]
    assert name_of(batch) == "ABC"
    assert (len(batch.spend), len(batch.rejected)) == (1, 1)


class DecodeLog:
    """A `BatchWriter` stand-in for `_prepare`: records the values it was asked to decode."""

    def __init__(self) -> None:
        self.decoded: list[list[bytes]] = []

    def decode(self, values: Sequence[bytes]) -> DecodedBatch:
        self.decoded.append(list(values))
        return DecodedBatch()


def _prepared_before(batch: dict[TopicPartition, list[StoredRecord]]) -> tuple[Any, ...]:
    """What `_prepare` handed on before session 11's form: values with None as b"" decoded per
    partition, the values' count as the size, each partition's first and last as samples."""
    values: list[bytes] = []
    samples: list[bytes] = []
    decoded = []
    for records in batch.values():
        part = [record.value for record in records]
        if None in part:
            part = [value if value is not None else b"" for value in part]
        present = cast(list[bytes], part)
        values += present
        samples += (present[0], present[-1])
        decoded.append(present)
    offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
    return decoded, len(values), samples, offsets


@pytest.mark.parametrize("seed", range(30))
def test_prepare_hands_on_the_values_as_before(seed: int) -> None:
    draw = random.Random(seed)
    batch = {
        TopicPartition(TOPIC, partition): [
            StoredRecord(draw.choice([None, b"", b"x", bytes([draw.randrange(256)]) * 3]), i)
            for i in range(draw.randrange(1, 6))
        ]
        for partition in range(draw.randrange(1, 4))
    }
    writer = DecodeLog()
    loop = BatchLoop(WorkerSettings(batch_size=BATCH), cast(BatchWriter, writer))
    source = MemorySource([])
    prepared = loop._prepare(source, cast(dict[Any, list[Any]], batch))
    decoded, size, samples, offsets = _prepared_before(batch)
    assert writer.decoded == decoded
    assert all(type(value) is bytes for values in writer.decoded for value in values)
    assert (prepared.size, prepared.samples, prepared.offsets) == (size, samples, offsets)
