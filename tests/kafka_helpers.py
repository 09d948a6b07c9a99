"""Kafka helpers for tests: topic creation, a background topic reader, condition waits.

    await create_topic(kafka.bootstrap, "adpulse.events.t1234abcd", partitions=4)
    async with TopicReader(kafka.bootstrap, topic) as reader:
        ...  # make the system under test produce
        records = await reader.wait_for(lambda seen: len(seen) >= 3, timeout=5)

`TopicReader` uses manual partition assignment, not a consumer group: nothing to commit, no join
or rebalance delay (joining a group on Tansu takes about 5 s), and it survives the embedded broker
forgetting every group and offset on a restart. It detects a restart by a change of cluster id
(`tests.services.KafkaBroker` gives each incarnation its own) and then reads the re-created
topic from offset 0 again, keeping what it read before. A real Kafka keeps its cluster id across
restarts and keeps its data, so there the reader just reconnects and continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

logger = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC_OR_PARTITION = 3
REQUEST_TIMEOUT_MS = 5_000


class KafkaHelperError(Exception):
    """A Kafka admin request was answered with an error code."""

    def __init__(self, operation: str, topic: str, error_code: int) -> None:
        self.operation = operation
        self.topic = topic
        self.error_code = error_code
        super().__init__(f"{operation} {topic!r} failed with Kafka error code {error_code}")


def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="adpulse-tests",
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        retry_backoff_ms=50,
    )


async def create_topic(
    bootstrap: str, name: str, partitions: int, configs: Mapping[str, str] | None = None
) -> None:
    """Create a topic with its partition count and configs; an existing topic is fine.

    Tansu auto-creates a one-partition topic on the first produce and its DescribeConfigs
    returns only the configs given here, so create topics explicitly before producing.
    """
    admin = _admin(bootstrap)
    await admin.start()
    try:
        topic = NewTopic(name, partitions, 1, topic_configs=dict(configs or {}))
        try:
            response = await admin.create_topics([topic])
        except TopicAlreadyExistsError:
            return
        for topic_name, error_code, *_ in response.topic_errors:
            if error_code not in (0, TOPIC_ALREADY_EXISTS):
                raise KafkaHelperError("create topic", topic_name, error_code)
    finally:
        await admin.close()


async def delete_topic(bootstrap: str, name: str) -> None:
    """Delete a topic; a topic that does not exist is fine."""
    admin = _admin(bootstrap)
    await admin.start()
    try:
        response = await admin.delete_topics([name])
        for topic_name, error_code, *_ in response.topic_error_codes:
            if error_code not in (0, UNKNOWN_TOPIC_OR_PARTITION):
                raise KafkaHelperError("delete topic", topic_name, error_code)
    finally:
        await admin.close()


@dataclass(frozen=True)
class ConsumedRecord:
    key: bytes | None
    value: bytes
    partition: int
    offset: int
    restarts: int
    """How many broker restarts the reader had seen when it read this record."""

    def json(self) -> Any:
        return json.loads(self.value)


class TopicReader:
    """Reads every record of one topic from the earliest offset in a background task."""

    def __init__(self, bootstrap: str, topic: str, *, poll_ms: int = 50) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.poll_ms = poll_ms
        self.records: list[ConsumedRecord] = []
        self.restarts = 0
        self._cluster_id: str | None = None
        self._assigned = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def start(self) -> None:
        # Clients are made here, not in __init__: aiokafka binds them to the running loop.
        self._admin = _admin(self.bootstrap)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id="adpulse-tests-reader",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            retry_backoff_ms=50,
            fetch_max_wait_ms=self.poll_ms,
        )
        await self._admin.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._admin.close()
            raise
        self._task = asyncio.create_task(self._run(), name=f"topic-reader-{self.topic}")
        self._task.add_done_callback(lambda _: self._changed.set())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception as error:  # already reported through wait_for
                logger.debug("topic reader ended with %r", error)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    async def __aenter__(self) -> TopicReader:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def values(self) -> list[Any]:
        """The JSON-decoded values read so far."""
        return [record.json() for record in self.records]

    async def wait_for(
        self,
        predicate: Callable[[Sequence[ConsumedRecord]], bool],
        timeout: float,
        message: str = "condition on the records read",
    ) -> list[ConsumedRecord]:
        """Wait until `predicate(records)` holds; woken by each new batch, not by a timer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._raise_if_dead()
            self._changed.clear()
            if predicate(self.records):
                return self.records
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"{message}: not met within {timeout:.1f}s on topic {self.topic!r}; "
                    f"{len(self.records)} records read, {self.restarts} broker restarts seen"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_for_count(self, count: int, timeout: float) -> list[ConsumedRecord]:
        return await self.wait_for(
            lambda records: len(records) >= count, timeout, f"at least {count} records"
        )

    def _raise_if_dead(self) -> None:
        if self._task is None:
            raise RuntimeError("TopicReader.start() was not called")
        if self._task.done():
            error = None if self._task.cancelled() else self._task.exception()
            if error is not None:
                raise error
            raise RuntimeError(f"the reader of {self.topic!r} has stopped")

    async def _run(self) -> None:
        if self._admin is None or self._consumer is None:
            raise RuntimeError("TopicReader.start() was not called")
        admin, consumer = self._admin, self._consumer
        pending: list[ConsumedRecord] = []
        while True:
            cluster_id = await self._current_cluster_id(admin)
            if cluster_id is None:  # broker unreachable: keep what was fetched, try again
                await asyncio.sleep(self.poll_ms / 1000)
                continue
            if cluster_id != self._cluster_id:
                # A new broker incarnation: a batch fetched since the last check may come from
                # either log, so drop it and read the re-created topic from the start.
                pending = []
                if self._cluster_id is not None:
                    self.restarts += 1
                    logger.info("broker restarted (%s), re-reading %s", cluster_id, self.topic)
                self._cluster_id = cluster_id
                self._assigned = False
            if not self._assigned and not await self._assign(admin, consumer):
                await asyncio.sleep(self.poll_ms / 1000)  # topic not (re-)created yet
                continue
            if pending:
                self.records.extend(pending)
                self._changed.set()
            pending = await self._fetch(consumer)

    async def _current_cluster_id(self, admin: AIOKafkaAdminClient) -> str | None:
        try:
            cluster = await asyncio.wait_for(admin.describe_cluster(), 1.0)
        except (KafkaError, OSError, TimeoutError) as error:
            logger.debug("cluster metadata unavailable: %r", error)
            return None
        cluster_id: str | None = cluster.get("cluster_id")
        return cluster_id or "unknown"

    async def _assign(self, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> bool:
        try:
            (description,) = await admin.describe_topics([self.topic])
        except (KafkaError, OSError, ValueError) as error:
            logger.debug("topic metadata unavailable: %r", error)
            return False
        if description.get("error_code") or not description.get("partitions"):
            return False
        partitions = [
            TopicPartition(self.topic, partition["partition"])
            for partition in description["partitions"]
        ]
        consumer.assign(partitions)
        if self.restarts:
            # The memory broker's new log starts at 0; Tansu answers a fetch beyond the end
            # with no records rather than OffsetOutOfRange, so nothing would reset us.
            for partition in partitions:
                consumer.seek(partition, 0)
        self._assigned = True
        return True

    async def _fetch(self, consumer: AIOKafkaConsumer) -> list[ConsumedRecord]:
        try:
            batches = await consumer.getmany(timeout_ms=self.poll_ms)
        except KafkaError as error:
            logger.debug("fetch failed: %r", error)
            return []
        return [
            ConsumedRecord(
                key=message.key,
                value=message.value,
                partition=message.partition,
                offset=message.offset,
                restarts=self.restarts,
            )
            for messages in batches.values()
            for message in messages
        ]


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    interval: float = 0.02,
    message: str = "condition",
) -> None:
    """Poll a condition (sync or async) every `interval` seconds until it holds or time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcome = predicate()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if loop.time() >= deadline:
            raise TimeoutError(f"{message}: not met within {timeout:.1f}s")
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.02,
    message: str = "condition",
) -> None:
    """`wait_until` for synchronous code, e.g. a test driving subprocesses."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{message}: not met within {timeout:.1f}s")
        time.sleep(interval)
