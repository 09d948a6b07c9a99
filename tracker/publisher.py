"""Getting accepted events into Kafka without losing any.

Requests hand records to `EventPublisher.submit`, which only appends them to this turn of the
event loop's group. At the end of the turn, before any response of it leaves, `commit` writes
the group to the write-ahead log (`tracker.wal`) with one write: a record answered 2xx is on
disk. If the log cannot take the group (disk full, I/O error), `commit` says so and the HTTP
layer answers those requests 503 instead. One flush task moves the logged records on:

- broker up: the records committed since the last send go out from memory as one produce batch
  per partition, then the task waits for the acknowledgements (a batch is in flight at most
  once, so order holds) and moves the log's acknowledged position past them. With `machine`
  durability records join the memory queue only once their fsync is done, in write order; a
  group whose fsync fails is answered 503 and never sent (the log skips its range);
- a batch fails (broker gone, timeout): the publisher is `down`; the records stay in the log;
- down: a probe reconnects every `probe_interval`, recreates the topics (a broker restarted
  empty has none), and the log is replayed from the acknowledged position, oldest first, up to
  where the memory queue begins: records committed while replaying are queued in memory too,
  so that the replay ends even while requests keep coming; then records go out from memory
  again. When the memory queue outgrows its cap, the publisher reads from the log instead
  (`replaying`), so memory never refuses a record.
- moved (`move_to`: the tracker's `--kafka-file`, read again on SIGHUP): between two steps,
  so with nothing in flight, the flush task leaves its broker as if it had failed and probes
  the new one, which gets the log from the acknowledged position; the old producer stops in
  the background. Requests are accepted into the log throughout.

Acknowledged segments are deleted and the position saved now and then; a crash replays what was
acknowledged after the last save again, with the same bytes, so a duplicate always carries the
same `event_id`. Every spool I/O error is caught, logged once with its path and cause, counted,
shown on /readyz, and retried: the publisher recovers on its own when the disk does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import logging
import operator
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from tracker.framework import fill_batch, live_connections
from tracker.partitioner import murmur2_many
from tracker.spool import FRAME_OVERHEAD, SpoolIOError, SpoolRecord, frame_size
from tracker.wal import GROUP_OVERHEAD, Durability, WriteAheadLog

log = logging.getLogger(__name__)

# The spool's file operations, each a value of the `operation` label of its error counter.
SPOOL_OPERATIONS: Final = ("create", "write", "fsync", "read", "cursor", "remove")
# Operations whose failure means requests cannot be kept: /readyz says not accepting.
_WRITING: Final = frozenset({"create", "write", "fsync"})
# Seconds between two saves of the acknowledged position (and deletions of old segments).
MAINTAIN_INTERVAL: Final = 0.5


class PublisherState(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    REPLAYING = "replaying"


# A record's topic, read in C over a whole produce cycle.
_TOPIC: Final = operator.itemgetter(0)

# Looked up on every commit: a module global is found faster than a member on its class.
_UP = PublisherState.UP
_DOWN = PublisherState.DOWN


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
    logged: int = 0
    replayed: int = 0
    # Records refused: the log was full (at submit) or could not be written (at commit).
    refused: int = 0
    task_errors: int = 0


@dataclass(frozen=True, slots=True)
class _Synced:
    """What one fsync covers: the records written since the previous one, their bytes, and
    their range of the log."""

    records: list[SpoolRecord]
    size: int
    start: int
    end: int


# What `commit` returns: True (the turn's records are kept), False (they are not: answer 503),
# or a future of either for `machine` durability, done once the fsync is.
Commit = bool | asyncio.Future[bool]


class EventPublisher:
    def __init__(self, settings: PublisherSettings, spool: WriteAheadLog) -> None:
        self.settings = settings
        self.spool = spool
        self.stats = PublisherStats()
        self.spool_errors: defaultdict[str, int] = defaultdict(
            int, dict.fromkeys(SPOOL_OPERATIONS, 0)
        )
        # Operations failing now, with the error a person reads on /readyz.
        self._failing: dict[str, str] = {}
        # Down until the first probe connects; records wait in the log meanwhile.
        self.state = PublisherState.DOWN
        # This turn's records, and their bytes in the log (a group frame's header included).
        self._turn: list[SpoolRecord] = []
        self._turn_bytes = GROUP_OVERHEAD
        # Bytes the log may still take.
        self._room = spool.max_bytes - spool.size_bytes
        # Called on a turn's first record; the HTTP server sets it to its own end of turn,
        # which commits before it answers.
        self.schedule_commit: Callable[[], None] = self._schedule_own_commit
        # Commits asked for so far: a turn of the event loop that asked for one has ended once
        # this has moved on (the pixels' received_at is kept for the turn).
        self.turns = 0
        # Records kept in the log, in log order, to be sent from memory: up to `_pending_end`,
        # from `_queued_from` on while replaying (the log holds those before it).
        self._pending: deque[SpoolRecord] = deque()
        self._pending_bytes = 0
        self._pending_end = spool.end
        self._queued_from = spool.end
        self._max_pending_bytes = settings.max_pending_bytes
        self._wakeup = asyncio.Event()
        # Set only by `close`: what the waits between broker probes end early on, since every
        # commit sets `_wakeup` and a probe per turn would storm a broker that is down.
        self._closed = asyncio.Event()
        self._closing = False
        self._producer: AIOKafkaProducer | None = None
        # Bootstrap servers to move to (`move_to`), taken by the flush task between two steps;
        # and the stops of producers left behind, kept until done.
        self._move_to: str | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._moved_from: str | None = None
        self._partitions: dict[str, int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._last_error = ""
        # A failed replay chunk has been logged since the last catch-up.
        self._replay_failed = False
        self._connected = False
        self._verified_connections: frozenset[object] = frozenset()
        self._send_started: float | None = None
        self._saved_position = -1
        self._maintained_at = 0.0
        self._probed_log_at = 0.0
        # `machine` durability: one thread fsyncs, one group after another.
        self._sync_thread: ThreadPoolExecutor | None = None
        # The group being fsynced, and the one that gathers the turns meanwhile.
        self._syncing: asyncio.Future[bool] | None = None
        self._next_sync: asyncio.Future[bool] | None = None
        # The records written since the last fsync started, their bytes, and where they start:
        # they are queued for sending only once their fsync succeeds (a failed one answers
        # 503), in the order the fsyncs finish, which is the order they were written.
        self._machine = spool.durability is Durability.MACHINE
        self._unsynced_records: list[SpoolRecord] = []
        self._unsynced_bytes = 0
        self._sync_start = spool.end

    # requests

    def submit(self, records: Sequence[SpoolRecord]) -> bool:
        """Add `records` to this turn's group; False (and nothing added) when the log is full."""
        turn_bytes = self._turn_bytes + sum(map(frame_size, records))
        if turn_bytes > self._room or self._closing:
            self.stats.refused += len(records)
            return False
        if not self._turn:
            self.schedule_commit()
        self._turn.extend(records)
        self._turn_bytes = turn_bytes
        return True

    def submit_one(self, record: SpoolRecord) -> bool:
        """`submit([record])` for the pixel's single record, without the list and the map."""
        topic, key, value = record
        turn_bytes = self._turn_bytes + FRAME_OVERHEAD + len(topic) + len(key) + len(value)
        if turn_bytes > self._room or self._closing:
            self.stats.refused += 1
            return False
        turn = self._turn
        if not turn:
            self.schedule_commit()
        turn.append(record)
        self._turn_bytes = turn_bytes
        return True

    def commit(self) -> Commit:
        """Write this turn's records to the log with one write; see `Commit`."""
        self.turns += 1
        records = self._turn
        if not records:
            return True
        self._turn = []
        turn_bytes = self._turn_bytes
        self._turn_bytes = GROUP_OVERHEAD
        try:
            self.spool.write_group(records)
        except SpoolIOError as error:
            self._spool_failed(error)
            self.stats.refused += len(records)
            return False
        if self._failing:
            self._spool_recovered("create", "write")
        self.stats.logged += len(records)
        # The group took at most `turn_bytes`; what it took exactly is in the log's size.
        self._room = self.spool.max_bytes - self.spool.size_bytes
        if self._machine:
            return self._sync(records, turn_bytes)
        if self.state is not _DOWN:
            self._queue(records, turn_bytes, self.spool.end)
        self._wakeup.set()
        return True

    def _queue(self, records: list[SpoolRecord], size: int, end: int) -> None:
        """Hold records kept in the log, up to `end`, for sending from memory."""
        if self._pending_bytes + size > self._max_pending_bytes:
            # The broker is slower than the requests: read from the log rather than hold more
            # in memory. Nothing in memory is sent now, so nothing may be acknowledged for it;
            # the replay reads up to `end`, and the memory queue starts again there.
            self._pending.clear()
            self._pending_bytes = 0
            self._pending_end = self._queued_from = end
            if self.state is _UP:
                self.state = PublisherState.REPLAYING
                log.warning("the broker is behind: sending from the log until it catches up")
        else:
            self._pending.extend(records)
            self._pending_bytes += size
            self._pending_end = end

    def _schedule_own_commit(self) -> None:
        asyncio.get_running_loop().call_soon(self.commit)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def backlog(self) -> int:
        """Records in the log waiting for the broker: while it is up, those not yet acknowledged
        are in memory, in flight, and counted as `pending` instead."""
        return 0 if self.state is _UP else self.spool.records

    @property
    def accepting(self) -> bool:
        return self._room > GROUP_OVERHEAD and _WRITING.isdisjoint(self._failing)

    def readiness(self) -> dict[str, Any]:
        # A produce that waits longer than the broker's timeout means the broker is not
        # answering, even before the failure is confirmed.
        waiting = self._send_started is not None and (
            time.monotonic() - self._send_started > self.settings.request_timeout_ms / 1000
        )
        return {
            "broker": "up" if self.state is PublisherState.UP and not waiting else "down",
            "state": str(self.state),
            "pending": len(self._pending),
            "spool_records": self.backlog,
            "spool_bytes": self.spool.size_bytes,
            "spool_max_bytes": self.spool.max_bytes,
            "spool_errors": dict(self._failing) or None,
            "durability": str(self.spool.durability),
            "accepting": self.accepting,
            "last_error": self._last_error or None,
        }

    # lifecycle

    async def start(self) -> asyncio.Task[None]:
        """Start the flush task; the caller supervises it (it only ends on `close`)."""
        if self.spool.durability is Durability.MACHINE:
            self._sync_thread = ThreadPoolExecutor(1, thread_name_prefix="adpulse-fsync")
        self._flusher = asyncio.create_task(self._run(), name="publisher-flush")
        return self._flusher

    def move_to(self, bootstrap: str) -> None:
        """Produce to the broker at `bootstrap` from now on (the dev stack's broker replacement).

        The flush task moves between two of its steps, so no produce to the old broker is in
        flight then: it connects to the new one and replays the log from the acknowledged
        position there (what the old one had not acknowledged), as after any reconnection;
        requests are accepted into the log throughout. A record both brokers end up holding
        carries the same `event_id` and is counted once."""
        if bootstrap != self.settings.bootstrap or self._move_to is not None:
            self._move_to = bootstrap
            self._wakeup.set()

    async def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state is PublisherState.UP and self._producer is not None:
                return True
            await asyncio.sleep(0.02)
        return False

    async def close(self, timeout: float = 15.0) -> None:
        """Refuse new records, send what the broker takes in `timeout`, stop the producer.
        What is not acknowledged stays in the log for the next start."""
        self._closing = True
        # The HTTP server's end of turn commits what requests added; let it run first.
        await asyncio.sleep(0)
        if self._turn:
            self.commit()
        self._wakeup.set()
        self._closed.set()
        if self._flusher is not None and not self._flusher.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._flusher), timeout)
            except TimeoutError:
                log.error(
                    "publisher did not finish within %.0f s; the rest stays in the log", timeout
                )
                self._flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flusher
            except Exception:
                log.exception("the flush task failed while closing")
        while (syncing := self._syncing or self._next_sync) is not None:
            await asyncio.wait([syncing])
        await self._maintain(force=True)
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._producer.stop()
            self._producer = None
        if self._retiring:
            await asyncio.wait(self._retiring)
        self.spool.close()
        if self._sync_thread is not None:
            self._sync_thread.shutdown(wait=True)
        log.info(
            "publisher closed: %d sent, %d still in the log (%s) for the next start",
            self.stats.sent,
            self.spool.records,
            self.spool.directory,
        )

    # the flush task

    async def _run(self) -> None:
        while True:
            try:
                if await self._step():
                    return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # A step that fails on something unforeseen is retried, not left dead: the
                # records it was handling are still in the log.
                self.stats.task_errors += 1
                self._note_error(error)
                log.exception("publisher step failed; retrying from the log")
                self._pending.clear()
                self._pending_bytes = 0
                self.state = PublisherState.DOWN
                await asyncio.sleep(self.settings.probe_interval)

    async def _step(self) -> bool:
        """One move of the flush task; True when closing and nothing more can be sent."""
        if not _WRITING.isdisjoint(self._failing):
            self._probe_log()
        if self._move_to is not None:
            self._move()
        if self.state is PublisherState.UP:
            if not self._pending:
                if self._closing:
                    return True
                await self._wait_for_work(MAINTAIN_INTERVAL)
                await self._maintain()
                return False
            if len(self._pending) < self.settings.linger_records and not self._closing:
                # Let a batch gather: a produce request per few records costs more CPU
                # than the records themselves.
                await asyncio.sleep(self.settings.linger_ms / 1000)
                # Meanwhile the memory queue may have overflowed (the records are then read
                # from the log) or the state changed: nothing of it is to be sent from here.
                if self.state is not _UP or not self._pending:
                    return False
            await self._send_pending()
        elif self.state is PublisherState.DOWN:
            if not await self._probe():
                if self._closing:
                    return True
                await self._pause(self.settings.probe_interval)
                await self._maintain()
                return False
        else:
            await self._replay_chunk()
        await self._maintain()
        return False

    async def _wait_for_work(self, timeout: float | None = None) -> None:
        self._wakeup.clear()
        if self._pending or self._closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _pause(self, timeout: float) -> None:
        """Wait `timeout`, or until `close`; requests do not end it."""
        if self._closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), timeout)

    async def _send_pending(self) -> None:
        if not self._pending:
            # Acknowledging with nothing sent would move the position past unsent records.
            return
        records = list(self._pending)
        end = self._pending_end
        self._pending.clear()
        self._pending_bytes = 0
        failed = await self._send(records)
        if failed:
            # They are in the log: replayed from the acknowledged position once it is back.
            self._go_down()
            self._pending.clear()
            self._pending_bytes = 0
            return
        self._acknowledge(end, len(records))

    async def _replay_chunk(self) -> None:
        spool = self.spool
        # Not past a group whose fsync is running or failed (`machine`), nor into what the
        # memory queue holds.
        start, end = spool.acknowledged, min(spool.sendable_end, self._queued_from)
        if start >= end:
            self._caught_up()
            return
        try:
            records, position = await asyncio.to_thread(
                spool.read, spool.segments(), start, end, self.settings.replay_chunk
            )
        except SpoolIOError as error:
            self._spool_failed(error)
            await self._pause(self.settings.probe_interval)
            return
        self._spool_recovered("read")
        if position <= start:
            # Nothing readable where the log says records are: say so, and do not spin.
            log.error("the log has no segment for positions %d to %d", start, end)
            await self._pause(self.settings.probe_interval)
            return
        if records:
            failed = await self._send(records)
            if failed:
                # Nothing moves: the chunk is read again after the next probe. Said once per
                # replay: a broker that connects but does not take records would otherwise
                # leave the tracker replaying, and /readyz "replaying", without a word.
                if not self._replay_failed:
                    self._replay_failed = True
                    log.warning(
                        "replaying the log failed (%s): %d records from position %d are read "
                        "again after the next probe of the broker",
                        self._last_error or "not acknowledged",
                        len(records),
                        start,
                    )
                self._go_down()
                return
            self.stats.replayed += len(records)
        self._acknowledge(position, len(records))
        if spool.acknowledged >= min(spool.sendable_end, self._queued_from):
            self._caught_up()

    def _caught_up(self) -> None:
        if self.spool.acknowledged < self._queued_from:
            # Not reached (nothing known leads here): the memory queue would leave a gap, so
            # it is dropped, as before there was one; the log still holds those records.
            self._pending.clear()
            self._pending_bytes = 0
            self._pending_end = self._queued_from = self.spool.acknowledged
        # The memory queue continues the log from here. Records whose fsync is still running
        # (`machine`) are queued when it succeeds.
        self.state = PublisherState.UP
        self._replay_failed = False
        # Free the replayed segments now rather than at the next regular pass.
        self._maintained_at = 0.0
        log.info("the log has caught up: sending straight to the broker again")

    def _acknowledge(self, position: int, records: int) -> None:
        self.spool.acknowledge(position, records)
        self._room = self.spool.max_bytes - self.spool.size_bytes

    async def _maintain(self, *, force: bool = False) -> None:
        """Delete acknowledged segments and save the acknowledged position, now and then."""
        spool = self.spool
        position = spool.acknowledged
        now = time.monotonic()
        # While writes fail (a full disk, say), acknowledged segments go at once: their space
        # is what lets the log take records again.
        force = force or not _WRITING.isdisjoint(self._failing)
        if position == self._saved_position or (
            not force and now - self._maintained_at < MAINTAIN_INTERVAL
        ):
            return
        self._maintained_at = now
        obsolete = spool.obsolete()
        if obsolete:
            try:
                await asyncio.to_thread(spool.remove, obsolete)
            except SpoolIOError as error:
                # Tried again at the next pass; a restart deletes them too.
                self._spool_failed(error)
            else:
                self._spool_recovered("remove")
                spool.forget(obsolete)
        try:
            await asyncio.to_thread(spool.save_cursor, position)
        except SpoolIOError as error:
            # Only costs duplicates after a restart: the log is replayed from an older point.
            self._spool_failed(error)
            return
        self._spool_recovered("cursor")
        self._saved_position = position

    def _probe_log(self) -> None:
        """While writes fail and no request tries, try an empty group now and then, so the log
        is found writable again (and /readyz says so) without traffic."""
        now = time.monotonic()
        if self._turn or now - self._probed_log_at < self.settings.probe_interval:
            return
        self._probed_log_at = now
        try:
            self.spool.write_group(())
        except SpoolIOError as error:
            self._spool_failed(error)
            return
        self._room = self.spool.max_bytes - self.spool.size_bytes
        self._spool_recovered("create", "write")
        if self._machine:
            # A failed fsync is cleared only by one that works; no request may come to try.
            self._sync([], 0)
        elif self.state is not _DOWN:
            # The empty group is acknowledged with the records before it.
            self._pending_end = self.spool.end

    def _sync(self, records: list[SpoolRecord], size: int) -> asyncio.Future[bool]:
        """The future of the next fsync, which covers everything written until it starts:
        turns that arrive while one runs share the next (group commit)."""
        self._unsynced_records.extend(records)
        self._unsynced_bytes += size
        future = self._next_sync
        if future is None:
            future = self._next_sync = asyncio.get_running_loop().create_future()
            if self._syncing is None:
                self._start_sync()
        return future

    def _start_sync(self) -> None:
        future = self._next_sync
        self._next_sync = None
        if future is None:
            return
        self._syncing = future
        records, self._unsynced_records = self._unsynced_records, []
        size, self._unsynced_bytes = self._unsynced_bytes, 0
        start, end = self._sync_start, self.spool.end
        self._sync_start = end
        descriptors, directory, retired = self.spool.take_unsynced()
        done = asyncio.get_running_loop().run_in_executor(
            self._sync_thread, self.spool.sync, descriptors, directory, retired
        )
        done.add_done_callback(
            functools.partial(self._synced, future, _Synced(records, size, start, end))
        )

    def _synced(
        self, future: asyncio.Future[bool], group: _Synced, done: asyncio.Future[None]
    ) -> None:
        self._syncing = None
        error = None if done.cancelled() else done.exception()
        kept = error is None and not done.cancelled()
        # Before queueing: the log's sendable end must cover what is queued.
        self.spool.settle(group.start, group.end, len(group.records), kept=kept)
        if isinstance(error, SpoolIOError):
            self._spool_failed(error)
        elif error is not None:
            log.error("fsync of the log failed: %r", error)
        if kept:
            self._spool_recovered("fsync")
            if self.state is not _DOWN:
                self._queue(group.records, group.size, group.end)
                if group.records:
                    self._wakeup.set()
        else:
            # Answered 503: never sent, skipped when the acknowledged position reaches them.
            log.error(
                "%d records were answered 503 (fsync failed) and will not be sent",
                len(group.records),
            )
        if not future.done():
            future.set_result(kept)
        if self._next_sync is not None:
            self._start_sync()

    def _spool_failed(self, error: SpoolIOError) -> None:
        self.spool_errors[error.operation] += 1
        if error.operation not in self._failing:
            log.error("%s", error)
        self._failing[error.operation] = str(error)

    def _spool_recovered(self, *operations: str) -> None:
        for operation in operations:
            if self._failing.pop(operation, None) is not None:
                log.info("spool %s works again (%s)", operation, self.spool.directory)

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
        # Kafka's default partitioner, so every client puts a key in the same place; the keys
        # are hashed together, in one call, rather than one by one (tracker.partitioner).
        hashes = murmur2_many([record[1] for record in records])
        topics = set(map(_TOPIC, records))
        by_target: dict[tuple[str, int], list[int]] = {}
        if len(topics) == 1:
            # Nearly always (the rejected topic is rare): the partitions computed in one
            # comprehension and the indices dealt out by partition, with no tuple, dict lookup
            # or branch per record.
            topic = topics.pop()
            count = counts.get(topic, 1)
            lists: list[list[int]] = [[] for _ in range(count)]
            deal = [each.append for each in lists]
            for index, partition in enumerate([(hashed & 0x7FFFFFFF) % count for hashed in hashes]):
                deal[partition](index)
            by_target = {(topic, partition): each for partition, each in enumerate(lists) if each}
        else:
            for index, record, hashed in zip(range(len(records)), records, hashes, strict=True):
                topic = record[0]
                # `partition_of`, written out to save a call per record.
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
                taken = fill_batch(batch, records, indices, start, now_ms)
                batches.append((target, (batch, indices[start : start + taken])))
                start += taken
        return batches

    def _connections(self) -> frozenset[object]:
        # A broker restarted empty (Tansu keeps nothing) may have acknowledged records for a
        # topic it no longer has; a new connection after a produce cycle is how that shows.
        return live_connections(self._producer)

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

    def _move(self) -> None:
        """Leave the current broker for `_move_to`: the next probe connects there and replays
        the log from the acknowledged position; the old producer stops in the background."""
        bootstrap, self._move_to = self._move_to, None
        if bootstrap is None or bootstrap == self.settings.bootstrap:
            return
        log.info(
            "moving from the broker at %s to %s; the records it has not acknowledged (%d in "
            "the log) are sent there",
            self.settings.bootstrap,
            bootstrap,
            self.spool.records,
        )
        self._moved_from = self.settings.bootstrap
        self.settings = dataclasses.replace(self.settings, bootstrap=bootstrap)
        old, self._producer = self._producer, None
        self._connected = False
        self.state = PublisherState.DOWN
        self._pending.clear()
        self._pending_bytes = 0
        if old is not None:
            retiring = asyncio.create_task(self._retire(old), name="publisher-retire")
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _retire(producer: AIOKafkaProducer) -> None:
        # Nothing of ours is in flight on it (moves happen between steps): stopping only closes.
        with contextlib.suppress(KafkaError, OSError):
            await producer.stop()

    def _go_down(self) -> None:
        if self.state is PublisherState.UP:
            log.warning(
                "records not acknowledged (%s): keeping them in the log until the broker is back",
                self._last_error or "the broker restarted",
            )
        self.state = PublisherState.DOWN
        # Read from the log again after the next probe.
        self._pending.clear()
        self._pending_bytes = 0

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
        if self._moved_from is not None:
            # A warning, so that it shows at every log level but ERROR: the dev stack waits
            # for this line before it retires the old broker.
            log.warning(
                "now producing to the broker at %s (moved from %s)",
                self.settings.bootstrap,
                self._moved_from,
            )
            self._moved_from = None
        elif not self._connected:
            log.info("connected to the broker at %s", self.settings.bootstrap)
        self._connected = True
        self._verified_connections = self._connections()
        self._start_replay()
        return True

    def _start_replay(self) -> None:
        """Send the log from the acknowledged position; from here on, records are also queued
        in memory as they are kept, and the replay ends where that queue begins."""
        spool = self.spool
        self._pending.clear()
        self._pending_bytes = 0
        # `machine`: the groups whose fsync is still running are queued when it succeeds, so
        # the queue begins where the fsynced part of the log ends.
        self._pending_end = self._queued_from = spool.synced_end if self._machine else spool.end
        self.state = PublisherState.REPLAYING

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
