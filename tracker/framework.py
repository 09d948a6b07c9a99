"""The tracker's adapters to aiokafka: every name of aiokafka that is not public API is used
here and nowhere else, checked at start-up (`check_framework`, which `tracker.server.serve`
runs before anything else and which refuses to start on a mismatch).

aiokafka (written for `WRITTEN_FOR`):
- `BatchBuilder._builder` and `BatchBuilder._relative_offset` (`fill_batch`): records go
  straight into the C record batch builder that aiokafka's `BatchBuilder` wraps, and the count
  the wrapper keeps is set once per batch.
- `AIOKafkaClient._conns` (`live_connections`): the producer's open broker connections, to
  notice that the broker went away and came back.
- `BatchBuilder._build()` (`batch_bytes`): the bytes of a filled batch, for tests that read
  batches back; the request path never calls it.
- `aiokafka.producer.message_accumulator.BatchBuilder`, not exported at the top level: only
  the start-up check constructs one (the publisher gets its batches from `create_batch`).

Public API instead of a private name wherever it does the same job as fast:
- `AIOKafkaProducer.create_batch()` and `send_batch(batch, topic, partition=)` make and send
  the produce batches; `partitions_for(topic)` gives the partition counts.
- Not `BatchBuilder.append(timestamp=, key=, value=, headers=)` to fill a batch: it checks
  the batch's state, runs the (absent) serializers and passes everything by keyword for each
  record, which costs markedly more per record than `fill_batch`, on every record the tracker
  accepts (`bench/tracker_batch_fill.py`; figures in bench/README.md).
- Not the cluster metadata's public `add_listener` to notice a broker restart: it hears
  metadata refreshes, not connections. A refresh also comes every `metadata_max_age_ms` and
  after any unknown topic, and a connection that aiokafka finds closed when it next needs it
  is replaced without one, so a restart could go unnoticed; the tracker would then count as
  delivered what a broker restarted empty (Tansu keeps nothing) acknowledged for a topic it
  no longer has. Comparing the connection objects costs a dict read per produce cycle; asking
  the broker for its topics after every cycle (the public way) would cost a round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any, Final

from aiokafka.client import AIOKafkaClient
from aiokafka.producer.message_accumulator import BatchBuilder

from tracker.spool import SpoolRecord

WRITTEN_FOR: Final = {"aiokafka": "0.14"}
"""The release series (major.minor) this module was written and tested for; pyproject.toml
bounds the dependency to the same (a unit test compares the two)."""

# Records carry no Kafka headers; the record batch builder takes a list and only reads it.
_NO_HEADERS: Final[list[tuple[str, bytes]]] = []


class FrameworkMismatch(Exception):
    """The installed aiokafka is not what this module was written for."""

    retriable = False

    def __init__(self, problems: Sequence[str]) -> None:
        written_for = ", ".join(f"{name} {series}.x" for name, series in WRITTEN_FOR.items())
        super().__init__(
            f"tracker/framework.py was written for {written_for}: {'; '.join(problems)}. "
            "Install the versions pyproject.toml asks for, or update tracker/framework.py"
        )
        self.problems = tuple(problems)


def installed_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in WRITTEN_FOR}


def check_framework(installed: Mapping[str, str] | None = None) -> None:
    """Fail (FrameworkMismatch) unless the installed aiokafka is the series this module was
    written for and still has every private name it uses, working as `fill_batch` expects."""
    versions = installed_versions() if installed is None else installed
    problems = [
        f"{name} {versions[name]} is installed"
        for name, series in WRITTEN_FOR.items()
        if _series(versions[name]) != series
    ]
    problems += _batch_builder_problems(versions["aiokafka"])
    problems += _client_problems(versions["aiokafka"])
    if problems:
        raise FrameworkMismatch(problems)


def _series(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _batch_builder_problems(version: str) -> list[str]:
    batch = BatchBuilder(1024, 0)
    builder = getattr(batch, "_builder", None)
    if builder is None or not callable(getattr(builder, "append", None)):
        return [f"aiokafka {version} has no BatchBuilder._builder.append"]
    if not callable(getattr(batch, "_build", None)):
        return [f"aiokafka {version} has no BatchBuilder._build"]
    if batch.record_count() != 0 or not hasattr(batch, "_relative_offset"):
        return [f"aiokafka {version} has no BatchBuilder._relative_offset"]
    batch._relative_offset = 1
    if batch.record_count() != 1:
        return [f"aiokafka {version} no longer counts a batch's records in _relative_offset"]
    return []


def _client_problems(version: str) -> list[str]:
    # The client needs an event loop to be made, though it never runs on it here.
    loop = asyncio.new_event_loop()
    try:
        client = AIOKafkaClient(loop=loop, bootstrap_servers="127.0.0.1:9")
        connections = getattr(client, "_conns", None)
    finally:
        loop.close()
    if not isinstance(connections, dict):
        return [f"aiokafka {version} has no AIOKafkaClient._conns"]
    return []


def fill_batch(
    batch: BatchBuilder, records: list[SpoolRecord], indices: list[int], start: int, now_ms: int
) -> int:
    """Append `records[i]` for `i` in `indices[start:]` until `batch` is full; how many went in.

    A batch that could not take them all is closed, so nothing else is added to it.
    """
    builder = batch._builder
    append = builder.append
    offset = 0
    for index in indices[start:]:
        record = records[index]
        # The first record always fits; a later one that does not closes the batch.
        if append(offset, now_ms, record[1], record[2], _NO_HEADERS) is None:
            break
        offset += 1
    batch._relative_offset = offset
    if start + offset < len(indices):
        batch.close()
    return offset


def live_connections(producer: Any) -> frozenset[object]:
    """The producer's open broker connections (none before it started): a different set after
    a produce cycle means the broker may have restarted, which aiokafka retries across without
    an error reaching the caller."""
    client = getattr(producer, "client", None)
    connections = getattr(client, "_conns", None)
    return frozenset(connections.values()) if isinstance(connections, dict) else frozenset()


def batch_bytes(batch: BatchBuilder) -> bytes:
    """The record batch as it goes on the wire; the batch takes no record after this."""
    return bytes(batch._build())
