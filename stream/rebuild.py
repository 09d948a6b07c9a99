"""`adpulse rebuild`: the counters again from what Kafka retains, into a fresh key space.

Steps (`rebuild`):

1. The worker group must be idle: its committed offsets are read now and again at the end, and
   a rebuild during which a worker committed is refused before readers are switched (the
   events it applied would be in the old key space only). Members the broker lists are only
   warned about (Tansu lists consumers long gone).
2. A fresh key space ``adpulse-r<UTC time>:`` (`keys.rebuilt_prefix`), empty or refused. In
   cluster mode (`stream.cluster`) its parts, checked on every master, and the replay below goes
   through the cluster store's own apply path (a script call per part, the customer facts'
   outboxes) like the worker's; a `--snapshot` is restored into the parts (`stream.snapshot`,
   "Redis Cluster"), a one-instance snapshot too.
3. With `--snapshot`: its keys are restored there, and replay starts at the offsets it covers
   (`stream.snapshot` says why that is exact); a partition whose retained log starts after
   them is refused (events in between are gone). Without: from each partition's first offset.
4. The registries (coupons, tracked phone numbers) from the compacted registry topic
   (`stream.registry`); the numbers under the tracker's fixed prefix, not the new one, so live
   at once, whether readers are switched or not (they are the topic's, which a rebuild does
   not change). The topic is newer than the snapshot: an entry it removed is removed from what
   the snapshot restored.
5. Every record from the start offsets up to the end offsets read at step 3, decoded and
   applied as the worker does (`BatchWriter.decode` and `.write`, i.e. `stream.batch` and the
   apply-batch script with its dedupe), in batches, a partition's records in order, with
   progress reported; a consumer without a group reads them, so nothing is committed.
6. The pointer `keys.ACTIVE_PREFIX_KEY` set to the new prefix: workers, reports and the
   read API read it at start, the exporter on every scrape.

Afterwards the workers start where their group committed (at most the end offsets replayed):
what they read again is skipped as duplicates in the new key space. The old key space stays
until deleted (`RebuildResult.old_prefix`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from adpulse.core.click_ids import ClickKeys
from stream.batch import DecodedBatch
from stream.batch_writer import BatchWriter
from stream.errors import StoreUnavailable, StreamError
from stream.keys import ACTIVE_PREFIX_KEY, KeySpace, rebuilt_prefix
from stream.rebuild_settings import RebuildSettings
from stream.registry import apply_state, read_state
from stream.snapshot import Snapshot, check_target, check_windows, load, restore
from stream.store import KpiStore
from stream.topic_reads import Span, committed_offsets, read, reader, span
from stream.worker_metrics import WorkerMetrics

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (records replayed so far, records to replay)."""

_EMPTY_CHECK: Final = 10


class RebuildError(StreamError):
    """A rebuild that cannot start or cannot be switched to; says why and what to do."""


@dataclass(slots=True)
class RebuildResult:
    prefix: str
    old_prefix: str
    switched: bool
    records: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    bots: int = 0
    snapshot_keys: int = 0
    registry: dict[str, int] = field(default_factory=dict)
    lost_before: dict[int, int] = field(default_factory=dict)
    """Partitions whose retained log no longer starts at 0 (without a snapshot): their first
    retained offset; the counters of the events before it are not in the rebuild."""
    seconds: float = 0.0


async def group_members(bootstrap: str, group: str) -> int | None:
    """Members of the consumer group now; None when the broker cannot say."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="adpulse-rebuild")
    try:
        await admin.start()
        answers = await admin.describe_consumer_groups([group])
    except KafkaError as error:
        logger.warning("cannot describe group %s (%s); relying on its offsets only", group, error)
        return None
    finally:
        await admin.close()
    members = 0
    for answer in answers:
        for entry in answer.groups:
            members += len(entry[-1])
    return members


async def idle_group(kafka: str, topic: str, group: str) -> dict[int, int]:
    """The group's committed offsets, warning when the broker lists members of the group.

    Members are not refused: Tansu keeps listing a consumer that left the group long after it
    left. The check that holds is the caller's: the committed offsets must not move during the
    rebuild.
    """
    members = await group_members(kafka, group)
    if members:
        logger.warning(
            "the broker lists %d member(s) of group %s: if workers are running, stop them (what "
            "they commit meanwhile fails the rebuild) and start them after it",
            members,
            group,
        )
    return await committed_offsets(kafka, topic, group)


async def ensure_empty(store: KpiStore, keys: KeySpace) -> None:
    try:
        if isinstance(store.client, RedisCluster):
            # A key space's parts are spread over every master: one SCAN on each.
            _, found = await store.client.scan(
                0, match=keys.pattern, count=1000, target_nodes=RedisCluster.PRIMARIES
            )
        else:
            _, found = await store.client.scan(0, match=keys.pattern, count=1000)
    except RedisError as error:
        raise StoreUnavailable("rebuild", error) from error
    if found:
        raise RebuildError(f"the key space {keys.prefix!r} is not empty; wait a second and retry")


def _starts(whole: Span, snapshot: Snapshot | None, result: RebuildResult) -> Span:
    if snapshot is None:
        result.lost_before = {p: first for p, first in whole.starts.items() if first > 0}
        return whole
    starts = {}
    for partition, first in whole.starts.items():
        start = snapshot.offsets.get(partition, 0)
        if start < first:
            raise RebuildError(
                f"the snapshot covers partition {partition} up to offset {start}, but Kafka "
                f"retains it from offset {first} only: the events in between are gone. Use a "
                f"newer snapshot, or rebuild without --snapshot"
            )
        if start > whole.ends[partition]:
            raise RebuildError(
                f"the snapshot covers partition {partition} up to offset {start}, beyond its "
                f"end {whole.ends[partition]}: a broker that started empty (Tansu after a "
                f"restart) or another topic. Rebuild without --snapshot, or from its topic"
            )
        starts[partition] = start
    return Span(whole.topic, starts, whole.ends)


def fresh_keys() -> KeySpace:
    return KeySpace(rebuilt_prefix(datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]))


async def switch(store: KpiStore, keys: KeySpace) -> None:
    """Point every reader and worker at `keys` (`keys.ACTIVE_PREFIX_KEY`)."""
    try:
        await store.client.set(ACTIVE_PREFIX_KEY, keys.prefix)
    except RedisError as error:
        raise StoreUnavailable("switching readers", error) from error


async def rebuild(settings: RebuildSettings, progress: Progress | None = None) -> RebuildResult:
    """Rebuild into a fresh key space and (unless `no_switch`) switch readers to it."""
    began = time.monotonic()
    snapshot = await load(settings.snapshot) if settings.snapshot is not None else None
    if snapshot is not None and snapshot.topic != settings.topic:
        raise RebuildError(
            f"the snapshot covers topic {snapshot.topic}, not {settings.topic} (--topic)"
        )
    if snapshot is not None:
        check_windows(snapshot, settings.retention)
    committed = await idle_group(settings.kafka, settings.topic, settings.group)
    keys = fresh_keys()
    store = KpiStore.from_url(
        settings.redis_url,
        keys=keys,
        retention=settings.retention,
        max_channels=settings.max_channels,
        zone=ZoneInfo(settings.timezone),
        max_campaigns=settings.max_campaigns,
    )
    consumer = reader(settings.kafka, "adpulse-rebuild")
    try:
        if snapshot is not None:
            check_target(snapshot, store.cluster)
        old = KpiStore(store.client)
        old_keys = await old.follow_active_prefix()
        await ensure_empty(store, keys)
        for warning in await store.check_encodings():
            logger.warning("%s", warning)
        result = RebuildResult(keys.prefix, old_keys.prefix, switched=False)
        await consumer.start()
        whole = await span(consumer, settings.topic)
        if not whole.ends:
            raise RebuildError(
                f"Kafka at {settings.kafka} has no topic {settings.topic} (--topic, "
                f"ADPULSE_TOPIC): nothing to rebuild from"
            )
        planned = _starts(whole, snapshot, result)
        # Nothing is written before here: a refused rebuild leaves no key space behind.
        if snapshot is not None:
            result.snapshot_keys = await restore(store.client, snapshot, keys)
        state = await read_state(settings.kafka, settings.registry_topic)
        result.registry = await apply_state(store, state)
        await _replay(
            store, consumer, planned, settings.batch_size, result, progress, settings.click_keys
        )
        # Cluster mode: customer facts a snapshot held in its outboxes (taken between a batch's
        # two calls) reach their customer parts before readers are switched.
        await store.send_customer_facts()
        if await idle_group(settings.kafka, settings.topic, settings.group) != committed:
            raise RebuildError(
                f"a worker of group {settings.group} committed offsets during the rebuild: "
                f"stop every worker and run `adpulse rebuild` again; the key space "
                f"{keys.prefix!r} is left unused (delete it: redis-cli --scan --pattern "
                f"'{keys.pattern}' | xargs redis-cli unlink)"
            )
        if not settings.no_switch:
            await switch(store, keys)
            result.switched = True
        result.seconds = time.monotonic() - began
        return result
    finally:
        await consumer.stop()
        await store.close()


async def _replay(
    store: KpiStore,
    consumer: AIOKafkaConsumer,
    planned: Span,
    batch_size: int,
    result: RebuildResult,
    progress: Progress | None,
    click_keys: ClickKeys | None,
) -> None:
    # The worker's writer on a registry of its own: the same decode, rejects and retries.
    writer = BatchWriter(store, WorkerMetrics(CollectorRegistry()), click_keys=click_keys)
    total = planned.total
    if progress is not None:
        progress(0, total)
    async for records in read(consumer, planned, batch_size):
        values = [record.value if record.value is not None else b"" for _, record in records]
        decoded = writer.decode(values)
        spend, decoded.spend = DecodedBatch(spend=decoded.spend), []
        # As `stream.batch_loop`: clicks, redemptions and conversions in one call, then the
        # batch's spend in one of its own.
        for part in (decoded, spend):
            if len(part):
                applied = await writer.write(part, len(part))
                result.applied += applied.applied
                result.duplicates += applied.duplicates
        result.rejected += len(decoded.rejected)
        result.bots += decoded.bots
        result.records += len(values)
        if progress is not None:
            progress(result.records, total)
