"""The registries adpulse attributes with (coupons, tracked phone numbers), kept in Kafka too.

Redis holds each registry for the look-ups (the worker's coupons, the tracker's numbers); a
compacted Kafka topic (`adpulse.registry`, setting `--registry-topic`) holds them for good, so
that `adpulse rebuild` restores them after Redis is lost. Every change is published to the topic
first and then written to Redis (`Registrar`), so nothing is in Redis that the topic lacks.

One record per entry: key ``{kind}:{key}`` (``coupon:SUMMER10``, ``number:+14155550100``),
value the JSON ``{"kind": ..., "key": ..., "value": ...}``, or no value (a tombstone) for an
entry removed. A coupon's value is its channel; a number's is its registry form in Redis,
``{static|pool}\t{channel}\t{campaign}`` (`NumberEntry.encode`). Compaction keeps the newest
record of each key; readers take the newest record of each key themselves, so the result is the
same on a broker that does not compact (Tansu keeps every record although it accepts
``cleanup.policy=compact``).

A registry is one `kind` with one `Book`, its entries in Redis (`BOOKS`): coupons in the KPI
store's key space (a rebuild writes them into the fresh one), numbers under the tracker's fixed
prefix (`adpulse.core.phone.NumberKeys`, which does not follow rebuilds; on a Redis Cluster under
one hash tag after it, `NumberKeys.in_cluster`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from redis.exceptions import RedisClusterException, RedisError

from adpulse.core.channels import channel_slug
from adpulse.core.phone import NumberEntry, NumberKeys
from stream.errors import StoreUnavailable, StreamError
from stream.number_registry import NumberRegistry
from stream.store import coupon_code
from stream.topic_reads import read, reader, span

if TYPE_CHECKING:
    from stream.store import KpiStore

logger = logging.getLogger(__name__)

TOPIC_CONFIGS: Final = {"cleanup.policy": "compact"}
_UNAVAILABLE: Final = (RedisError, RedisClusterException)
"""Redis failing, also a cluster whose client finds no node for a slot (not a RedisError)."""
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


def coupon_entry(code: str, channel: str | None) -> RegistryEntry:
    """A coupon's entry in its registry form (channel None: removed); ValueError with the
    reason for a bad code or channel."""
    return RegistryEntry(
        "coupon", coupon_code(code), None if channel is None else channel_slug(channel)
    )


def number_entry(number: NumberEntry) -> RegistryEntry:
    return RegistryEntry("number", number.number, number.encode())


class Book(Protocol):
    """One registry's entries in Redis, as the keys and values of its records."""

    async def read(self) -> dict[str, str]: ...

    async def write(self, entries: Sequence[RegistryEntry]) -> int: ...

    async def remove(self, key: str) -> bool: ...


class CouponBook:
    """Coupon code -> channel, in the store's key space."""

    def __init__(self, store: KpiStore) -> None:
        self.store = store

    async def read(self) -> dict[str, str]:
        return await self.store.list_coupons()

    async def write(self, entries: Sequence[RegistryEntry]) -> int:
        return await self.store.import_coupons(
            (entry.key, entry.value) for entry in entries if entry.value is not None
        )

    async def remove(self, key: str) -> bool:
        return await self.store.remove_coupon(key)


class NumberBook:
    """E.164 number -> `NumberEntry.encode()`, under the tracker's prefix whatever the store's
    key space: the tracker reads its numbers there, rebuilt or not. On a Redis Cluster, under
    the prefix and one hash tag (`NumberKeys.in_cluster`), where the tracker's number desk on
    the cluster reads them."""

    def __init__(self, store: KpiStore) -> None:
        keys = NumberKeys.in_cluster() if store.cluster else NumberKeys()
        self.numbers = NumberRegistry(store.client, keys)

    async def read(self) -> dict[str, str]:
        try:
            return {found.number: found.encode() for found in await self.numbers.entries()}
        except _UNAVAILABLE as error:
            raise StoreUnavailable("reading the numbers", error) from error

    async def write(self, entries: Sequence[RegistryEntry]) -> int:
        numbers = [NumberEntry.decode(e.key, e.value) for e in entries if e.value is not None]
        try:
            await self.numbers.register(numbers)
        except _UNAVAILABLE as error:
            raise StoreUnavailable("registering numbers", error) from error
        return len(numbers)

    async def remove(self, key: str) -> bool:
        try:
            return await self.numbers.remove(key)
        except _UNAVAILABLE as error:
            raise StoreUnavailable("removing a number", error) from error


BOOKS: Final[Mapping[str, Callable[[KpiStore], Book]]] = {
    "coupon": CouponBook,
    "number": NumberBook,
}
"""Each registry kind and where its entries are in Redis (a fresh key space on rebuild)."""


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
    """The newest record of each key of the registry topic: the registered entries, and the
    removed ones (`removed`, whose newest record is a tombstone)."""

    entries: dict[bytes, RegistryEntry]
    removed: dict[bytes, RegistryEntry] = field(default_factory=dict)
    records: int = 0
    unreadable: int = 0

    def of_kind(self, kind: str) -> list[RegistryEntry]:
        return [entry for entry in self.entries.values() if entry.kind == kind]

    def removed_of_kind(self, kind: str) -> list[RegistryEntry]:
        return [entry for entry in self.removed.values() if entry.kind == kind]


async def read_state(bootstrap: str, topic: str) -> RegistryState:
    """Every entry still registered and every one removed, from the whole topic (empty when
    there is no topic)."""
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
                    state.removed[entry.record_key] = entry
                else:
                    state.removed.pop(entry.record_key, None)
                    state.entries[entry.record_key] = entry
    except KafkaError as error:
        raise RegistryUnavailable(topic, bootstrap, error) from error
    finally:
        await consumer.stop()
    return state


async def apply_state(store: KpiStore, state: RegistryState) -> dict[str, int]:
    """Make `store`'s registries say what the topic says: write every registered entry and
    remove every entry whose newest record is a tombstone, since the topic is newer than
    whatever Redis holds (a snapshot restored before, a Redis restored from a backup, a
    removal whose Redis write never came).

    Returns the entries written per kind and, under ``"{kind} removed"``, those removed that
    were there (unknown kinds: counted under their kind with a warning, not written: a newer
    adpulse wrote them).
    """
    written: dict[str, int] = {}
    kinds = sorted({entry.kind for entry in (*state.entries.values(), *state.removed.values())})
    for kind in kinds:
        entries, removed = state.of_kind(kind), state.removed_of_kind(kind)
        book = BOOKS.get(kind)
        if book is None:
            logger.warning("registry kind %r unknown to this adpulse: %d entries skipped", kind,
                           len(entries) + len(removed))  # fmt: skip
            written[f"{kind} (skipped)"] = len(entries) + len(removed)
            continue
        registry = book(store)
        if entries:
            written[kind] = await registry.write(entries)
        # One call per removal: tombstones are the rare changes of an operator's registry.
        gone = [await registry.remove(entry.key) for entry in removed]
        if any(gone):
            written[f"{kind} removed"] = sum(gone)
    return written


@dataclass(frozen=True, slots=True)
class Registrar:
    """Changes to the registries: each to the registry topic first, then to Redis; the topic
    unreachable (`RegistryUnavailable`): no change."""

    kafka: str
    topic: str
    store: KpiStore

    def book(self, kind: str) -> Book:
        return BOOKS[kind](self.store)

    async def entries(self, kind: str) -> dict[str, str]:
        """The registered entries of `kind`, sorted by key."""
        return dict(sorted((await self.book(kind).read()).items()))

    async def register(self, entries: Sequence[RegistryEntry]) -> list[str | None]:
        """Register (or move) `entries`, of any kinds; the value each had before (None: new)."""
        kinds: dict[str, list[RegistryEntry]] = {}
        for entry in entries:
            kinds.setdefault(entry.kind, []).append(entry)
        found = {kind: await self.book(kind).read() for kind in kinds}
        await publish(self.kafka, self.topic, entries)
        for kind, group in kinds.items():
            await self.book(kind).write(group)
        return [found[entry.kind].get(entry.key) for entry in entries]

    async def remove(self, kind: str, key: str) -> bool:
        """Forget `key` (a tombstone on the topic, then Redis); False: it was not registered."""
        book = self.book(kind)
        if key not in await book.read():
            return False
        await publish(self.kafka, self.topic, [RegistryEntry(kind, key, None)])
        return await book.remove(key)
