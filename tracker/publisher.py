"""Getting accepted events into Kafka without losing any.

Requests hand records to `EventPublisher.submit`, which only appends to memory: no request waits
for a broker round trip of its own. One flush task moves them on:

- broker up: everything pending goes out as one produce batch per partition, then the task
  waits for the acknowledgements (so a batch is in flight at most once, and order holds);
- a batch fails (broker gone, timeout): its records and everything after them go to the disk
  spool, in order, and the publisher is `down`;
- down: a probe reconnects every `probe_interval`, recreates the topics (a broker restarted
  empty has none), and the spool is replayed, oldest first, before anything new is sent
  straight again. While replaying, new records queue behind the spool.

A record is confirmed only by the broker's acknowledgement; one whose acknowledgement was lost is
sent again with the same bytes, so a duplicate always carries the same `event_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.producer.message_accumulator import BatchBuilder

from tracker.partitioner import murmur2_many
from tracker.spool import FRAME_OVERHEAD, DiskSpool, SpoolFull, SpoolRecord, frame_size

log = logging.getLogger(__name__)


class PublisherState(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    REPLAYING = "replaying"


# Looked up on every submit; an enum member costs 0.05 us more to find on its class.
_UP = PublisherState.UP


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    bootstrap: str
    topics: tuple[TopicSpec, ...]
    client_id: str = "adpulse-tracker"
    linger_ms: int = 5
    linger_records: int = 2000
    max_batch_bytes: int = 512 * 1024
    request_timeout_ms: int = 5000
    probe_interval: float = 0.5
    replay_chunk: int = 5000
    max_pending_bytes: int = 64 << 20


@dataclass(slots=True)
class PublisherStats:
    sent: int = 0
    produce_errors: int = 0
    spooled: int = 0
    replayed: int = 0
    refused: int = 0


class EventPublisher:
    def __init__(self, settings: PublisherSettings, spool: DiskSpool) -> None:
        check_batch_builder()
        self.settings = settings
        self.spool = spool
        self.stats = PublisherStats()
        # Down until the first probe connects; records queue in the spool meanwhile.
        self.state = PublisherState.DOWN
        self._pending: deque[SpoolRecord] = deque()
        self._pending_bytes = 0
        self._max_pending_bytes = settings.max_pending_bytes
        self._wakeup = asyncio.Event()
        self._closing = False
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._last_error = ""
        self._connected = False
        self._verified_connections: frozenset[object] = frozenset()
        self._send_started: float | None = None

    # requests

    def submit(self, records: Sequence[SpoolRecord]) -> bool:
        """Queue `records` for the broker; False (and nothing queued) when there is no room."""
        pending_bytes = self._pending_bytes + sum(map(frame_size, records))
        if not self._room_for(pending_bytes):
            self.stats.refused += len(records)
            return False
        self._pending.extend(records)
        self._pending_bytes = pending_bytes
        self._wakeup.set()
        return True

    def submit_one(self, record: SpoolRecord) -> bool:
        """`submit([record])`, for the pixel's single record: 0.2 us less."""
        topic, key, value = record
        pending_bytes = self._pending_bytes + FRAME_OVERHEAD + len(topic) + len(key) + len(value)
        if not self._room_for(pending_bytes):
            self.stats.refused += 1
            return False
        self._pending.append(record)
        self._pending_bytes = pending_bytes
        self._wakeup.set()
        return True

    def _room_for(self, pending_bytes: int) -> bool:
        """Whether `pending_bytes` may wait in memory: below the cap, and with the broker down,
        within what the spool can still take."""
        if self._closing or pending_bytes > self._max_pending_bytes:
            return False
        return self.state is _UP or self.spool.size_bytes + pending_bytes <= self.spool.max_bytes

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def accepting(self) -> bool:
        if self.state is PublisherState.UP:
            return self._pending_bytes < self.settings.max_pending_bytes
        return self.spool.size_bytes + self._pending_bytes < self.spool.max_bytes

    def readiness(self) -> dict[str, Any]:
        # A produce that waits longer than the broker's timeout means the broker is not
        # answering, even before the failure is confirmed and the records are spooled.
        waiting = self._send_started is not None and (
            time.monotonic() - self._send_started > self.settings.request_timeout_ms / 1000
        )
        return {
            "broker": "up" if self.state is PublisherState.UP and not waiting else "down",
            "state": str(self.state),
            "pending": len(self._pending),
            "spool_records": self.spool.records,
            "spool_bytes": self.spool.size_bytes,
            "spool_max_bytes": self.spool.max_bytes,
            "accepting": self.accepting,
            "last_error": self._last_error or None,
        }

    # lifecycle

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._run(), name="publisher-flush")

    async def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state is PublisherState.UP and self._producer is not None:
                return True
            await asyncio.sleep(0.02)
        return False

    async def close(self, timeout: float = 15.0) -> None:
        """Refuse new records, send or spool everything pending, stop the producer."""
        self._closing = True
        self._wakeup.set()
        if self._flusher is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._flusher), timeout)
            except TimeoutError:
                log.error("publisher did not finish within %.0f s; spooling the rest", timeout)
                self._flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flusher
        if self._pending:
            await self._spool_pending()
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._producer.stop()
            self._producer = None
        log.info(
            "publisher closed: %d sent, %d spooled, %d still in the spool for the next start",
            self.stats.sent,
            self.stats.spooled,
            self.spool.records,
        )

    # the flush task

    async def _run(self) -> None:
        while True:
            if (
                self._closing
                and not self._pending
                and (self.state is PublisherState.DOWN or self.spool.empty)
            ):
                return
            if self.state is PublisherState.UP:
                if not self._pending:
                    await self._wait_for_work()
                    continue
                if len(self._pending) < self.settings.linger_records and not self._closing:
                    # Let a batch gather: a produce request per few records costs more CPU
                    # than the records themselves.
                    await asyncio.sleep(self.settings.linger_ms / 1000)
                await self._send_pending()
            else:
                if self._pending:
                    await self._spool_pending()
                needs_probe = self._producer is None or self.state is PublisherState.DOWN
                if needs_probe and not await self._probe():
                    if self._closing:
                        return
                    await self._wait_for_work(self.settings.probe_interval)
                    continue
                await self._replay_chunk()

    async def _wait_for_work(self, timeout: float | None = None) -> None:
        self._wakeup.clear()
        if self._pending or self._closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _send_pending(self) -> None:
        records = list(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        failed = await self._send(records)
        if failed:
            self._go_down()
            # Failed records are older than anything that arrived meanwhile: they go first.
            self._pending.extendleft(reversed(failed))
            self._pending_bytes = sum(map(frame_size, self._pending))
            await self._spool_pending()

    async def _replay_chunk(self) -> None:
        records, cursor = await asyncio.to_thread(self.spool.read, self.settings.replay_chunk)
        if not records:
            self.state = PublisherState.UP
            log.info("spool drained: sending straight to the broker again")
            return
        failed = await self._send(records)
        if failed:
            # Nothing moves: the whole chunk is read again after the next probe.
            self._go_down()
            return
        await asyncio.to_thread(self.spool.commit, cursor, len(records))
        self.stats.replayed += len(records)
        if self.spool.empty and not self._pending:
            self.state = PublisherState.UP
            log.info("spool drained: sending straight to the broker again")

    async def _spool_pending(self) -> None:
        records = list(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        try:
            await asyncio.to_thread(self.spool.append, records)
        except SpoolFull:
            # submit() keeps this from happening; if it does, say exactly what was lost.
            log.critical("spool full: %d accepted records could not be kept", len(records))
            raise
        self.stats.spooled += len(records)

    async def _send(self, records: list[SpoolRecord]) -> list[SpoolRecord]:
        """Send `records`; return those not acknowledged, in their original order."""
        producer = self._producer
        if producer is None:
            return records
        sends: list[tuple[asyncio.Future[Any], list[int]]] = []
        self._send_started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.request_timeout_ms / 1000 * 2):
                batches = self._build_batches(producer, records)
                for (topic, partition), (batch, indices) in batches:
                    future = await producer.send_batch(batch, topic, partition=partition)
                    sends.append((future, indices))
                await asyncio.gather(*(future for future, _ in sends), return_exceptions=True)
        except (KafkaError, OSError, TimeoutError) as error:
            self._note_error(error)
        finally:
            self._send_started = None
        acknowledged = 0
        for future, indices in sends:
            if future.done() and not future.cancelled() and future.exception() is None:
                acknowledged += len(indices)
            elif future.done() and not future.cancelled():
                self._note_error(future.exception())
        if acknowledged == len(records):
            if await self._same_broker():
                self.stats.sent += acknowledged
                return []
            log.warning(
                "the broker came back without its topics (restarted empty); "
                "sending the last %d records again",
                len(records),
            )
            self.stats.produce_errors += 1
            return records
        # Some batch failed (rare): work out which records, keeping their order.
        confirmed: set[int] = set()
        for future, indices in sends:
            if future.done() and not future.cancelled() and future.exception() is None:
                confirmed.update(indices)
        self.stats.sent += len(confirmed)
        self.stats.produce_errors += 1
        return [record for index, record in enumerate(records) if index not in confirmed]

    def _build_batches(
        self, producer: AIOKafkaProducer, records: list[SpoolRecord]
    ) -> list[tuple[tuple[str, int], tuple[Any, list[int]]]]:
        """One or more record batches per partition, each with the indices of its records."""
        now_ms = int(time.time() * 1000)
        counts = self._partitions
        # Kafka's default partitioner, so every client puts a key in the same place. Hashing
        # the keys together is a tenth of hashing them one by one (tracker.partitioner).
        hashes = murmur2_many([record[1] for record in records])
        by_target: dict[tuple[str, int], list[int]] = {}
        for index, record, hashed in zip(range(len(records)), records, hashes, strict=True):
            topic = record[0]
            # `partition_of`, written out: a call per record costs 0.1 us.
            target = (topic, (hashed & 0x7FFFFFFF) % counts.get(topic, 1))
            indices = by_target.get(target)
            if indices is None:
                by_target[target] = [index]
            else:
                indices.append(index)
        batches: list[tuple[tuple[str, int], tuple[Any, list[int]]]] = []
        for target, indices in by_target.items():
            start = 0
            while start < len(indices):
                batch = producer.create_batch()
                taken = _fill(batch, records, indices, start, now_ms)
                batches.append((target, (batch, indices[start : start + taken])))
                start += taken
        return batches

    def _connections(self) -> frozenset[object]:
        # aiokafka has no public hook for "the connection broke and came back"; its client keeps
        # the live connections in `_conns`. A different set after a produce cycle means the
        # broker may have restarted, and a broker restarted empty (Tansu keeps nothing) may have
        # acknowledged records for a topic it no longer has. aiokafka retries internally across
        # the restart, so the failure never reaches us as an error.
        client = getattr(self._producer, "client", None)
        connections = getattr(client, "_conns", None)
        return frozenset(connections.values()) if isinstance(connections, dict) else frozenset()

    async def _same_broker(self) -> bool:
        """False when the connection changed and the topics had to be created again."""
        if self._connections() == self._verified_connections:
            return True
        try:
            created = await self._ensure_topics()
        except (KafkaError, OSError, TimeoutError) as error:
            self._note_error(error)
            return False
        self._verified_connections = self._connections()
        return not created

    def _go_down(self) -> None:
        if self.state is PublisherState.UP:
            log.warning(
                "records not acknowledged (%s): spooling to disk until the broker is back",
                self._last_error or "the broker restarted",
            )
        self.state = PublisherState.DOWN

    def _note_error(self, error: BaseException | None) -> None:
        if error is not None:
            self._last_error = f"{type(error).__name__}: {error}"

    async def _probe(self) -> bool:
        """Connect, make sure the topics exist; True when the broker takes records again."""
        try:
            await self._ensure_topics()
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.settings.bootstrap,
                    client_id=self.settings.client_id,
                    acks="all",
                    linger_ms=self.settings.linger_ms,
                    max_batch_size=self.settings.max_batch_bytes,
                    request_timeout_ms=self.settings.request_timeout_ms,
                    # Tansu has no InitProducerId; duplicates are handled by event_id instead.
                    enable_idempotence=False,
                )
                await producer.start()
                self._producer = producer
            for spec in self.settings.topics:
                partitions = await self._producer.partitions_for(spec.name)
                self._partitions[spec.name] = max(1, len(partitions))
        except (KafkaError, OSError, TimeoutError) as error:
            self._note_error(error)
            if self._producer is not None and not self._connected:
                with contextlib.suppress(KafkaError, OSError):
                    await self._producer.stop()
                self._producer = None
            return False
        if not self._connected:
            log.info("connected to the broker at %s", self.settings.bootstrap)
        self._connected = True
        self._verified_connections = self._connections()
        self.state = PublisherState.REPLAYING
        return True

    async def _ensure_topics(self) -> bool:
        """Create the topics the broker lacks; True if any was missing."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.bootstrap,
            client_id=f"{self.settings.client_id}-admin",
            request_timeout_ms=self.settings.request_timeout_ms,
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [spec for spec in self.settings.topics if spec.name not in existing]
            if missing:
                new_topics = [
                    NewTopic(
                        spec.name,
                        spec.partitions,
                        1,
                        topic_configs=(
                            {"retention.ms": str(spec.retention_ms)} if spec.retention_ms else {}
                        ),
                    )
                    for spec in missing
                ]
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new_topics)
                log.info("created topics %s", ", ".join(spec.name for spec in missing))
            return bool(missing)
        finally:
            await admin.close()


# Records carry no Kafka headers; the record batch builder takes a list and only reads it.
_NO_HEADERS: Final[list[tuple[str, bytes]]] = []


def _fill(
    batch: BatchBuilder, records: list[SpoolRecord], indices: list[int], start: int, now_ms: int
) -> int:
    """Append `records[i]` for `i` in `indices[start:]` until `batch` is full; how many went in.

    aiokafka's `BatchBuilder.append` checks its state and serializers and passes everything by
    keyword for each record (0.46 us); the record batch builder it wraps, in C, does the work.
    So records go straight to that builder, and the count it keeps is set once at the end.
    `check_batch_builder` confirms at start-up that aiokafka is still built this way.
    """
    builder = batch._builder
    append = builder.append
    offset = 0
    for index in indices[start:]:
        record = records[index]
        # The first record always fits; a later one that does not closes the batch.
        if append(offset, now_ms, record[1], record[2], _NO_HEADERS) is None:
            break
        offset += 1
    batch._relative_offset = offset
    if start + offset < len(indices):
        batch.close()
    return offset


def check_batch_builder() -> None:
    """Fail at start-up if aiokafka's BatchBuilder no longer wraps a record batch builder as
    `_fill` expects (a new aiokafka release), rather than lose or miscount records later."""
    batch = BatchBuilder(1024, 0)
    builder = getattr(batch, "_builder", None)
    if builder is None or not hasattr(builder, "append") or batch.record_count() != 0:
        raise RuntimeError(
            "aiokafka's BatchBuilder has changed (no _builder): tracker.publisher._fill needs "
            "updating for this aiokafka version"
        )
    batch._relative_offset = 1
    if batch.record_count() != 1:
        raise RuntimeError(
            "aiokafka's BatchBuilder no longer counts records in _relative_offset: "
            "tracker.publisher._fill needs updating for this aiokafka version"
        )
