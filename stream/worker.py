"""`adpulse worker`: Kafka -> Redis in batches, on faust-streaming's lifecycle and rebalancing.

faust runs the process: the consumer group, its rebalances (pause, wait for the batch in hand,
commit, seek to the committed offsets, resume), signals and shutdown. What it does not run is
its per-event path. faust's Fetcher hands every record to the Conductor one at a time, and each
hand-off races the record against the flow-control event in `Service.wait_first`, which creates
two tasks per record; then a queue per agent, an Event object and ack bookkeeping per record.
Measured with bench/worker_throughput.py (2-CPU EPYC VM, worker pinned to one CPU, Tansu and
redis-server on the other, 500,000 events of the realistic mix): a faust agent applying each
event on its own reached 1,000-1,500 events/s; one batching with faust's own
`stream.take(5000, within=0.1)` 11,000-14,600 events/s; this loop 152,000-181,000 events/s
on a quiet machine (first counter to all counted): per event about 3.5 us of the worker's CPU
and 4-4.5 us of redis-server's, which overlap.

So `BatchConsumer` replaces the Fetcher's drain loop (`Consumer._drain_messages`, which faust
starts and stops around every rebalance) with `BatchLoop.drain`: fetch raw aiokafka records
from the consumer thread in batches, decode them straight from bytes (`stream.batch`), apply
each batch with one Lua call (`KpiStore.send_decoded`, pipelined in order), and only then
commit the batch's offsets. One loop per process, committing in fetch order: what an agent
with concurrency=1 guarantees (faust issue #606: more can commit past a record in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import faust
from aiokafka.consumer.fetcher import PartitionRecords
from faust.transport.drivers import aiokafka as faust_aiokafka
from prometheus_client import REGISTRY, start_http_server

from stream.batch import DecodedBatch
from stream.batch_writer import BatchWriter, Sent
from stream.store import KpiStore
from stream.worker_metrics import WorkerMetrics
from stream.worker_settings import WorkerSettings

logger = logging.getLogger(__name__)

TP = Any
"""faust's TP (an aiokafka TopicPartition): `.topic`, `.partition`."""
Record = Any
"""A record of an aiokafka record batch (not a ConsumerRecord, see `_batch_record`): `.value`
(bytes or None), `.offset`."""

IDLE_FETCH_SECONDS = 1.0


@dataclass(slots=True)
class PreparedBatch:
    """A decoded batch, split into its clicks, redemptions and conversions (`batch`) and its
    spend (`spend`), and what committing it takes."""

    batch: DecodedBatch
    spend: DecodedBatch
    size: int
    offsets: dict[TP, int]
    samples: list[bytes]
    generation: int
    give_ups: int


IN_FLIGHT: Final = 2
"""Batches on their way to Redis at once."""


@dataclass(slots=True)
class InHand:
    """A batch being written and committed; `alone` if nothing may be sent until it is done."""

    task: asyncio.Task[None]
    alone: bool


class BatchLoop:
    """Collect and decode a batch while earlier ones are written, then write and commit it.

    Batches are sent in fetch order on one connection of their own (`store.OrderedCalls`),
    up to IN_FLIGHT at a time without waiting for each other's answers, so a partition's events
    reach the script in order and redis-server starts on the next script the moment the
    previous one ends, while the next batch is collected and decoded here. With one batch at a
    time, redis-server was idle about 40 % of the time (bench/worker_throughput.py): each batch
    was encoded, sent, answered and committed before the next was sent.

    Each batch commits its offsets once it is written and the batch before it has committed,
    so a committed offset never passes an unwritten record. A batch whose sending failed is
    written alone, with retries (`BatchWriter.write`): only after every batch before it, and
    nothing is sent until it is written. A batch's spend records are written with a script call
    of their own (their stored records are read before it runs), after the batch before; each
    call is atomic and skips what it applied already, so a batch retried after a crash between
    the two is still counted once.
    """

    def __init__(self, settings: WorkerSettings, writer: BatchWriter) -> None:
        self.settings = settings
        self.writer = writer
        self._in_hand: list[InHand] = []
        """The batches being written and committed, oldest first."""
        self._give_ups = 0
        """Batches given up on; a batch collected before one was given up is dropped too."""

    async def drain(self, consumer: BatchConsumer, fetcher: Any) -> None:
        """Run until the consumer or faust's Fetcher stops (faust restarts it after rebalances)."""
        while not (consumer.should_stop or fetcher.should_stop):
            records = await self._collect(consumer)
            if not records:
                continue
            prepared = self._prepare(consumer, records)
            await self._make_room()
            if self._stale(consumer, prepared):
                continue
            sent = None
            if len(prepared.batch):
                if not self._in_hand:
                    self.writer.resume_sending()
                sent = await self.writer.send(prepared.batch)
            if sent is None and len(prepared.batch):
                # Written alone, after every batch before it.
                while self._in_hand:
                    await self._wait_in_hand(self._in_hand[0].task)
                if self._stale(consumer, prepared):
                    continue
            previous = self._in_hand[-1].task if self._in_hand else None
            task = asyncio.ensure_future(self._write_and_commit(consumer, prepared, sent, previous))
            self._in_hand.append(InHand(task, alone=sent is None and len(prepared.batch) > 0))
        while self._in_hand:
            await self._wait_in_hand(self._in_hand[0].task)

    def _stale(self, consumer: BatchConsumer, prepared: PreparedBatch) -> bool:
        # A rebalance or a given-up batch came between: faust seeks every partition back to
        # its committed offset, so these records are read again.
        return (
            prepared.give_ups != self._give_ups
            or prepared.generation != consumer.app.consumer_generation_id
        )

    async def _make_room(self) -> None:
        """Wait until fewer than IN_FLIGHT batches are in hand and none is written alone."""
        while self._in_hand and (
            len(self._in_hand) >= IN_FLIGHT or any(entry.alone for entry in self._in_hand)
        ):
            await self._wait_in_hand(self._in_hand[0].task)

    async def _wait_in_hand(self, task: asyncio.Task[None]) -> None:
        try:
            # Shielded: a stop or rebalance cancels this loop, not the batch being written;
            # `finish_in_hand` waits for it (and gives up on it after the timeout).
            await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        finally:
            if task.done():
                self._in_hand = [entry for entry in self._in_hand if entry.task is not task]

    async def finish_in_hand(self) -> None:
        """Wait for the batches being written to be written and committed; cancel them after
        the timeout. A cancelled batch has committed nothing, so its records are read again.
        """
        tasks = [entry.task for entry in self._in_hand if not entry.task.done()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout)
        if pending:
            logger.warning(
                "%d batch(es) in hand not written within %.0f s (Redis down?); "
                "giving up on them, nothing of them is committed",
                len(pending),
                self.settings.shutdown_timeout,
            )
            self._give_ups += 1
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    async def _collect(self, consumer: BatchConsumer) -> dict[TP, list[Record]]:
        """Up to batch_size records, waiting at most batch_within once the first is in.

        Empty when a rebalance started meanwhile: those records are read again from the
        committed offsets once faust has sought there.
        """
        app = consumer.app
        generation = app.consumer_generation_id
        loop = asyncio.get_running_loop()
        batch: dict[TP, list[Record]] = {}
        count = 0
        deadline: float | None = None
        while count < self.settings.batch_size:
            timeout = IDLE_FETCH_SECONDS if deadline is None else deadline - loop.time()
            if timeout <= 0:
                break
            fetched = await consumer.fetch(timeout, self.settings.batch_size - count)
            if consumer.should_stop or app.consumer_generation_id != generation:
                return {}
            for tp, records in fetched.items():
                if records:
                    batch.setdefault(tp, []).extend(records)
                    count += len(records)
            if count and deadline is None:
                deadline = loop.time() + self.settings.batch_within
            if deadline is None and not fetched:
                return {}
        return batch

    def _prepare(self, consumer: BatchConsumer, batch: dict[TP, list[Record]]) -> PreparedBatch:
        values: list[bytes] = []
        samples: list[bytes] = []
        offsets: dict[TP, int] = {}
        for tp, records in batch.items():
            part = [record.value for record in records]
            if None in part:
                part = [value if value is not None else b"" for value in part]
            values += part
            samples += (part[0], part[-1])
            offsets[tp] = records[-1].offset + 1
        decoded = self.writer.decode(values)
        spend, decoded.spend = DecodedBatch(spend=decoded.spend), []
        return PreparedBatch(
            batch=decoded,
            spend=spend,
            size=len(values),
            offsets=offsets,
            samples=samples,
            generation=consumer.app.consumer_generation_id,
            give_ups=self._give_ups,
        )

    async def _write_and_commit(
        self,
        consumer: BatchConsumer,
        prepared: PreparedBatch,
        sent: Sent | None,
        previous: asyncio.Task[None] | None,
    ) -> None:
        batch, samples = prepared.batch, prepared.samples
        size = prepared.size - len(prepared.spend)
        written = not batch or (
            sent is not None and await self.writer.settle(sent, batch, size, samples)
        )
        if previous is not None:
            await asyncio.wait([previous])
            if previous.cancelled():
                return  # given up on: nothing after it is committed, all is read again
            previous.result()
        if not written:
            # Its answer failed: written again, after the batch before. On a lost connection
            # every batch sent after it failed too and comes through here, in order. (An
            # error answer of the script fails its batch only: one sent after it may then
            # apply first. Only a bug or Redis refusing writes (OOM) answers that way.)
            await self.writer.write(batch, size, samples)
        if prepared.spend:
            # Spend is independent of the other events (its own counter, its own ids), but a
            # record replaces an earlier one of the same id: after the batch before, in order.
            await self.writer.write(prepared.spend, len(prepared.spend))
        # Committed only now that the batch is in Redis. A commit refused because the group
        # rebalanced meanwhile is harmless: the next owner reads those records again and the
        # script skips them as duplicates.
        offsets = prepared.offsets
        if not await consumer.commit_offsets(offsets):
            logger.info("offsets %s not committed (rebalanced meanwhile)", _describe(offsets))
        self._update_lag(consumer, offsets)

    def _update_lag(self, consumer: BatchConsumer, offsets: dict[TP, int]) -> None:
        gauge = self.writer.metrics.consumer_lag
        for tp, position in offsets.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                gauge.labels(str(tp.partition)).set(max(0, highwater - position))

    def forget(self, revoked: Set[TP]) -> None:
        gauge = self.writer.metrics.consumer_lag
        for tp in revoked:
            with contextlib.suppress(KeyError):
                gauge.remove(str(tp.partition))


def _describe(offsets: dict[TP, int]) -> str:
    return ",".join(f"{tp.partition}:{offset}" for tp, offset in sorted(offsets.items()))


def _partitions(tps: Set[TP]) -> str:
    return ",".join(str(tp.partition) for tp in sorted(tps)) or "none"


def _batch_record(self: PartitionRecords, tp: TP, record: Record) -> Record:
    """The record as the record batch holds it.

    aiokafka wraps every fetched record into a ConsumerRecord with its topic, partition, sizes
    and a tuple of its headers: 1.9 us a record against 0.8 for handing the batch's own record
    on (timeit over 5,000 records of the benchmark's mix), of a 6.7 us budget per event. The
    worker reads `.value` and `.offset` only, which both have.
    """
    return record


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, with the aiokafka consumer's fetch wait from the settings."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust passes fetch_max_wait_ms=1500 and has no setting for it. On the Tansu broker a
        # fetch that finds no new record is held for half that (750 ms) and is not answered
        # early when records arrive meanwhile; aiokafka sends one fetch per broker at a time,
        # so at any rate those records waited up to 750 ms (measured: p50 490 ms, p99 860 ms
        # event-to-counter at 100 and at 10,000 events/s). Real Kafka answers as soon as data
        # arrives, where a short wait only means more empty fetches while idle. The fetcher
        # reads the value when the consumer starts, which comes after this.
        wait = cast(WorkerApp, self.app).batch_loop.settings.fetch_wait
        consumer._fetch_max_wait_ms = max(1, round(wait * 1000))
        return consumer


class BatchConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with the per-record drain loop replaced by `BatchLoop`."""

    @property
    def batch_loop(self) -> BatchLoop:
        return cast(WorkerApp, self.app).batch_loop

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        await self.batch_loop.drain(self, fetcher)

    async def fetch(self, timeout: float, max_records: int) -> dict[TP, list[Record]]:
        """Raw records of the active (assigned, not paused) partitions, at most `max_records`.

        faust's `_wait_next_records` with a record limit: the consumer thread's fetch call
        takes one, the faust wrapper always asks for `broker_max_poll_records`.
        """
        if not self.flow_active:
            await self.wait(self.can_resume_flow)  # type: ignore[arg-type]
            return {}
        active = self._get_active_partitions()
        if not active:
            await self.sleep(min(timeout, 0.2))
            return {}
        thread = self._thread
        records: dict[TP, list[Record]] = await thread.call_thread(
            thread._fetch_records,
            thread._ensure_consumer(),
            active,
            timeout=timeout,
            max_records=max_records,
        )
        return records

    async def commit_offsets(self, offsets: dict[TP, int]) -> bool:
        """Commit exactly these offsets (of partitions still assigned); False if refused."""
        committed: bool = await self._commit(offsets)
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
        await super().on_partitions_assigned(assigned, generation_id)


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer


class WorkerApp(faust.App):
    batch_loop: BatchLoop

    def _new_transport(self) -> BatchTransport:
        return BatchTransport(self.conf.broker_consumer, self)


def build_app(settings: WorkerSettings, data_dir: Path, writer: BatchWriter) -> WorkerApp:
    """The faust app: one group, the events topic subscribed, no per-event agent.

    Settings that matter on the embedded Tansu broker: a join takes about half the session
    timeout there, so the session is short (3 s: joins in about 1.5 s, and a killed worker's
    partitions move within 3 s); no leader topic (faust would create
    ``<group>-__assignor-__leader``, unused here); no web server (two workers on one machine
    would clash on its port; /metrics is served by prometheus-client).
    """
    brokers = [f"kafka://{host.strip()}" for host in settings.kafka.split(",") if host.strip()]
    session = settings.session_timeout
    app = WorkerApp(
        settings.group,
        broker=brokers,
        autodiscover=False,
        datadir=str(data_dir),
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session,
        broker_heartbeat_interval=session / 4,
        broker_rebalance_timeout=max(session * 2, settings.shutdown_timeout + session),
        broker_max_poll_records=settings.batch_size,
        stream_wait_empty=True,
    )
    app.batch_loop = BatchLoop(settings, writer)
    app.topics.add(app.topic(settings.topic, key_serializer="raw", value_serializer="raw"))
    return app


def hand_on_batch_records() -> None:
    """Make aiokafka hand fetched records on as their batch holds them (`_batch_record`).

    Class-wide, so only in the worker process, which consumes nothing else. Checked, so an
    aiokafka that renames the method fails here instead of wrapping records again unnoticed.
    """
    if not callable(getattr(PartitionRecords, "_consumer_record", None)):
        raise RuntimeError(
            "aiokafka has no PartitionRecords._consumer_record: see stream/worker.py"
        )
    PartitionRecords._consumer_record = _batch_record


def run(settings: WorkerSettings, loop: asyncio.AbstractEventLoop) -> int:
    """Run the worker until SIGTERM/SIGINT; the exit code."""
    hand_on_batch_records()
    try:
        start_http_server(settings.port, addr=settings.host, registry=REGISTRY)
    except OSError as error:
        logger.error("cannot serve /metrics on %s:%d: %s", settings.host, settings.port, error)
        return 1
    metrics = WorkerMetrics(REGISTRY)
    store = KpiStore.from_url(
        settings.redis_url, retention=settings.retention, max_channels=settings.max_channels
    )
    writer = BatchWriter(store, metrics)
    temporary = settings.data_dir is None
    data_dir = settings.data_dir or Path(tempfile.mkdtemp(prefix="adpulse-worker-"))
    app = build_app(settings, data_dir, writer)
    logger.info(
        "worker starting: kafka=%s topic=%s group=%s redis=%s batch=%d/%.3fs fetch-wait=%.3fs "
        "metrics=%s:%d",
        settings.kafka,
        settings.topic,
        settings.group,
        _without_password(settings.redis_url),
        settings.batch_size,
        settings.batch_within,
        settings.fetch_wait,
        settings.host,
        settings.port,
    )
    worker = faust.Worker(
        app,
        loop=loop,
        quiet=True,
        override_logging=False,
        redirect_stdouts=False,
        loglevel=settings.log_level,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else 1
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0  # pragma: no cover - execute_from_commandline always raises


def _without_password(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{separator}{credentials.split(':')[0]}:***@{host}"


__all__: Sequence[str] = ("BatchConsumer", "BatchLoop", "WorkerApp", "build_app", "run")
