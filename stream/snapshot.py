"""Snapshots: every key of a key space to a file and back, with the Kafka offsets it covers.

Kafka keeps events for its retention only; a snapshot keeps the counters older than that, so
`adpulse rebuild --snapshot FILE` starts from it and replays the events after it.

What a snapshot covers. Export first reads the worker group's committed offsets, then every key
of the live key space in one MULTI/EXEC (one moment between two batch scripts; a SCAN in the
same transaction checks no key was missed, else it reads again). A worker commits a batch's
offsets only after the batch is in Redis, so every event before those offsets is in the
snapshot; a few after them may be too (written, not yet committed). The snapshot holds the
remembered event ids with the counters they were counted in, so replaying from the offsets
skips those few as duplicates, exactly. Restore moves the event-id generations forward by the
snapshot's age (`_shifted`), so that they are still within the dedupe window when the replay
meets those events, however old the snapshot.

File: JSON (UTF-8), ``{"format": FORMAT, "prefix", "exported_at" (Unix ms), "topic",
"group", "offsets": {partition: offset}, "dedupe_seconds", "windows": {"order", "customer",
"attribution": seconds}, "keys": [{"key": name after the prefix, "type": "hash" | "set" |
"string", "expire_at": Unix ms or null, "value"}]}``.

Windows. The order, customer and click-id generations are numbered by a quarter of their window,
and a compact order or customer state counts its minute from its generation's (`stream.states`),
so the keys mean what they say only under the windows they were written with: a snapshot records
them (export refuses settings the key space's generations were not written with, which their
expiry tells: `check_written`), and restoring it under other windows is refused
(`check_windows`, `WindowMismatch`, naming the setting to change) rather than decode every
minute shifted. A snapshot from before they were recorded is restored as it always was,
assuming the importer's windows, with a warning.

Not in a snapshot: the tracked phone numbers and their leases (`adpulse.core.phone`), whose keys
share the default key space's prefix but not its life: the tracker reads them under that prefix
whatever key space is live, and the registry topic keeps the numbers (`stream.registry`), from
which `rebuild` and `snapshot import` restore them. Leases are a visit's, not worth restoring.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from adpulse.core.phone import NumberKeys
from stream.errors import StoreUnavailable, StreamError
from stream.keys import KeySpace, Retention

logger = logging.getLogger(__name__)

FORMAT: Final = "adpulse-snapshot/1"
_READ_ATTEMPTS: Final = 5
_WRITE_CHUNK: Final = 500
_READERS: Final = {"hash": "hgetall", "set": "smembers", "string": "get"}
_NUMBERS: Final = NumberKeys()
"""The tracked numbers' keys share the default key space's prefix but are not in snapshots."""


_WINDOW_SETTINGS: Final[dict[str, tuple[str, str] | None]] = {
    "order": ("ADPULSE_ORDER_DAYS", "--order-days"),
    "customer": None,
    "attribution": ("ADPULSE_ATTRIBUTION_DAYS", "--attribution-days"),
}
"""The windows a snapshot records (`Retention` fields) and the setting of each, None for one no
setting changes."""


_LAYOUT: Final = re.compile(r"(?:^|:)(ord|cust|clicks|leads):(\d+):m")
"""A generation's layout key (`stream.keys`, "Remembered ids"), which the script expires at
``(gen + 2) * period + window``: the window it was written with, read back."""
_LAYOUT_WINDOWS: Final = {
    "ord": "order",
    "leads": "order",
    "cust": "customer",
    "clicks": "attribution",
}


class SnapshotError(StreamError):
    """A snapshot that cannot be taken, read or restored; says why and what to do."""


class WindowMismatch(SnapshotError):
    """A snapshot written under other windows than the importer's (see "Windows" above)."""


def windows_of(retention: Retention) -> dict[str, int]:
    """The windows a snapshot records, in seconds."""
    return {name: int(getattr(retention, name).total_seconds()) for name in _WINDOW_SETTINGS}


def _days(seconds: int) -> str:
    return f"{seconds // 86400} days" if seconds % 86400 == 0 else f"{seconds} seconds"


def check_windows(snapshot: Snapshot, retention: Retention) -> None:
    """Refuse (`WindowMismatch`) a snapshot whose windows are not `retention`'s; warn when it
    records none (written before they were recorded) that the importer's are assumed."""
    ours = windows_of(retention)
    dedupe = int(retention.dedupe.total_seconds())
    if snapshot.windows is None:
        assumed = ", ".join(f"{name} {_days(seconds)}" for name, seconds in ours.items())
        logger.warning(
            "the snapshot records no windows (exported before they were recorded): restoring "
            "it assuming it was written under this configuration's (%s); if its workers ran "
            "with another ADPULSE_ORDER_DAYS or ADPULSE_ATTRIBUTION_DAYS, set those instead, "
            "or its orders' minutes decode shifted",
            assumed,
        )
        theirs = dict(ours)
    else:
        theirs = snapshot.windows
    problems = []
    for name, setting in _WINDOW_SETTINGS.items():
        if theirs.get(name) == ours[name]:
            continue
        change = (
            f"set {setting[0]}={theirs[name] // 86400} ({setting[1]} {theirs[name] // 86400}) "
            f"for the import and the workers, or import it where the workers run with it"
            if setting is not None and theirs.get(name, 0) % 86400 == 0
            else "no setting changes it: restore it with the adpulse version that exported it"
        )
        problems.append(
            f"the snapshot's {name} window is {_days(theirs.get(name, 0))}, this "
            f"configuration's {_days(ours[name])}: {change}"
        )
    if snapshot.dedupe_seconds != dedupe:
        problems.append(
            f"the snapshot's dedupe window is {_days(snapshot.dedupe_seconds)}, this "
            f"configuration's {_days(dedupe)}: no setting changes it: restore it with the "
            f"adpulse version that exported it"
        )
    if problems:
        raise WindowMismatch(
            "refusing the snapshot: its remembered orders, customers and click ids are "
            "numbered by windows this configuration does not have, and would be read at "
            "shifted minutes; " + "; ".join(problems)
        )


@dataclass(slots=True)
class Snapshot:
    prefix: str
    exported_at: int
    topic: str
    group: str
    offsets: dict[int, int]
    dedupe_seconds: int
    keys: list[dict[str, Any]] = field(default_factory=list)
    windows: dict[str, int] | None = None
    """`windows_of` the exporter's retention; None in a snapshot from before it was recorded."""

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": FORMAT,
            "prefix": self.prefix,
            "exported_at": self.exported_at,
            "topic": self.topic,
            "group": self.group,
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            "dedupe_seconds": self.dedupe_seconds,
        }
        if self.windows is not None:
            document["windows"] = self.windows
        document["keys"] = self.keys
        return document

    @classmethod
    def from_document(cls, document: Any, source: str) -> Snapshot:
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise SnapshotError(f"{source} is not an adpulse snapshot ({FORMAT})")
        try:
            return cls(
                prefix=str(document["prefix"]),
                exported_at=int(document["exported_at"]),
                topic=str(document["topic"]),
                group=str(document["group"]),
                offsets={int(p): int(o) for p, o in document["offsets"].items()},
                dedupe_seconds=int(document["dedupe_seconds"]),
                keys=list(document["keys"]),
                windows=_windows(document.get("windows"), source),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise SnapshotError(f"{source}: damaged snapshot ({error!r})") from error


def check_written(entries: list[dict[str, Any]], windows: dict[str, int]) -> None:
    """Refuse (`WindowMismatch`) to record `windows` for keys a generation of which was written
    under another window (an export given other settings than the workers')."""
    for entry in entries:
        match = _LAYOUT.fullmatch(entry["key"])
        if match is None or entry["expire_at"] is None:
            continue
        name, generation = _LAYOUT_WINDOWS[match[1]], int(match[2])
        window = windows[name]
        if ((generation + 2) * math.ceil(window / 4) + window) * 1000 == entry["expire_at"]:
            continue
        written = next(
            (
                days
                for days in range(1, 401)
                if ((generation + 2) * math.ceil(days * 86400 / 4) + days * 86400) * 1000
                == entry["expire_at"]
            ),
            None,
        )
        setting = _WINDOW_SETTINGS[name]
        found = f"{written} days" if written is not None else "another window"
        change = (
            f"set {setting[0]}={written} ({setting[1]} {written}) for the export, as the "
            f"workers have it"
            if setting is not None and written is not None
            else "export it with the adpulse version that wrote it"
        )
        raise WindowMismatch(
            f"the key space's {entry['key']} was written with a {name} window of {found}, "
            f"this export's is {_days(window)}: {change}"
        )


def _windows(recorded: Any, source: str) -> dict[str, int] | None:
    if recorded is None:
        return None
    windows = {str(name): int(seconds) for name, seconds in recorded.items()}
    if set(windows) != set(_WINDOW_SETTINGS) or min(windows.values()) < 1:
        raise SnapshotError(
            f"{source}: damaged snapshot (windows {recorded!r}, expected positive seconds for "
            f"{', '.join(_WINDOW_SETTINGS)})"
        )
    return windows


def write_file(snapshot: Snapshot, path: Path) -> int:
    """Write the snapshot (blocking: run it in a thread); the bytes written. Written to a
    temporary file renamed into place, so a crash never leaves half a snapshot under `path`."""
    data = orjson.dumps(snapshot.document())
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    except OSError as error:
        raise SnapshotError(f"cannot write {path}: {error}") from error
    return len(data)


def read_file(path: Path) -> Snapshot:
    """Read a snapshot file (blocking: run it in a thread)."""
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as error:
        raise SnapshotError(f"cannot read {path}: {error}") from error
    except orjson.JSONDecodeError as error:
        raise SnapshotError(f"{path} is not JSON: {error}") from error
    return Snapshot.from_document(document, str(path))


async def read_keys(client: redis.Redis, keys: KeySpace) -> tuple[int, list[dict[str, Any]]]:
    """(Redis's time in Unix ms, every key of `keys`) read at one moment (see above)."""
    for _ in range(_READ_ATTEMPTS):
        try:
            names = sorted(
                [name async for name in client.scan_iter(keys.pattern, count=1000)
                 if not _NUMBERS.holds(name)]
            )  # fmt: skip
            async with client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.type(name)
                types = [str(kind) for kind in await pipe.execute()]
            async with client.pipeline(transaction=True) as pipe:
                pipe.time()
                pipe.scan(0, match=keys.pattern, count=2**31 - 1)
                for name, kind in zip(names, types, strict=True):
                    if kind in _READERS:
                        getattr(pipe, _READERS[kind])(name)
                        pipe.pexpiretime(name)
                replies = await pipe.execute(raise_on_error=False)
        except RedisError as error:
            raise StoreUnavailable("snapshot export", error) from error
        (seconds, micros), (cursor, scanned) = replies[0], replies[1]
        unknown = [name for name, kind in zip(names, types, strict=True) if kind not in _READERS]
        if unknown:
            raise SnapshotError(f"keys of types a snapshot does not keep: {unknown[:5]}")
        values = replies[2:]
        if (
            int(cursor) != 0
            or sorted(name for name in scanned if not _NUMBERS.holds(name)) != names
            or any(isinstance(value, Exception) for value in values)
        ):
            continue  # a key came or went between the listing and the transaction
        entries = []
        for index, (name, kind) in enumerate(zip(names, types, strict=True)):
            value, expire_at = values[2 * index], int(values[2 * index + 1])
            entries.append(
                {
                    "key": name[len(keys.prefix) :],
                    "type": kind,
                    "expire_at": expire_at if expire_at > 0 else None,
                    "value": sorted(value) if kind == "set" else value,
                }
            )
        return int(seconds) * 1000 + int(micros) // 1000, entries
    raise SnapshotError(
        f"the keys under {keys.prefix!r} kept changing during {_READ_ATTEMPTS} reads; try again"
    )


def _shifted(name: str, snapshot: Snapshot, now_seconds: int) -> tuple[str, int | None]:
    """A key of an event-id generation (``ids:{gen}:{bucket}``, its layout ``ids:{gen}:m``)
    moved forward by the snapshot's age, and its new expiry (Unix seconds), as the apply-batch
    script names and expires them (`keys.KeySpace.generation`). Order and customer generations
    keep their names: a compact state counts its minute from its generation's (`stream.states`)."""
    window = snapshot.dedupe_seconds
    period = math.ceil(window / 4)
    shift = now_seconds // period - snapshot.exported_at // 1000 // period
    number, colon, part = name.removeprefix("ids:").partition(":")
    if shift <= 0:
        return name, None
    moved = int(number) + shift
    return f"ids:{moved}{colon}{part}", (moved + 2) * period + window


async def restore(
    client: redis.Redis, snapshot: Snapshot, keys: KeySpace, now_ms: int | None = None
) -> int:
    """Write the snapshot's keys under `keys` (which should be empty); the keys written.

    Keys whose expiry has passed are left out; event-id generations are moved forward (above).
    """
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    written = 0
    try:
        for first in range(0, len(snapshot.keys), _WRITE_CHUNK):
            async with client.pipeline(transaction=False) as pipe:
                for entry in snapshot.keys[first : first + _WRITE_CHUNK]:
                    name, kind, value = entry["key"], entry["type"], entry["value"]
                    expire_at_ms = entry["expire_at"]
                    if expire_at_ms is not None and expire_at_ms <= now_ms:
                        continue
                    if name.startswith("ids:") and name[4:].partition(":")[0].isdigit():
                        name, expire_at = _shifted(name, snapshot, now_ms // 1000)
                        if expire_at is not None:
                            expire_at_ms = expire_at * 1000
                    full = keys.prefix + name
                    if kind == "hash" and value:
                        pipe.hset(full, mapping=value)
                    elif kind == "set" and value:
                        pipe.sadd(full, *value)
                    elif kind == "string" and value is not None:
                        pipe.set(full, value)
                    else:
                        continue
                    if expire_at_ms is not None:
                        pipe.pexpireat(full, expire_at_ms)
                    written += 1
                await pipe.execute()
    except RedisError as error:
        raise StoreUnavailable("snapshot restore", error) from error
    return written


async def export_snapshot(
    client: redis.Redis,
    keys: KeySpace,
    offsets: dict[int, int],
    topic: str,
    group: str,
    retention: Retention | None = None,
) -> Snapshot:
    """The snapshot of `keys`; `offsets`: the group's committed offsets, read just before;
    `retention`: the workers' (their windows numbered the generations)."""
    retention = retention or Retention()
    exported_at, entries = await read_keys(client, keys)
    check_written(entries, windows_of(retention))
    return Snapshot(
        prefix=keys.prefix,
        exported_at=exported_at,
        topic=topic,
        group=group,
        offsets=offsets,
        dedupe_seconds=int(retention.dedupe.total_seconds()),
        keys=entries,
        windows=windows_of(retention),
    )


async def save(snapshot: Snapshot, path: Path) -> int:
    return await asyncio.to_thread(write_file, snapshot, path)


async def load(path: Path) -> Snapshot:
    return await asyncio.to_thread(read_file, path)
