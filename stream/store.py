"""`KpiStore`: the Redis side of the stream worker, the exporter and the coupons command.

Writes go through one Lua script call per batch (`stream.lua`); reads fetch every bucket a
snapshot needs in one MULTI/EXEC, so a snapshot is one consistent moment.

In cluster mode (a ``redis+cluster://`` URL, `stream.cluster`) a batch is one script call per
part of the key space it touches, and every reader sums each bucket over the parts
(`keys`, "Redis Cluster").
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Self, TypeVar, cast
from zoneinfo import ZoneInfo

import msgspec
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ClusterError, ReadOnlyError, RedisClusterException, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from adpulse.core.channels import channel_slug
from adpulse.core.click_ids import ClickKeys
from adpulse.core.event import MAX_COUPON_LENGTH, Event
from adpulse.core.options import cluster_node_url, parse_store_url
from stream.aggregate import FIXED_CHANNELS, BatchResult, epoch_micros
from stream.batch import DecodedBatch, decode_events
from stream.cluster import (
    TRIM_OUTBOX,
    Fact,
    coupon_codes,
    fact_calls,
    read_fact,
    split_batch,
)
from stream.customers import CohortValue, cohort_values
from stream.days import LocalDays
from stream.errors import ClusterUnsupported, SpendConflict, StoreUnavailable, StreamError
from stream.keys import (
    ACTIVE_PREFIX_KEY,
    CLUSTER_PARTS,
    DEFAULT_LAYOUT,
    DEFAULT_MAX_CAMPAIGNS,
    DEFAULT_MAX_CHANNELS,
    INTSET_ENTRIES,
    LISTPACK_ENTRIES,
    IdLayout,
    KeySpace,
    Retention,
)
from stream.kpi import (
    Bucket,
    Counters,
    Snapshot,
    build_snapshot,
    counters_by_channel,
    delays_by_channel,
)
from stream.kpi import snapshot_reads as plan_reads
from stream.lua import APPLY_BATCH, SPEND_CONFLICT, encode_batch
from stream.report import (
    Cohort,
    ReportRequest,
    RowKey,
    cohort_months,
    day_buckets,
    minute_buckets,
    month_cohorts,
    sum_buckets,
    sum_cohorts,
)

T = TypeVar("T")

logger = logging.getLogger(__name__)

# A cluster with a master down or its slots moving answers with cluster errors, or the client
# gives up finding a node for a slot (RedisClusterException): both pass like an outage.
RESEND_SECONDS: Final = 1.0
"""Cluster mode: how often the outboxes are sent again while they may hold customer facts
(a failed second call, a gap) and no batch comes to send them."""
_UNAVAILABLE: Final = (
    RedisConnectionError, RedisTimeoutError, ReadOnlyError, ClusterError, RedisClusterException
)  # fmt: skip
_SLOT_MOVING: Final = re.compile(
    r"^(MOVED|ASK|TRYAGAIN|CROSSSLOT)\b|non.local key|not hash to the same slot", re.IGNORECASE
)
"""The answers of a cluster whose slot is migrating under a script call."""
REDIS_UNAVAILABLE: Final = _UNAVAILABLE
"""What the store's callers that talk to Redis themselves (`stream.imports`) report as Redis
unavailable, as the store does."""
_COUPON: Final = re.compile(rf"[A-Z0-9_-]{{1,{MAX_COUPON_LENGTH}}}")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _texts(fields: Mapping[Any, bytes | str]) -> dict[str, str]:
    return {_text(name): _text(value) for name, value in fields.items()}


def slot_moving(error: ResponseError) -> RedisClusterException | None:
    """A cluster's answer that a script call's slot is moving (the script builds keys it does
    not declare, `keys` "Resharding") as RedisClusterException naming the cause, which callers
    report as Redis unavailable; None for any other answer."""
    if _SLOT_MOVING.search(str(error)) is None:
        return None
    moving = RedisClusterException(
        f"a slot moved under a script call ({error}); resharding while workers run "
        'is not supported: stop them, reshard, start them (README, "Redis Cluster")'
    )
    moving.__cause__ = error
    return moving


def coupon_code(text: str) -> str:
    """The registry form of a coupon code (upper case), or ValueError with the reason."""
    code = text.strip().upper()
    if _COUPON.fullmatch(code) is None:
        raise ValueError(
            f"coupon {text!r}: 1 to {MAX_COUPON_LENGTH} of letters, digits, '_' and '-'"
        )
    return code


def _retrieve(answer: asyncio.Future[Any]) -> None:
    """Mark an answer's error as seen: a batch dropped after a rebalance is never awaited."""
    if not answer.cancelled():
        answer.exception()


class OrderedCalls:
    """Commands on a connection of their own, each sent as soon as it is ready, answered in order.

    Redis runs one connection's commands in the order it reads them, so batches sent here are
    applied in order without waiting for each other's answers: redis-server starts on the next
    script the moment the previous one ends. (redis-py sends a command and waits for its answer
    before the connection takes another; concurrent calls would take other connections, whose
    order Redis does not keep.)

    When a send or a read fails, every call still waiting fails with it (ConnectionError), and
    `send` refuses until `resume`: whoever retries the failed calls (in order, another way)
    must have done so before anything is sent here again, or a later batch would overtake
    them. An error reply (ResponseError) fails its own call only.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._connection: AbstractConnection | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()
        self._failed: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self._failed is not None

    def resume(self) -> None:
        """Accept calls again after a failure; only once the failed calls were retried."""
        self._failed = None

    async def send(self, *args: Any) -> asyncio.Future[Any]:
        """Send a command; its answer (or error) is the returned future's."""
        async with self._sending:
            if self._failed is not None:
                raise RedisConnectionError(f"an earlier call failed: {self._failed}")
            if self._connection is None:
                self._connection = cast(AbstractConnection, self._pool.make_connection())  # type: ignore[no-untyped-call]
            connection = self._connection
            answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiting.append(answer)
            try:
                await connection.send_packed_command(
                    connection.pack_command(*args), check_health=False
                )
            except BaseException as error:
                self._fail(error)
                raise
            if self._reader is None or self._reader.done():
                self._reader = asyncio.ensure_future(self._read(connection))
        return answer

    async def _read(self, connection: AbstractConnection) -> None:
        while self._waiting and connection is self._connection:
            try:
                reply = await connection.read_response()
            except ResponseError as error:
                answer = self._waiting.popleft()
                if not answer.done():
                    answer.set_exception(error)
            except asyncio.CancelledError as error:
                self._fail(error)
                raise
            except Exception as error:  # the connection is gone: every waiting call fails
                self._fail(error)
                return
            else:
                answer = self._waiting.popleft()
                if not answer.done():
                    answer.set_result(reply)

    def _fail(self, error: BaseException) -> None:
        self._failed = error
        waiting, self._waiting = self._waiting, deque()
        for answer in waiting:
            if not answer.done():
                answer.set_exception(RedisConnectionError(f"{type(error).__name__}: {error}"))
        # redis-py has closed the connection already, on the error that brought us here.
        self._connection = None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader])
        if self._connection is not None:
            await self._connection.disconnect()
            self._connection = None


async def _sum_parts(parts: Sequence[asyncio.Future[BatchResult]], bots: int) -> BatchResult:
    """The results of a batch's parts summed (`KpiStore._send_parts`); the first failure, once
    every part is done."""
    if parts:
        await asyncio.wait(parts)
    total = BatchResult()
    for part in parts:
        total += part.result()
    total.bots = bots
    return total


def _sum_plans(
    fetched: Mapping[str, Mapping[str, str]], plans: Mapping[str, Sequence[tuple[str, int]]]
) -> dict[str, dict[RowKey, Counters]]:
    # The previous period of 365 days is the previous year: the same plan is summed once.
    summed: dict[tuple[tuple[str, int], ...], dict[RowKey, Counters]] = {}
    for plan in plans.values():
        if tuple(plan) not in summed:
            summed[tuple(plan)] = sum_buckets(fetched, plan)
    return {name: summed[tuple(plan)] for name, plan in plans.items()}


class KpiStore:
    """Per-channel counters in Redis: apply batches of events, read snapshots, keep coupons.

    >>> store = KpiStore.from_url("redis://localhost:6379/0")  # doctest: +SKIP
    >>> await store.apply_batch(events)  # doctest: +SKIP
    BatchResult(applied=5000, duplicates=0, late=0, bots=0)

    The client must decode responses (`from_url` makes one that does). Redis failures raise
    `StoreUnavailable` (retriable: a batch is applied whole or not at all, and a retried batch
    is deduplicated).
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        keys: KeySpace | None = None,
        retention: Retention | None = None,
        spend_attempts: int = 5,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        zone: ZoneInfo | None = None,
        max_campaigns: int = DEFAULT_MAX_CAMPAIGNS,
    ) -> None:
        """`max_channels`: channels counted under their own name, `max_campaigns`: campaigns of
        a channel and month, see `stream.keys`; `zone`: the reporting time zone (UTC)."""
        if max_channels < 1 or max_campaigns < 1:
            raise ValueError("max_channels and max_campaigns must be at least 1")
        self.client = client
        self.keys = keys or KeySpace()
        self.retention = retention or Retention()
        self.max_channels = max_channels
        self.max_campaigns = max_campaigns
        self.days = LocalDays(zone or ZoneInfo("UTC"), self.retention.day_seconds)
        self._spend_attempts = spend_attempts
        self._apply = client.register_script(APPLY_BATCH)
        self.cluster = isinstance(client, RedisCluster)
        """Cluster mode (`stream.cluster`): a script call per part, readers sum the parts."""
        if self.cluster and "{" in self.keys.prefix:
            raise ValueError(f"key prefix {self.keys.prefix!r}: no '{{' in cluster mode")
        self.ordered = (
            None if isinstance(client, RedisCluster) else OrderedCalls(client.connection_pool)
        )
        # Cluster mode's `send_decoded`: the last part of each number sent, and the failure that
        # stops sending.
        self._last_parts: dict[int, asyncio.Future[BatchResult]] = {}
        self._send_failed: BaseException | None = None
        # Cluster mode's customers (`keys`, "Customers across parts"): the second calls of the
        # batch sent last, the batches' stamps, and whether every outbox is sent again first
        # (at start, and after a failure that may have left facts unsent).
        self._trim = client.register_script(TRIM_OUTBOX)
        self._last_forward: asyncio.Future[BatchResult] | None = None
        self._stamp = 0
        self._drain_needed = True
        # One set of second calls at a time, so facts reach a customer part in (stamp, row)
        # order: a batch's, a resend's (`_resend_later`, while outboxes may hold facts).
        self._forwarding = asyncio.Lock()
        self._resend: asyncio.Task[None] | None = None
        self._first_calls = 0  # a batch's parts being applied, whose facts a resend must wait for
        self._closed = False
        self.layout = DEFAULT_LAYOUT
        """Bucket loads of remembered ids; `check_encodings` fits them to the server."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        keys: KeySpace | None = None,
        retention: Retention | None = None,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        zone: ZoneInfo | None = None,
        max_campaigns: int = DEFAULT_MAX_CAMPAIGNS,
        timeout: float | None = None,
    ) -> Self:
        """A store on the Redis at `url`; `timeout` bounds each connect and each answer (None:
        wait as long as it takes). ValueError for a URL redis-py cannot read.

        ``redis+cluster://host:port`` (any node of the cluster; ``rediss+cluster://`` over
        TLS) is cluster mode (`stream.cluster`), database 0 only; ``redis://`` and ``rediss://``
        one instance."""
        client: redis.Redis | RedisCluster
        node = cluster_node_url(parse_store_url(url) if "+cluster://" in url else url)
        if node is not None:
            client = RedisCluster.from_url(
                node,
                decode_responses=True,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        else:
            client = redis.Redis.from_url(
                url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        return cls(
            client,
            keys=keys,
            retention=retention,
            max_channels=max_channels,
            zone=zone,
            max_campaigns=max_campaigns,
        )

    async def follow_active_prefix(self) -> KeySpace:
        """Use the key space `keys.ACTIVE_PREFIX_KEY` names (the default when it names none):
        after `adpulse rebuild`, the rebuilt one. Call it before the first read or write."""
        prefix = await self._call("active prefix", self.client.get(ACTIVE_PREFIX_KEY))
        keys = KeySpace(_text(prefix)) if prefix else KeySpace()
        if self.cluster and "{" in keys.prefix:
            raise ValueError(f"key prefix {keys.prefix!r}: no '{{' in cluster mode (hash tags)")
        if keys != self.keys:
            self.keys = keys
        return keys

    async def check_encodings(self) -> list[str]:
        """Fit `layout` to the server's limits of its compact encodings (`keys.IdLayout`);
        warnings to log: a limit below Redis's default (remembered ids then take more memory
        per id), or CONFIG refused (the defaults are assumed)."""
        settings = {"set-max-intset-entries": INTSET_ENTRIES,
                    "hash-max-listpack-entries": LISTPACK_ENTRIES}  # fmt: skip
        found: dict[str, int] = {}
        warnings: list[str] = []
        for name, default in settings.items():
            try:
                reply = cast(dict[str, Any], await self.client.config_get(name))
                if self.cluster and name not in reply:
                    # One answer per node ({node: {name: value}}): the smallest counts.
                    reply = {name: min(int(str(r[name])) for r in reply.values())}
                found[name] = int(str(reply[name]))
            except (ResponseError, KeyError, ValueError) as error:
                found[name] = default
                warnings.append(
                    f"cannot read Redis's {name} ({error}); assuming the default {default}: if "
                    f"it is lower, remembered ids take more memory (set {name} to at least "
                    f"{default})"
                )
            except _UNAVAILABLE as error:
                raise StoreUnavailable("config get", error) from error
            if found[name] < default:
                warnings.append(
                    f"Redis's {name} is {found[name]}, below the default {default}: remembered "
                    f"ids are kept in smaller buckets, more memory per id (set {name} {default})"
                )
        self.layout = IdLayout.for_limits(
            found["set-max-intset-entries"], found["hash-max-listpack-entries"]
        )
        return warnings

    async def close(self) -> None:
        self._closed = True
        while self._resend is not None and not self._resend.done():
            resend = self._resend
            # Cancelled while it waits; once sending, let it end (a cancelled call leaves its
            # connection half-used).
            if not self._forwarding.locked():
                resend.cancel()
            await asyncio.wait([resend])
        if self.ordered is not None:
            await self.ordered.close()
        await self.client.aclose()

    def single_client(self, operation: str) -> redis.Redis:
        """The client of one instance, for `operation` that reads or writes its keys across the
        key space at once (the benches, tests of one instance's snapshot); ClusterUnsupported in
        cluster mode, where imports, snapshots and the number registry take their own per-part
        paths (`keys`, "Redis Cluster")."""
        if isinstance(self.client, RedisCluster):
            raise ClusterUnsupported(operation)
        return self.client

    async def apply_batch(
        self,
        events: Sequence[Event],
        now: datetime | None = None,
        *,
        click_keys: ClickKeys | None = None,
    ) -> BatchResult:
        """Apply a batch all or nothing; duplicates are skipped and counted.

        `now` decides which buckets are still retained (default: the clock); `click_keys`
        verify signed click ids. ValueError (EventError) for an amount above
        `batch.MAX_AMOUNT_MICROS`, before anything is written.
        """
        return await self.apply_decoded(decode_events(events, click_keys), now)

    async def apply_decoded(self, batch: DecodedBatch, now: datetime | None = None) -> BatchResult:
        """Apply a batch from `decode_records` (the worker's path) or `decode_events`."""
        if not len(batch):
            return BatchResult(bots=batch.bots)
        now_seconds = int(time.time()) if now is None else epoch_micros(now) // 1_000_000
        if self.cluster:
            return await self._apply_parts(batch, now_seconds)
        return await self._apply_in(self.keys, batch, now_seconds)

    async def _apply_parts(self, batch: DecodedBatch, now_seconds: int) -> BatchResult:
        """Cluster mode: one script call per part of the batch, at once (the parts share no
        key). A part that failed fails the batch; retried whole, the parts applied already skip
        it (offsets, remembered ids) like any redelivery."""
        indices: dict[int, list[int]] = {}
        parts = sorted(split_batch(batch, indices).items())
        facts: list[Fact] = []
        stamp = self._next_stamp()
        outcomes = await asyncio.gather(
            *(
                self._apply_in(
                    self.keys.part(number),
                    part,
                    now_seconds,
                    (number, stamp, indices.get(number, []), facts),
                )
                for number, part in parts
            ),
            return_exceptions=True,
        )
        total = BatchResult()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                self._drain_needed = True
                raise outcome
            total += outcome
        total.bots = batch.bots
        await self._forward_customers(facts, now_seconds)
        return total

    async def apply_spend(
        self, events: Sequence[Event], now: datetime | None = None
    ) -> BatchResult:
        """Apply spend events only (cost imports) as `apply_batch` does. In cluster mode each
        part's call is the worker's, and no outbox is sent: spend leaves no customer fact, and
        sending the workers' outboxes from another process could apply a fact before an older
        one still being written (`keys`, "Customers across parts"). ValueError for a batch
        with any other event."""
        batch = decode_events(events)
        if batch.rows:
            raise ValueError("apply_spend takes spend events only")
        if not self.cluster or not batch.spend:
            return await self.apply_decoded(batch, now)
        now_seconds = int(time.time()) if now is None else epoch_micros(now) // 1_000_000
        stamp, keys = self._next_stamp(), self.keys
        facts: list[Fact] = []  # stays empty: spend has no customer
        # Every call ends before an error is raised: the caller may close the store after it.
        results = await asyncio.gather(
            *(
                self._apply_in(keys.part(number), part, now_seconds, (number, stamp, [], facts))
                for number, part in sorted(split_batch(batch).items())
            ),
            return_exceptions=True,
        )
        total, errors = BatchResult(), list[BaseException]()
        for result in results:
            if isinstance(result, BaseException):
                errors.append(result)
            else:
                total += result
        if errors:  # the first typed one (cause and setting), else the first
            raise next((e for e in errors if isinstance(e, StreamError)), errors[0])
        return total

    async def send_customer_facts(self) -> None:
        """Cluster mode, at a worker's start: every part's outbox sent to its customer parts
        (the facts a worker stopped between a batch's two calls left); one instance has none."""
        if self.cluster:
            self._drain_needed = True
            await self._forward_customers([], int(time.time()))

    def partitions_moved(self) -> None:
        """Cluster mode: the worker was assigned partitions, whose last owner may have died
        between a batch's two calls; every outbox is sent before the next batch's own facts,
        so a stranded older fact is applied before a newer one (`keys`, "Customers across
        parts"), and in `RESEND_SECONDS` if no batch comes. Called on the event loop; no-op
        for one instance."""
        if self.cluster:
            self._drain_needed = True
            self._resend_later()

    def _next_stamp(self) -> int:
        """A batch's stamp, which orders customer facts from different parts as their batches
        were applied: increasing within a process, and across restarts with the clock."""
        self._stamp = max(self._stamp + 1, time.time_ns())
        return self._stamp

    async def _forward_customers(self, facts: list[Fact], now_seconds: int) -> None:
        """Cluster mode's second calls: the customer facts a batch's parts left in their
        outboxes applied in their customers' parts, and the outboxes trimmed of what those
        confirmed; every outbox sent again instead while `_drain_needed` (set at start, after
        a partition assignment and a failure, or if a part saw a gap in a source's numbers).
        One at a time; while facts may be left, sent again every `RESEND_SECONDS`."""
        async with self._forwarding:
            try:
                await self._forward_now(facts, now_seconds)
            finally:
                if self._drain_needed:
                    self._resend_later()

    async def _forward_now(self, facts: list[Fact], now_seconds: int) -> None:
        # Until this ends well, facts may be left unsent (an error, a cancelled task).
        drain, self._drain_needed = self._drain_needed, True
        try:
            if not drain and not await self._send_facts(facts, now_seconds):
                self._drain_needed = False
                return
            for _ in range(3):
                if not await self._send_facts(await self._read_outboxes(), now_seconds):
                    self._drain_needed = False
                    return
        except _UNAVAILABLE as error:
            raise StoreUnavailable("apply_customers", error) from error
        logger.warning("customer facts still out of order after three rounds; sent again later")

    def _resend_later(self) -> None:
        """Every outbox sent again in `RESEND_SECONDS` (and so on while facts may be left),
        unless a batch's second calls, which send them first, come before."""
        if self._closed:
            return
        if self._resend is None or self._resend.done() or self._resend is asyncio.current_task():
            self._resend = asyncio.ensure_future(self._resend_outboxes())
            self._resend.add_done_callback(_retrieve)

    async def _resend_outboxes(self) -> None:
        await asyncio.sleep(RESEND_SECONDS)
        if self._closed or not self._drain_needed:
            return
        if self._first_calls or (self._last_forward is not None and not self._last_forward.done()):
            return  # a batch's second calls are to come; they send every outbox first
        try:
            await self._forward_customers([], int(time.time()))
        except StoreUnavailable as error:
            logger.warning("cannot send the customer facts left in outboxes yet: %s", error)

    async def _read_outboxes(self) -> list[Fact]:
        """Every fact in every part's outbox (one pipeline, per master)."""
        async with self.client.pipeline() as pipe:
            for source in range(CLUSTER_PARTS):
                for destination in range(CLUSTER_PARTS):
                    pipe.lrange(self.keys.part(source).outbox_to(destination), 0, -1)
            replies = await pipe.execute()
        facts: list[Fact] = []
        for position, entries in enumerate(replies):
            source, destination = divmod(position, CLUSTER_PARTS)
            facts += (read_fact(source, destination, _text(entry)) for entry in entries)
        return facts

    async def _send_facts(self, facts: list[Fact], now_seconds: int) -> int:
        """The second calls for `facts` (at once, one per customer part) and the trims of
        what they confirmed; the facts that waited behind a gap."""
        calls = sorted(fact_calls(facts).items())
        replies = await asyncio.gather(
            *(
                self._apply_facts(destination, rows, sources, now_seconds)
                for destination, (rows, sources) in calls
            )
        )
        gaps = 0
        trims = []
        for (destination, _), (confirmed, waiting) in zip(calls, replies, strict=True):
            gaps += waiting
            for source, number in confirmed:
                part = self.keys.part(int(source))
                keys = [part.outbox_to(destination), part.outbox]
                trims.append(self._trim(keys=keys, args=[destination, int(number)]))
        await asyncio.gather(*trims)
        return gaps

    async def _apply_facts(
        self, destination: int, batch: DecodedBatch, sources: list[list[int]], now_seconds: int
    ) -> tuple[list[list[int]], int]:
        """One second call: customer facts applied in part `destination`; (source part, last
        number applied) per source, and how many facts waited behind a gap."""
        keys = self.keys.part(destination)
        encoded = encode_batch(
            batch, keys=keys, retention=self.retention, now_seconds=now_seconds,
            stored_spend={}, max_channels=self.max_channels, days=self.days,
            max_campaigns=self.max_campaigns, layout=self.layout, fingerprinted=True,
            cluster_args=("2", "0", msgspec.msgpack.encode(sources)),
        )  # fmt: skip
        reply = await self._call_script(keys=[keys.stats], args=encoded.argv)
        return [[int(v) for v in pair] for pair in reply[7]], int(reply[8])

    async def _call_script(self, keys: list[str], args: Sequence[str | int | bytes]) -> Any:
        """The apply-batch script; in cluster mode, an answer that its slot is moving (the
        script builds keys it does not declare, `keys` "Resharding") as RedisClusterException,
        which callers report as Redis unavailable, naming the cause."""
        try:
            return await self._apply(keys=keys, args=args)
        except ResponseError as error:
            moving = slot_moving(error) if self.cluster else None
            if moving is not None:
                raise moving from error
            raise

    async def _copy_coupons(self, keys: KeySpace, batch: DecodedBatch) -> None:
        """Cluster mode: the registry's entries for the batch's coupon codes (present or
        absent) copied into the part's coupons hash, which the part's script reads."""
        codes = coupon_codes(batch)
        if not codes:
            return
        channels = await self.client.hmget(self.keys.coupons, codes)
        present: dict[EncodableT, EncodableT] = {
            code: channel for code, channel in zip(codes, channels, strict=True) if channel
        }
        absent = [code for code, channel in zip(codes, channels, strict=True) if not channel]
        if present:
            await self.client.hset(keys.coupons, mapping=present)
        if absent:
            await self.client.hdel(keys.coupons, *absent)

    async def _apply_in(
        self,
        keys: KeySpace,
        batch: DecodedBatch,
        now_seconds: int,
        outbox: tuple[int, int, list[int], list[Fact]] | None = None,
    ) -> BatchResult:
        """Apply a batch with one script call in the key space `keys` (a part's in cluster mode,
        whose keys the call names so that the client routes it to the part's slot). `outbox`:
        cluster mode's part number, batch stamp, its rows' indices in the batch (which order
        customer facts as one instance would) and the list its customer facts go to."""
        if outbox is None:
            return await self._apply_once(keys, batch, now_seconds, outbox)
        self._first_calls += 1
        try:
            return await self._apply_once(keys, batch, now_seconds, outbox)
        finally:
            self._first_calls -= 1

    async def _apply_once(
        self,
        keys: KeySpace,
        batch: DecodedBatch,
        now_seconds: int,
        outbox: tuple[int, int, list[int], list[Fact]] | None,
    ) -> BatchResult:
        routing = [keys.stats] if self.cluster else []
        ids = batch.spend_ids
        conflict = ""
        for _ in range(self._spend_attempts):
            try:
                stored: dict[str, str] = {}
                if self.cluster:
                    await self._copy_coupons(keys, batch)
                if ids:
                    values = await self.client.mget([keys.spend(i) for i in ids])
                    stored = {
                        i: _text(v) for i, v in zip(ids, values, strict=True) if v is not None
                    }
                encoded = encode_batch(
                    batch,
                    keys=keys,
                    retention=self.retention,
                    now_seconds=now_seconds,
                    stored_spend=stored,
                    max_channels=self.max_channels,
                    days=self.days,
                    max_campaigns=self.max_campaigns,
                    layout=self.layout,
                    cluster_args=()
                    if outbox is None
                    else ("1", outbox[1], msgspec.msgpack.encode(outbox[2])),
                )
                reply = await self._call_script(keys=routing, args=encoded.argv)
            except _UNAVAILABLE as error:
                raise StoreUnavailable("apply_batch", error) from error
            if reply[0] != SPEND_CONFLICT:
                if outbox is not None:
                    entries = reply[6]
                    outbox[3].extend(
                        read_fact(outbox[0], int(entries[i]), _text(entries[i + 1]))
                        for i in range(0, len(entries), 2)
                    )
                return BatchResult(
                    applied=int(reply[0]) + encoded.spend_applied,
                    duplicates=int(reply[1]) + encoded.spend_duplicates,
                    late=int(reply[2]),
                    bots=batch.bots,
                    unlisted=int(reply[3]),
                    other_campaigns=int(reply[4]),
                    redelivered=int(reply[5]),
                )
            conflict = str(reply[1])
        raise SpendConflict(conflict, self._spend_attempts)

    async def send_decoded(
        self, batch: DecodedBatch, now: datetime | None = None
    ) -> asyncio.Future[BatchResult]:
        """Send a batch without spend to be applied after every batch sent before it, without
        waiting for its answer: the returned future's (StoreUnavailable if it failed).

        StoreUnavailable at once when it cannot be sent, and while `ordered` has failed.
        ValueError for a batch with spend: that one's stored records are read before the
        script runs, which only `apply_decoded` does.
        """
        if batch.spend:
            raise ValueError("a batch with spend is applied with apply_decoded")
        now_seconds = int(time.time()) if now is None else epoch_micros(now) // 1_000_000
        if self.ordered is None:
            return self._send_parts(batch, now_seconds)
        encoded = encode_batch(
            batch, keys=self.keys, retention=self.retention, now_seconds=now_seconds,
            stored_spend={}, max_channels=self.max_channels, days=self.days,
            max_campaigns=self.max_campaigns, layout=self.layout,
        )  # fmt: skip
        try:
            # EVAL, not EVALSHA: after a restart of Redis a NOSCRIPT answer would fail one
            # batch while the next, sent after someone loaded the script again, succeeded.
            # Redis keeps the compiled script by its hash either way.
            reply = await self.ordered.send("EVAL", APPLY_BATCH, 0, *encoded.argv)
        except (*_UNAVAILABLE, RedisConnectionError) as error:
            raise StoreUnavailable("send_decoded", error) from error
        answer = asyncio.ensure_future(self._answer(reply, batch.bots))
        answer.add_done_callback(_retrieve)
        return answer

    def _send_parts(self, batch: DecodedBatch, now_seconds: int) -> asyncio.Future[BatchResult]:
        """Cluster mode's `send_decoded`: each part of the batch applied once the same part of
        the batch sent before it is, so a part's batches reach its slot in order while parts
        go on independently (they share no key). The failure rules of `OrderedCalls`: a part
        Redis did not take fails the same part of every batch sent after it, and sending stops
        until `resume_sending`; the batches that failed are written again in order, whole, and
        their parts that were applied skip what they applied."""
        if self._send_failed is not None:
            raise StoreUnavailable("send_decoded", self._send_failed)
        pending: list[asyncio.Future[BatchResult]] = []
        facts: list[Fact] = []
        stamp = self._next_stamp()
        indices: dict[int, list[int]] = {}
        for number, part in sorted(split_batch(batch, indices).items()):
            after = self._last_parts.get(number)
            applied = asyncio.ensure_future(
                self._send_part(
                    after, number, part, now_seconds, (number, stamp, indices[number], facts)
                )
            )
            applied.add_done_callback(_retrieve)
            self._last_parts[number] = applied
            pending.append(applied)
        # The customer facts once every part was applied, after the batch before's.
        step = asyncio.ensure_future(
            self._send_customers(pending, self._last_forward, facts, now_seconds)
        )
        step.add_done_callback(_retrieve)
        self._last_forward = step
        answer = asyncio.ensure_future(_sum_parts([*pending, step], batch.bots))
        answer.add_done_callback(_retrieve)
        return answer

    async def _send_part(
        self,
        after: asyncio.Future[BatchResult] | None,
        number: int,
        part: DecodedBatch,
        now_seconds: int,
        outbox: tuple[int, int, list[int], list[Fact]],
    ) -> BatchResult:
        if after is not None:
            # An error answer fails its own batch only, as OrderedCalls'; an outage all after.
            await asyncio.wait([after])
            failure = None if after.cancelled() else after.exception()
            if isinstance(failure, StoreUnavailable):
                raise StoreUnavailable("send_decoded", failure.cause) from failure
        try:
            return await self._apply_in(self.keys.part(number), part, now_seconds, outbox)
        except StoreUnavailable as error:
            self._send_failed = error.cause
            self._drain_needed = True
            raise

    async def _send_customers(
        self,
        parts: list[asyncio.Future[BatchResult]],
        after: asyncio.Future[BatchResult] | None,
        facts: list[Fact],
        now_seconds: int,
    ) -> BatchResult:
        """Cluster mode's second calls of one sent batch (`_forward_customers`), once its parts
        and the batch before's second calls are done; nothing counted in the batch's result."""
        await asyncio.wait([*parts, *([after] if after is not None else [])])
        if any(part.cancelled() or part.exception() is not None for part in parts):
            self._drain_needed = True
            return BatchResult()
        try:
            await self._forward_customers(facts, now_seconds)
        except StoreUnavailable as error:
            self._send_failed = error.cause
            raise
        return BatchResult()

    def resume_sending(self) -> None:
        """`send_decoded` again after a failure, once the failed batches were applied."""
        if self.ordered is None:
            self._send_failed = None
            self._last_parts.clear()
            # `_last_forward` kept: the next batch's second calls wait for the failed one's,
            # which may still run, so the facts keep their (stamp, row) order.
        else:
            self.ordered.resume()

    async def _answer(self, reply: Awaitable[Any], bots: int) -> BatchResult:
        try:
            values = await reply
        except _UNAVAILABLE as error:
            raise StoreUnavailable("send_decoded", error) from error
        return BatchResult(
            applied=int(values[0]),
            duplicates=int(values[1]),
            late=int(values[2]),
            bots=bots,
            unlisted=int(values[3]),
            other_campaigns=int(values[4]),
            redelivered=int(values[5]),
        )

    async def snapshot(self, now: datetime | None = None) -> Snapshot:
        """Every channel's totals, and its 5m, 1h and 24h windows now, a day and a week ago."""
        now = now or datetime.now(UTC)
        now_seconds = epoch_micros(now) // 1_000_000
        now_minute = now_seconds // 60
        oldest_minute = self.retention.oldest_minute(now_seconds)
        needed = sorted(
            {
                bucket
                for buckets in plan_reads(now_minute, oldest_minute).values()
                for bucket in buckets
            }
        )
        names = [self.keys.totals]
        names += [self.keys.minute(n) if tier == "m" else self.keys.hour(n) for tier, n in needed]
        replies = await self._hashes("snapshot", names, transaction=True)
        buckets: dict[Bucket, dict[str, Counters]] = {
            bucket: counters_by_channel(_texts(fields))
            for bucket, fields in zip(needed, replies[1:], strict=True)
            if fields
        }
        totals = counters_by_channel(_texts(replies[0]))
        return build_snapshot(now, now_minute, oldest_minute, buckets, totals)

    async def hour_buckets(self, first_hour: int, end_hour: int) -> dict[int, dict[str, Counters]]:
        """The hour buckets first_hour .. end_hour - 1 (Unix hours) that hold anything, read in
        one MULTI/EXEC: Unix hour -> channel -> Counters. Read-only."""
        hours, _ = await self.lag_buckets(first_hour, end_hour, 0)
        return hours

    async def lag_buckets(
        self, first: int, end: int, bins: int, tier: str = "h"
    ) -> tuple[dict[int, dict[str, Counters]], dict[int, dict[str, tuple[int, ...]]]]:
        """As `hour_buckets` (`tier` "m": minute buckets first .. end - 1), and from the same
        read each bucket's delay bins per channel (`kpi.delays_by_channel`): the cohorts
        `stream.evidence` learns the lag from."""
        kept = (
            self.retention.hour_seconds // 3600
            if tier == "h"
            else self.retention.minute_seconds // 60
        )
        if end - first > kept + 1:
            raise ValueError("asked for more buckets than the retention keeps")
        hours = range(first, end)
        key = self.keys.hour if tier == "h" else self.keys.minute
        replies = await self._hashes("hour buckets", [key(h) for h in hours], transaction=True)
        counters: dict[int, dict[str, Counters]] = {}
        delays: dict[int, dict[str, tuple[int, ...]]] = {}
        for hour, fields in zip(hours, replies, strict=True):
            if fields:
                texts = _texts(fields)
                counters[hour] = counters_by_channel(texts)
                found = delays_by_channel(texts, bins)
                if found:
                    delays[hour] = found
        return counters, delays

    async def report_sums(self, request: ReportRequest) -> dict[str, dict[RowKey, Counters]]:
        """Counters per row of the request's period and of each comparison: "current" and the
        comparisons' names as keys.

        One pipeline, not a transaction: a large report's reads must not hold up the worker's
        scripts behind one MULTI/EXEC, and a month and its days agree whenever each is read.
        """
        periods = {"current": request.period, **request.comparisons}
        by_campaign = request.group_by == "campaign"
        now_seconds = int(time.time())
        oldest_minute = self.retention.oldest_minute(now_seconds)
        oldest_day = self.days.date_at(now_seconds) - timedelta(
            seconds=self.retention.day_seconds - 40 * 86_400
        )
        plans: dict[str, list[tuple[str, int]]] = {}
        for name, period in periods.items():
            if period.minutes is not None:
                plans[name] = [
                    (self.keys.minute(n) if tier == "m" else self.keys.hour(n), 1)
                    for tier, n in minute_buckets(period, oldest_minute)
                ]
            else:
                plans[name] = [
                    (
                        (self.keys.month_campaigns(n) if by_campaign else self.keys.month(n))
                        if tier == "mo"
                        else (self.keys.day_campaigns(n) if by_campaign else self.keys.day(n)),
                        sign,
                    )
                    for tier, n, sign in day_buckets(period, oldest_day)
                ]
        needed = sorted({key for plan in plans.values() for key, _ in plan})
        replies = await self._hashes("report", needed, transaction=False)
        fetched = dict(zip(needed, replies, strict=True))
        # A year by campaign is a fraction of a second of summing: off the loop, so that the
        # exporter's scrapes and other requests go on meanwhile.
        return await asyncio.to_thread(_sum_plans, fetched, plans)

    async def acquisition_sums(self, request: ReportRequest) -> dict[str, dict[str, Cohort]]:
        """A Cohort per acquisition channel for the request's period and each comparison,
        over the whole months each touches (`stream.report.cohort_months`): "current" and the
        comparisons' names as keys. One pipeline of two HGETALLs a month (spend and cohort)."""
        periods = {"current": request.period, **request.comparisons}
        months = {name: cohort_months(period) for name, period in periods.items()}
        needed = sorted({month for of_period in months.values() for month in of_period})
        names = [
            key
            for month in needed
            for key in (self.keys.month(month), self.keys.lifetime_value(month))
        ]
        replies = await self._hashes("report", names, transaction=False)
        by_month = {
            month: month_cohorts(_texts(spend), cohort_values(_texts(cohort)))
            for month, spend, cohort in zip(needed, replies[::2], replies[1::2], strict=True)
        }
        return {
            name: sum_cohorts(by_month[month] for month in of_period)
            for name, of_period in months.items()
        }

    async def month_campaigns(self, month: int) -> dict[tuple[str, str], Counters]:
        """(channel, campaign) -> Counters of local month `month` (YYYYMM), from its campaign
        bucket; campaign "" is "no campaign". Read-only, one HGETALL."""
        key = self.keys.month_campaigns(month)
        (fields,) = await self._hashes("month campaigns", [key], transaction=False)
        return {
            (channel, campaign or ""): counters
            for (channel, campaign), counters in sum_buckets(
                {key: _texts(fields)}, [(key, 1)]
            ).items()
        }

    async def cohort(self, month: int) -> dict[str, CohortValue]:
        """The customers acquired in `month` (YYYYMM) per acquisition channel, and their net
        revenue within each horizon (`stream.customers`)."""
        (fields,) = await self._hashes(
            "cohort", [self.keys.lifetime_value(month)], transaction=False
        )
        return cohort_values(_texts(fields))

    async def totals(self) -> dict[str, Counters]:
        """Lifetime counters per channel."""
        (fields,) = await self._hashes("totals", [self.keys.totals], transaction=False)
        return counters_by_channel(_texts(fields))

    async def stats(self) -> dict[str, int]:
        """Events applied, duplicates, late events and events counted as "unlisted" for want
        of room in the channel set, since the start (spend events aside)."""
        (fields,) = await self._hashes("stats", [self.keys.stats], transaction=False)
        return {name: int(value) for name, value in _texts(fields).items()}

    async def add_coupon(self, code: str, channel: str) -> None:
        """Register (or move) a coupon code to a channel; ValueError for a bad code or channel."""
        await self.import_coupons([(code, channel)])

    async def remove_coupon(self, code: str) -> bool:
        """Forget a coupon code; False if it was not registered."""
        removed = await self._call(
            "remove_coupon", self.client.hdel(self.keys.coupons, coupon_code(code))
        )
        return bool(removed)

    async def list_coupons(self) -> dict[str, str]:
        """Every registered coupon code and its channel, sorted by code."""
        fields = await self._call("list_coupons", self.client.hgetall(self.keys.coupons))
        return dict(sorted(_texts(fields).items()))

    async def import_coupons(self, rows: Iterable[tuple[str, str]]) -> int:
        """Register many (code, channel) rows in one write; all rows are checked first.

        The channels join the channel set whatever its size: an operator's registry is trusted.
        ValueError names the first bad row (counting from 1). Returns the number of codes.
        """
        mapping: dict[EncodableT, EncodableT] = {}
        for number, (code, channel) in enumerate(rows, start=1):
            try:
                mapping[coupon_code(code)] = channel_slug(channel)
            except ValueError as error:
                raise ValueError(f"row {number}: {error}") from error
        channels = {str(channel) for channel in mapping.values()} - FIXED_CHANNELS
        if mapping and self.cluster:
            # Two slots: two writes (the registry first; the set only widens the channel cap).
            await self._call("import_coupons", self.client.hset(self.keys.coupons, mapping=mapping))
            if channels:
                await self._call("import_coupons", self.client.sadd(self.keys.channels, *channels))
        elif mapping:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.coupons, mapping=mapping)
                if channels:
                    pipe.sadd(self.keys.channels, *channels)
                await self._call("import_coupons", pipe.execute())
        return len(mapping)

    async def _hashes(
        self, operation: str, names: Sequence[str], *, transaction: bool
    ) -> list[dict[str, str]]:
        """HGETALL of each key, in one pipeline (one MULTI/EXEC when `transaction`). In cluster
        mode each key's fields are summed over the parts (every bucket field is a count or a
        sum), read in one pipeline that the client sends to each master, not a transaction."""
        try:
            if not self.cluster and len(names) == 1 and not transaction:
                return [_texts(await self.client.hgetall(names[0]))]
            if not self.cluster:
                async with self.client.pipeline(transaction=transaction) as pipe:
                    for name in names:
                        pipe.hgetall(name)
                    return [_texts(reply) for reply in await pipe.execute()]
            async with self.client.pipeline() as pipe:
                for name in names:
                    for number in range(CLUSTER_PARTS):
                        pipe.hgetall(self.keys.in_part(name, number))
                replies = await pipe.execute()
        except _UNAVAILABLE as error:
            raise StoreUnavailable(operation, error) from error
        summed: list[dict[str, str]] = []
        for start in range(0, len(replies), CLUSTER_PARTS):
            sums: dict[str, int] = {}
            for reply in replies[start : start + CLUSTER_PARTS]:
                for name, value in _texts(reply).items():
                    sums[name] = sums.get(name, 0) + int(value)
            summed.append({name: str(value) for name, value in sums.items()})
        return summed

    async def _call(self, operation: str, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except _UNAVAILABLE as error:
            raise StoreUnavailable(operation, error) from error
