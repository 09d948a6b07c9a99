"""`BatchLoop`: fetch records in batches, write each batch into Redis, then commit its offsets.

No faust in here: the loop reads records and commits offsets through `RecordSource`, which
`stream.framework.BatchConsumer` implements on faust's consumer, and writes through
`stream.batch_writer.BatchWriter`. faust starts `drain` after every rebalance and stops it
before the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final, Protocol

from stream.batch import EVENT_FIELDS, DecodedBatch
from stream.batch_writer import BatchWriter, Sent
from stream.worker_settings import WorkerSettings

logger = logging.getLogger(__name__)

TP = Any
"""A topic partition (faust's TP or aiokafka's TopicPartition): `.topic`, `.partition`."""


class Record(Protocol):
    """A fetched record as the loop reads it (see `stream.framework.hand_on_batch_records`)."""

    @property
    def value(self) -> bytes | None: ...

    @property
    def offset(self) -> int: ...


class RecordSource(Protocol):
    """What the loop needs of the Kafka consumer."""

    @property
    def should_stop(self) -> bool: ...

    @property
    def generation(self) -> int:
        """The group generation; it changes with every rebalance."""
        ...

    async def fetch(self, timeout: float, max_records: int) -> Mapping[TP, Sequence[Record]]:
        """Records of the partitions being consumed, at most `max_records`, waiting up to
        `timeout` seconds for the first; empty when there are none or a rebalance started."""
        ...

    async def commit_offsets(self, offsets: dict[TP, int]) -> bool:
        """Commit exactly these offsets (of partitions still assigned); False if refused."""
        ...

    def highwater(self, tp: TP) -> int | None: ...


class Stoppable(Protocol):
    @property
    def should_stop(self) -> bool: ...


IDLE_FETCH_SECONDS: Final = 1.0
_offset_of: Final = attrgetter("offset")


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
    previous one ends, while the next batch is collected and decoded here; with one batch at a
    time redis-server sat idle while each batch was answered and committed (bench/README.md).

    Each batch commits its offsets once it is written and the batch before it has committed,
    so a committed offset never passes an unwritten record. A batch whose sending failed is
    written alone, with retries (`BatchWriter.write`): only after every batch before it, and
    nothing is sent until it is written. A batch's spend records are written with a script call
    of their own (their stored records are read before it runs), after the batch before; each
    call is atomic and skips what it applied already, so a batch retried after a crash between
    the two is still counted once.
    """

    def __init__(self, settings: WorkerSettings, writer: BatchWriter, log_id: str = "") -> None:
        self.settings = settings
        self.writer = writer
        # The broker's cluster id after each source's name: applied offsets are per log
        # (`keys`, "Redelivery"), and a replaced dev broker's log is another one.
        self._log_suffix = f"/{log_id}" if log_id else ""
        self._in_hand: list[InHand] = []
        """The batches being written and committed, oldest first."""
        self._give_ups = 0
        """Batches given up on; a batch collected before one was given up is dropped too."""

    async def drain(self, source: RecordSource, fetcher: Stoppable) -> None:
        """Run until the source or faust's Fetcher stops (faust restarts it after rebalances)."""
        while not (source.should_stop or fetcher.should_stop):
            records = await self._collect(source)
            if not records:
                continue
            prepared = self._prepare(source, records)
            await self._make_room()
            if self._stale(source, prepared):
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
                if self._stale(source, prepared):
                    continue
            previous = self._in_hand[-1].task if self._in_hand else None
            task = asyncio.ensure_future(self._write_and_commit(source, prepared, sent, previous))
            self._in_hand.append(InHand(task, alone=sent is None and len(prepared.batch) > 0))
        while self._in_hand:
            await self._wait_in_hand(self._in_hand[0].task)

    def _stale(self, source: RecordSource, prepared: PreparedBatch) -> bool:
        # A rebalance or a given-up batch came between: faust seeks every partition back to
        # its committed offset, so these records are read again.
        return prepared.give_ups != self._give_ups or prepared.generation != source.generation

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

    async def _collect(self, source: RecordSource) -> dict[TP, list[Record]]:
        """Up to batch_size records, waiting at most batch_within once the first is in.

        Empty when a rebalance started meanwhile: those records are read again from the
        committed offsets once faust has sought there.
        """
        generation = source.generation
        loop = asyncio.get_running_loop()
        batch: dict[TP, list[Record]] = {}
        count = 0
        deadline: float | None = None
        while count < self.settings.batch_size:
            timeout = IDLE_FETCH_SECONDS if deadline is None else deadline - loop.time()
            if timeout <= 0:
                break
            fetched = await source.fetch(timeout, self.settings.batch_size - count)
            if source.should_stop or source.generation != generation:
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

    def _prepare(self, source: RecordSource, batch: dict[TP, list[Record]]) -> PreparedBatch:
        size = 0
        samples: list[bytes] = []
        offsets: dict[TP, int] = {}
        decoded = DecodedBatch()
        for tp, records in batch.items():
            # A record without a value decodes as an empty one (and is rejected as such).
            values = [record.value or b"" for record in records]
            size += len(values)
            samples += (values[0], values[-1])
            offsets[tp] = records[-1].offset + 1
            # Decoded per partition, so that each row's offset is known (`keys`, "Redelivery").
            name = f"{tp.topic}:{tp.partition}{self._log_suffix}"
            _add_part(decoded, name, records, self.writer.decode(values))
        spend, decoded.spend = DecodedBatch(spend=decoded.spend), []
        return PreparedBatch(
            batch=decoded,
            spend=spend,
            size=size,
            offsets=offsets,
            samples=samples,
            generation=source.generation,
            give_ups=self._give_ups,
        )

    async def _write_and_commit(
        self,
        source: RecordSource,
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
        if not await source.commit_offsets(offsets):
            logger.info("offsets %s not committed (rebalanced meanwhile)", _describe(offsets))
        self._update_lag(source, offsets)

    def _update_lag(self, source: RecordSource, offsets: dict[TP, int]) -> None:
        gauge = self.writer.metrics.consumer_lag
        for tp, position in offsets.items():
            highwater = source.highwater(tp)
            if highwater is not None:
                gauge.labels(str(tp.partition)).set(max(0, highwater - position))

    def forget(self, revoked: Set[TP]) -> None:
        gauge = self.writer.metrics.consumer_lag
        for tp in revoked:
            with contextlib.suppress(KeyError):
                gauge.remove(str(tp.partition))


def _add_part(
    batch: DecodedBatch, name: str, records: Sequence[Record], part: DecodedBatch
) -> None:
    """Append one partition's decoded records to `batch`, with the offsets of its rows; a part
    with spend records goes without them (which records became rows is not known then), its
    redeliveries left to the event ids."""
    first_row = len(batch.rows) // EVENT_FIELDS
    if part.rows and not part.spend:
        row_offsets = list(map(_offset_of, records))
        if part.rejected:
            rejected = {position for position, _ in part.rejected}
            row_offsets = [o for i, o in enumerate(row_offsets) if i not in rejected]
        if len(row_offsets) == len(part.rows) // EVENT_FIELDS:
            batch.sources.append((name, first_row, row_offsets))
    if batch.rows:
        batch.rows += part.rows
    else:  # the first part's rows become the batch's, not copied (the part is not kept)
        batch.rows = part.rows
    batch.spend += part.spend
    batch.bots += part.bots
    batch.rejected += part.rejected


def _describe(offsets: dict[TP, int]) -> str:
    return ",".join(f"{tp.partition}:{offset}" for tp, offset in sorted(offsets.items()))
