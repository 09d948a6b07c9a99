"""The registries the worker attributes with (coupons; phone numbers to come), kept in Kafka too.

Redis holds a registry for the worker's look-ups; a compacted Kafka topic (`adpulse.registry`,
setting `--registry-topic`) holds it for good, so that `adpulse rebuild` restores it after Redis
is lost. Every change is published to the topic first and then written to Redis, so nothing is
in Redis that the topic lacks.

One record per entry: key ``{kind}:{key}`` (``coupon:SUMMER10``), value the JSON
``{"kind": ..., "key": ..., "value": ...}``, or no value (a tombstone) for an entry removed.
Compaction keeps the newest record of each key; readers take the newest record of each key
themselves, so the result is the same on a broker that does not compact (Tansu keeps every
record although it accepts ``cleanup.policy=compact``).

A registry is one `kind` with one function that writes its entries into a `KpiStore`
(`APPLIERS`); the phone-number registry adds its kind and function there and shares the topic.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from stream.errors import StreamError
from stream.topic_reads import read, reader, span

if TYPE_CHECKING:
    from stream.store import KpiStore

logger = logging.getLogger(__name__)

TOPIC_CONFIGS: Final = {"cleanup.policy": "compact"}
MAX_ENTRIES_READ: Final = 1_000_000
"""Most registry records read by a rebuild: the registry is configuration, not traffic."""


class RegistryUnavailable(StreamError):
    """The registry topic could not be written or read; nothing of the change was applied."""

    retriable = True

    def __init__(self, topic: str, bootstrap: str, cause: BaseException) -> None:
        super().__init__(
            f"cannot reach the registry topic {topic} on Kafka at {bootstrap} "
            f"(--kafka / ADPULSE_KAFKA): {type(cause).__name__}: {cause}"
        )
        self.topic = topic
        self.bootstrap = bootstrap
        self.cause = cause


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One entry of one registry; `value` None: removed."""

    kind: str
    key: str
    value: str | None

    @property
    def record_key(self) -> bytes:
        return f"{self.kind}:{self.key}".encode()

    def record_value(self) -> bytes | None:
        if self.value is None:
            return None
        return orjson.dumps({"kind": self.kind, "key": self.key, "value": self.value})

    @classmethod
    def from_record(cls, key: bytes | None, value: bytes | None) -> RegistryEntry:
        """ValueError when the record is not a registry entry."""
        if key is None:
            raise ValueError("a registry record without a key")
        kind, colon, name = key.decode("utf-8", "replace").partition(":")
        if not colon or not kind or not name:
            raise ValueError(f"registry record key {key[:80]!r} is not kind:key")
        if value is None:
            return cls(kind, name, None)
        document = orjson.loads(value)
        if not isinstance(document, dict) or not isinstance(document.get("value"), str):
            raise ValueError(f"registry record {key[:80]!r} has no string value")
        return cls(kind, name, document["value"])


async def _apply_coupons(store: KpiStore, entries: list[RegistryEntry]) -> int:
    return await store.import_coupons(
        (entry.key, entry.value) for entry in entries if entry.value is not None
    )


Applier = Callable[["KpiStore", list[RegistryEntry]], Awaitable[int]]
APPLIERS: Final[Mapping[str, Applier]] = {"coupon": _apply_coupons}
"""Each registry kind and how its entries go into a store (a fresh key space on rebuild)."""


async def ensure_topic(bootstrap: str, topic: str) -> None:
    """Create the registry topic (compacted, one partition: changes stay in order)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="adpulse-registry")
    try:
        await admin.start()
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=dict(TOPIC_CONFIGS))])
    except KafkaError as error:
        raise RegistryUnavailable(topic, bootstrap, error) from error
    finally:
        await admin.close()


async def publish(
    bootstrap: str, topic: str, entries: Iterable[RegistryEntry], timeout: float = 10.0
) -> int:
    """Publish entries and wait until the broker has every one (acks=all); the count.

    RegistryUnavailable when Kafka does not take them: the caller must then not write Redis.
    """
    records = list(entries)
    if not records:
        return 0
    await ensure_topic(bootstrap, topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="adpulse-registry",
        acks="all",
        request_timeout_ms=round(timeout * 1000),
    )
    try:
        await producer.start()
        pending = [
            await producer.send(topic, entry.record_value(), key=entry.record_key)
            for entry in records
        ]
        for sent in pending:
            await sent
    except KafkaError as error:
        raise RegistryUnavailable(topic, bootstrap, error) from error
    finally:
        await producer.stop()
    return len(records)


@dataclass(slots=True)
class RegistryState:
    """The newest entry of each key of the registry topic (removed ones left out)."""

    entries: dict[bytes, RegistryEntry]
    records: int = 0
    unreadable: int = 0

    def of_kind(self, kind: str) -> list[RegistryEntry]:
        return [entry for entry in self.entries.values() if entry.kind == kind]


async def read_state(bootstrap: str, topic: str) -> RegistryState:
    """Every entry still registered, from the whole topic (empty when there is no topic)."""
    state = RegistryState({})
    consumer = reader(bootstrap, "adpulse-rebuild-registry")
    try:
        await consumer.start()
        whole = await span(consumer, topic)
        if whole.total > MAX_ENTRIES_READ:
            raise ValueError(
                f"the registry topic {topic} holds {whole.total} records, more than "
                f"{MAX_ENTRIES_READ}: is --registry-topic an events topic?"
            )
        async for batch in read(consumer, whole, 10_000):
            for _, record in batch:
                state.records += 1
                try:
                    entry = RegistryEntry.from_record(record.key, record.value)
                except ValueError as error:
                    state.unreadable += 1
                    logger.warning("registry record at offset %d skipped: %s", record.offset, error)
                    continue
                if entry.value is None:
                    state.entries.pop(entry.record_key, None)
                else:
                    state.entries[entry.record_key] = entry
    except KafkaError as error:
        raise RegistryUnavailable(topic, bootstrap, error) from error
    finally:
        await consumer.stop()
    return state


async def apply_state(store: KpiStore, state: RegistryState) -> dict[str, int]:
    """Write every registered entry into `store`; entries per kind (unknown kinds: counted under
    their kind with a warning, not written: a newer adpulse wrote them)."""
    written: dict[str, int] = {}
    kinds = sorted({entry.kind for entry in state.entries.values()})
    for kind in kinds:
        entries = state.of_kind(kind)
        applier = APPLIERS.get(kind)
        if applier is None:
            logger.warning("registry kind %r unknown to this adpulse: %d entries skipped", kind,
                           len(entries))  # fmt: skip
            written[f"{kind} (skipped)"] = len(entries)
            continue
        written[kind] = await applier(store, entries)
    return written
