"""`BatchWriter`: one batch of raw Kafka record values into Redis, retried until it is written.

No Kafka in here: the worker hands a batch in and commits its offsets once it is written:
`send` then `settle` for a batch sent on the store's ordered connection (several can be on
their way at once), `write` for one with spend or when sending failed.
Redis down is a state, not an error: the same batch is retried with capped exponential
backoff, logged once when Redis goes away and once when it is back, and `write` returns only
when the batch is in (or raises CancelledError when the worker gives up on it, in which case
nothing may be committed). A retried batch is safe: the script applies a batch whole or not at
all and skips events already applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

import orjson
from redis.exceptions import RedisError

from adpulse.core.click_ids import ClickKeys
from adpulse.core.throttle import ThrottledLog
from stream.aggregate import BatchResult
from stream.batch import EVENT_FIELDS, KIND_NAMES, DecodedBatch, decode_records
from stream.errors import SpendConflict, StoreUnavailable
from stream.worker_metrics import WorkerMetrics

logger = logging.getLogger(__name__)

_LOGGED_REJECTS: Final = 5
"""Bad records logged one by one per batch; the rest only counted."""


class BatchStore(Protocol):
    """What the writer needs of `stream.store.KpiStore`."""

    async def apply_decoded(
        self, batch: DecodedBatch, now: datetime | None = None
    ) -> BatchResult: ...

    async def send_decoded(
        self, batch: DecodedBatch, now: datetime | None = None
    ) -> asyncio.Future[BatchResult]: ...

    def resume_sending(self) -> None: ...

    def partitions_moved(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Sent:
    """A batch on its way: its answer to come, and when it was sent (perf_counter)."""

    answer: asyncio.Future[BatchResult]
    started: float


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds between retries: `first`, doubling up to `cap`."""

    first: float = 0.1
    cap: float = 5.0

    def next(self, delay: float) -> float:
        return min(delay * 2, self.cap)


class BatchWriter:
    """Decode, apply with one store call, retry while Redis is unreachable, record metrics."""

    def __init__(
        self,
        store: BatchStore,
        metrics: WorkerMetrics,
        backoff: Backoff | None = None,
        click_keys: ClickKeys | None = None,
    ) -> None:
        """`click_keys` verify signed click ids (`adpulse.core.click_ids`)."""
        self.store = store
        self.metrics = metrics
        self.click_keys = click_keys
        self._click_id_log = ThrottledLog(logger, logging.WARNING, "click ids", interval=60.0)
        self.backoff = backoff or Backoff()
        self._down_since: float | None = None

    @property
    def redis_down(self) -> bool:
        return self._down_since is not None

    def decode(self, values: Sequence[bytes]) -> DecodedBatch:
        """The batch of raw record values; bad records are logged, counted and left out."""
        batch = decode_records(values, self.click_keys)
        self._record_rejects(batch, values)
        return batch

    def resume_sending(self) -> None:
        """Send again after a failure, once every batch sent before it was written."""
        self.store.resume_sending()

    def partitions_moved(self) -> None:
        """Partitions were assigned: what their last owner left half-written is sent first."""
        self.store.partitions_moved()

    async def send(self, batch: DecodedBatch) -> Sent | None:
        """Send a batch without spend behind the ones sent before, not waiting for its answer
        (`settle` does); None when it cannot be sent: then it must be written with `write`,
        after every batch sent before it.
        """
        started = time.perf_counter()
        try:
            answer = await self.store.send_decoded(batch)
        except (StoreUnavailable, RedisError) as error:
            self._went_down(error, len(batch))
            return None
        return Sent(answer, started)

    async def settle(
        self, sent: Sent, batch: DecodedBatch, size: int, samples: Sequence[bytes] = ()
    ) -> bool:
        """Wait for a sent batch's answer; False if it failed (then `write` it, in order)."""
        try:
            result = await sent.answer
        except (StoreUnavailable, RedisError) as error:
            self._went_down(error, size)
            return False
        self._came_back()
        self._record(batch, result, size, time.perf_counter() - sent.started, samples)
        return True

    async def write(
        self, batch: DecodedBatch, size: int, samples: Sequence[bytes] = ()
    ) -> BatchResult:
        """Apply a decoded batch of `size` records, retrying until Redis took it.

        `samples`: a few of the records whose received_at feed the freshness histogram.
        """
        delay = self.backoff.first
        while True:
            started = time.perf_counter()
            try:
                result = await self.store.apply_decoded(batch)
            except (StoreUnavailable, SpendConflict, RedisError) as error:
                self._went_down(error, size)
                await asyncio.sleep(delay)
                delay = self.backoff.next(delay)
                continue
            written = time.perf_counter()
            self._came_back()
            self._record(batch, result, size, written - started, samples)
            return result

    def _went_down(self, error: Exception, size: int) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.metrics.redis_up.set(0)
            logger.warning(
                "redis write failed, retrying the batch of %d records with backoff "
                "(nothing is committed meanwhile): %s",
                size,
                error,
            )
        else:
            logger.debug("redis write failed again: %s", error)

    def _came_back(self) -> None:
        if self._down_since is not None:
            logger.warning(
                "redis write succeeded again after %.1f s", time.monotonic() - self._down_since
            )
            self._down_since = None
            self.metrics.redis_up.set(1)

    def _record_rejects(self, batch: DecodedBatch, values: Sequence[bytes]) -> None:
        if batch.rejected_click_ids:
            self._forged_click_ids(batch.rejected_click_ids)
        if not batch.rejected:
            return
        self.metrics.rejected_records.inc(len(batch.rejected))
        for position, error in batch.rejected[:_LOGGED_REJECTS]:
            logger.warning("rejected record: %s; value=%r", error, bytes(values[position][:200]))
        if len(batch.rejected) > _LOGGED_REJECTS:
            logger.warning(
                "rejected %d more records of this batch", len(batch.rejected) - _LOGGED_REJECTS
            )

    def _forged_click_ids(self, count: int) -> None:
        self.metrics.click_ids_rejected.inc(count)
        if self.click_keys is None:
            why = "the worker has no ADPULSE_CLICK_KEY to verify them with"
        else:
            why = "forged, altered, or signed with neither ADPULSE_CLICK_KEY nor its _PREVIOUS"
        self._click_id_log.log("%d signed click ids of a batch were not attributed: %s", count, why)

    def _record(
        self,
        batch: DecodedBatch,
        result: BatchResult,
        size: int,
        seconds: float,
        samples: Sequence[bytes],
    ) -> None:
        metrics = self.metrics
        metrics.batch_size.observe(size)
        metrics.redis_write_seconds.observe(seconds)
        for kind, count in Counter(batch.rows[0::EVENT_FIELDS]).items():
            metrics.events_processed.labels(KIND_NAMES[str(kind)]).inc(count)
        if batch.spend:
            metrics.events_processed.labels("spend").inc(len(batch.spend))
        if result.duplicates:
            metrics.duplicates.inc(result.duplicates)
        if result.redelivered:
            metrics.redelivered.inc(result.redelivered)
        if result.late:
            metrics.late_events.inc(result.late)
        if result.unlisted:
            metrics.unlisted_events.inc(result.unlisted)
        if result.other_campaigns:
            metrics.other_campaign_events.inc(result.other_campaigns)
        now = time.time()
        for sample in samples:
            received = received_at(sample)
            if received is not None:
                metrics.event_to_counter_seconds.observe(max(0.0, now - received))


def received_at(value: bytes) -> float | None:
    """The received_at of a record as Unix seconds, None if it has none readable."""
    try:
        wire = orjson.loads(value)
        return datetime.fromisoformat(wire["received_at"]).timestamp()
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
