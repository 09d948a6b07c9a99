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

File: JSON (UTF-8), ``{"format": FORMAT (a cluster's: CLUSTER_FORMAT, "parts": CLUSTER_PARTS),
"prefix", "exported_at" (Unix ms), "topic", "group", "offsets": {partition: offset},
"dedupe_seconds", "windows": {"order", "customer", "attribution": seconds}, "keys": [{"key":
name after the prefix, "type": "hash" | "set" | "string" | "list" (a cluster's outboxes),
"expire_at": Unix ms or null, "value"}]}``.

Windows. The order, customer and click-id generations are numbered by a quarter of their window,
and a compact order or customer state counts its minute from its generation's (`stream.states`),
so the keys mean what they say only under the windows they were written with: a snapshot records
them (export refuses settings the key space's generations were not written with, which their
expiry tells: `check_written`), and restoring it under other windows is refused
(`check_windows`, `WindowMismatch`, naming the setting to change) rather than decode every
minute shifted. A snapshot from before they were recorded is restored as it always was,
assuming the importer's windows, with a warning.

Redis Cluster (`keys`, "Redis Cluster"). A snapshot of a cluster's key space keeps every key of
every part under its name after the key space's prefix, which then begins with the part's hash
tag (``{c3.0}:m:123``), and the root keys (the coupon registry, the registry's channel set)
without one; it says so by its format, `CLUSTER_FORMAT`, and its ``"parts"`` (`CLUSTER_PARTS`),
so an adpulse that knows only one instance refuses it instead of restoring it where nothing
reads it. Export reads each part at one moment on the master that serves its slot (all of a
part's keys are in one slot: one MULTI/EXEC, as above), the parts one after another, and the
root keys apart (they change only with an operator's registration). Parts read at different
moments would disagree on the customer facts on their way between them (`keys`, "Customers
across parts"): a part may have applied a fact its source had not yet written when the source
was read, or the source may have dropped one its customer part had not yet applied when that
was read. So export checks that every fact is either still in its source's outbox or applied
by its customer part, never neither and never beyond what its source holds (`check_outboxes`):
only those facts cross parts, so parts that pass agree, and the snapshot is exact. It reads
first while workers write (nothing waits); only where that check fails (facts moved during the
read) or a part's keys kept changing under its reads (`KeysChanging`), as under a busy worker,
it reads again with writes paused on every master (CLIENT PAUSE WRITE; readers go on, a
worker's calls and the tracker's number leases, `{numbers}` on one of the masters, wait), in
leases of `PAUSE_LEASE_MS` renewed while the read goes on, once and for at most
`PAUSE_LIMIT_SECONDS` (a key space too big to read in that fails the export, saying to
stop the workers for it); an export killed meanwhile leaves writes paused one lease at most.
Where a master refuses to pause (before Redis 6.2, or without the @admin commands), or the
paused read still disagrees (a pause that lapsed), it reads again without, at most
`_READ_ATTEMPTS` reads, and a busy cluster's export may fail, saying to stop the workers.
Import writes each key to its part (a pipeline the cluster client splits per master).

A one-instance snapshot restores into a cluster too (`into_parts`): the counters, stats and
cohorts go to part 0 (readers sum a bucket over the parts), a spend record to its event id's
part, a history import's record of a row to its channel's part and a cost import's record
outside the parts (where imports on a cluster keep them), a remembered customer to its
customer part (`customer_part`, `_customers_in_parts`), and
what a row's part reads as it applies the row (remembered event, lead and caller ids, orders,
clicks, the channel and campaign sets, the applied offsets) to every part, since which part a
remembered id's row routed to cannot be told from its fingerprint. So the cluster counts on
as the instance would have, but for an order restated under both of its keys: a restored order
restated once with its click id (its part p) and again with its order id alone (part q) has in
q the copy restored before the first, so the second applies the change again (native cluster
mode counts such a restatement as a new order: `keys`, "Redis Cluster"). The price is those
keys' memory once per part (`CLUSTER_PARTS` times) until their generations expire: event ids
after the dedupe window, clicks after the attribution window, orders after the order window.
The way back is refused:
a cluster's parts have their own generations, which one instance cannot merge (rebuild the
instance from Kafka instead).

Not in a snapshot: the tracked phone numbers and their leases (`adpulse.core.phone`), whose keys
share the default key space's prefix but not its life: the tracker reads them under that prefix
whatever key space is live, and the registry topic keeps the numbers (`stream.registry`), from
which `rebuild` and `snapshot import` restore them. Leases are a visit's, not worth restoring.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from adpulse.core.phone import NumberKeys
from stream.errors import StoreUnavailable, StreamError
from stream.keys import CLUSTER_PARTS, CLUSTER_TAGS, KeySpace, Retention, part_of

logger = logging.getLogger(__name__)

FORMAT: Final = "adpulse-snapshot/1"
CLUSTER_FORMAT: Final = "adpulse-cluster-snapshot/1"
"""A cluster's snapshot: its key names carry their part (see "Redis Cluster" above)."""
_READ_ATTEMPTS: Final = 5
_WRITE_CHUNK: Final = 500
_READERS: Final = {"hash": "hgetall", "set": "smembers", "string": "get", "list": "lrange"}
_REDIS_ERRORS: Final = (RedisError, RedisClusterException)
PAUSE_LEASE_MS: Final = 2_000
"""A cluster export's pause of writes (`_read_paused`) lasts so long and is renewed while the
read goes on: should the export die, Redis resumes writes on its own within it."""
PAUSE_LIMIT_SECONDS: Final = 5.0
"""A cluster export pauses writes for at most so long, once (`read_cluster_keys`)."""
_PART_OF_TAG: Final = {f"{{{tag}}}:": number for number, tag in enumerate(CLUSTER_TAGS)}
_EVERY_PART: Final = frozenset({"ids", "ord", "cust", "leads", "clicks", "callers", "channels",
                                "cs", "offsets"})  # fmt: skip
"""A one-instance key a row's part reads as it applies the row (`into_parts`)."""
_CUSTOMER_BUCKET: Final = re.compile(r"cust:(\d+):\d+")
_CUSTOMER_LAYOUT: Final = re.compile(r"cust:(\d+):m")
_CUSTOMER_BITS: Final = re.compile(r"cust:(\d+):e")
_ROOT: Final = frozenset({"coupons", "channels", "ci"})
"""Keys a cluster keeps once, outside the parts: the registry's (`keys`, "Redis Cluster") and a
cost import's record of a source and day (`stream.imports`)."""
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


class KeysChanging(SnapshotError):
    """Keys came and went between the listing and the read, read after read (`read_keys`)."""


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
    parts: int | None = None
    """A cluster's snapshot: its parts (`keys.CLUSTER_PARTS`), named in its keys; None: one
    instance's."""

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"format": FORMAT if self.parts is None else CLUSTER_FORMAT}
        if self.parts is not None:
            document["parts"] = self.parts
        document |= {
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
        if not isinstance(document, dict) or document.get("format") not in (
            FORMAT,
            CLUSTER_FORMAT,
        ):
            raise SnapshotError(
                f"{source} is not an adpulse snapshot ({FORMAT} or {CLUSTER_FORMAT})"
            )
        try:
            parts = None if document["format"] == FORMAT else int(document["parts"])
            return cls(
                prefix=str(document["prefix"]),
                exported_at=int(document["exported_at"]),
                topic=str(document["topic"]),
                group=str(document["group"]),
                offsets={int(p): int(o) for p, o in document["offsets"].items()},
                dedupe_seconds=int(document["dedupe_seconds"]),
                keys=list(document["keys"]),
                windows=_windows(document.get("windows"), source),
                parts=parts,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise SnapshotError(f"{source}: damaged snapshot ({error!r})") from error


def check_written(entries: list[dict[str, Any]], windows: dict[str, int]) -> None:
    """Refuse (`WindowMismatch`) to record `windows` for keys a generation of which was written
    under another window (an export given other settings than the workers')."""
    for entry in entries:
        match = _LAYOUT.fullmatch(_part_tag(entry["key"])[1])
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


async def read_keys(
    client: redis.Redis, keys: KeySpace, anchor: str | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """(Redis's time in Unix ms, every key of `keys`) read at one moment (see above). `anchor`:
    a cluster part's key, which makes a master that no longer serves the part's slot refuse
    the transaction (MOVED) rather than answer an empty part."""
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
            if "none" in types:
                continue  # a key went between the listing and its type: list them again
            async with client.pipeline(transaction=True) as pipe:
                pipe.time()
                pipe.scan(0, match=keys.pattern, count=2**31 - 1)
                if anchor is not None:
                    pipe.exists(anchor)
                for name, kind in zip(names, types, strict=True):
                    if kind == "list":
                        pipe.lrange(name, 0, -1)
                        pipe.pexpiretime(name)
                    elif kind in _READERS:
                        getattr(pipe, _READERS[kind])(name)
                        pipe.pexpiretime(name)
                replies = await pipe.execute(raise_on_error=False)
        except RedisError as error:
            raise StoreUnavailable("snapshot export", error) from error
        (seconds, micros), (cursor, scanned) = replies[0], replies[1]
        unknown = [name for name, kind in zip(names, types, strict=True) if kind not in _READERS]
        if unknown:
            raise SnapshotError(f"keys of types a snapshot does not keep: {unknown[:5]}")
        values = replies[2 if anchor is None else 3 :]
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
    raise KeysChanging(
        f"the keys under {keys.prefix!r} kept changing during {_READ_ATTEMPTS} reads; try again"
    )


def _part_tag(name: str) -> tuple[str, str]:
    """A cluster snapshot's key name cut into its part's tag (``{c3.0}:``; "" for a root key
    or one instance's) and the rest."""
    if name.startswith("{"):
        tag = name[: name.find("}:") + 2]
        if tag in _PART_OF_TAG:
            return tag, name[len(tag) :]
    return "", name


async def _node_clients(cluster: RedisCluster, keys: KeySpace) -> dict[int, redis.Redis]:
    """Part number -> a client of the master that serves its slot (a connection of its own:
    MULTI/EXEC, SCAN and TIME on that master, as on one instance)."""
    await cluster.initialize()
    clients: dict[str, redis.Redis] = {}
    parts: dict[int, redis.Redis] = {}
    for number in range(CLUSTER_PARTS):
        node = cluster.get_node_from_key(keys.part(number).stats)
        if node is None:
            raise SnapshotError(f"no master serves part {number}'s slot: is the cluster ok?")
        if node.name not in clients:
            pool = ConnectionPool(
                connection_class=node.connection_class,
                max_connections=2,
                **{k: v for k, v in node.connection_kwargs.items() if k != "event_dispatcher"},
            )
            clients[node.name] = redis.Redis(connection_pool=pool)
        parts[number] = clients[node.name]
    return parts


async def _read_root(cluster: RedisCluster, keys: KeySpace) -> list[dict[str, Any]]:
    """A cluster key space's keys outside its parts (the registry's coupons and channels), each
    read on its own: they change only with an operator's registration."""
    pattern = keys.prefix + "[^{]*"
    names = sorted(
        {name async for name in cluster.scan_iter(match=pattern, count=1000)
         if not _NUMBERS.holds(name)}
    )  # fmt: skip
    entries = []
    for name in names:
        kind = str(await cluster.type(name))
        if kind == "none":
            continue  # gone since the listing
        if kind not in ("hash", "set", "string"):
            raise SnapshotError(f"keys of types a snapshot does not keep: {[name]}")
        value = await getattr(cluster, _READERS[kind])(name)
        expire_at = int(await cluster.pexpiretime(name))
        entries.append(
            {
                "key": name[len(keys.prefix) :],
                "type": kind,
                "expire_at": expire_at if expire_at > 0 else None,
                "value": sorted(value) if kind == "set" else value,
            }
        )
    return entries


def check_outboxes(entries: list[dict[str, Any]]) -> str | None:
    """Why parts read at different moments disagree on a customer fact (see "Redis Cluster"
    above), or None: each part's outbox for each customer part holds the facts numbered from
    its head to its last (``outbox`` hash), and the customer part has applied (``offsets``,
    ``outbox:{part}``) every fact before that head and none beyond that last."""
    by_name = {entry["key"]: entry["value"] for entry in entries}
    for source, source_tag in enumerate(CLUSTER_TAGS):
        lasts = by_name.get(f"{{{source_tag}}}:outbox") or {}
        for destination, destination_tag in enumerate(CLUSTER_TAGS):
            last = int(lasts.get(str(destination), 0))
            waiting = len(by_name.get(f"{{{source_tag}}}:outbox:{destination}") or [])
            applied_by = by_name.get(f"{{{destination_tag}}}:offsets") or {}
            applied = int(applied_by.get(f"outbox:{source}", 0))
            if not last - waiting <= applied <= last:
                return (
                    f"part {destination} had applied customer fact {applied} of part {source}, "
                    f"which holds facts {last - waiting + 1} to {last}"
                )
    return None


async def read_cluster_keys(
    cluster: RedisCluster, keys: KeySpace
) -> tuple[int, list[dict[str, Any]]]:
    """(The earliest moment a part was read at, in Redis's Unix ms; every key of every part of
    `keys`, named with its part's tag, and its root keys), see "Redis Cluster" above: read while
    workers write, then, only if a customer fact moved between two parts meanwhile, again with
    writes paused (`_read_paused`), or without where a master refuses to pause."""
    try:
        clients = await _node_clients(cluster, keys)
    except _REDIS_ERRORS as error:
        raise StoreUnavailable("snapshot export", error) from error
    masters = list({id(client): client for client in clients.values()}.values())
    disagreement = None
    pause = False  # once at most, after a read that found facts moved
    try:
        for attempt in range(_READ_ATTEMPTS):
            read = None
            if pause:
                read = await _read_paused(cluster, clients, masters, keys)
            try:
                moments, entries = read or await _read_parts(cluster, clients, keys)
            except KeysChanging as error:
                # A busy part's outboxes come and go under its reads: as facts that moved.
                if attempt == _READ_ATTEMPTS - 1:
                    raise
                disagreement = str(error)
            else:
                disagreement = check_outboxes(entries)
                if disagreement is None:
                    return min(moments), entries
            pause = attempt == 0
            logger.info("reading the parts again%s: %s (a worker wrote meanwhile)",
                        " with writes paused" if pause else "", disagreement)  # fmt: skip
    finally:
        for client in masters:
            await client.aclose(close_connection_pool=True)
    raise SnapshotError(
        f"the parts of {keys.prefix!r} kept moving customer facts between them during "
        f"{_READ_ATTEMPTS} reads ({disagreement}); try again, or stop the workers for the export"
    )


async def _read_paused(
    cluster: RedisCluster,
    clients: dict[int, redis.Redis],
    masters: list[redis.Redis],
    keys: KeySpace,
    paused: list[redis.Redis] | None = None,
) -> tuple[list[int], list[dict[str, Any]]] | None:
    """`_read_parts` with writes paused on every master (CLIENT PAUSE WRITE: readers go on, a
    worker's or the tracker's writes wait) for `PAUSE_LEASE_MS` at a time, renewed while the
    read goes on, at most `PAUSE_LIMIT_SECONDS` in all; None (with a warning) where a master
    refuses to pause. `paused`: the masters a pause was sent to, resumed whatever happens."""
    paused = [] if paused is None else paused
    started = time.monotonic()
    try:
        if not await _pause_writes(masters, paused):
            return None
        renewing = asyncio.ensure_future(_renew_pause(paused))
        try:
            async with asyncio.timeout(PAUSE_LIMIT_SECONDS):
                return await _read_parts(cluster, clients, keys)
        except TimeoutError:
            raise SnapshotError(
                f"reading the parts of {keys.prefix!r} took longer than the "
                f"{PAUSE_LIMIT_SECONDS:g} s writes may be paused for, and customer facts "
                f"moved between them when read while workers write: stop the workers for the "
                f"export (then nothing moves and no pause is needed)"
            ) from None
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
    finally:
        pausing = bool(paused)
        await _resume_writes(paused)
        if pausing:
            logger.info("writes were paused on the cluster's %d masters for %.2f s",
                        len(masters), time.monotonic() - started)  # fmt: skip


async def _pause_writes(masters: list[redis.Redis], paused: list[redis.Redis]) -> bool:
    """Pause writes on every master (see `_read_paused`), each added to `paused` before its
    pause is sent (one cancelled on its way may have paused): False (with a warning, none
    paused) where a master refuses."""
    try:
        for master in masters:
            paused.append(master)
            await master.client_pause(PAUSE_LEASE_MS, all=False)
    except ResponseError as error:
        logger.warning(
            "cannot pause writes on the cluster's masters (%s: CLIENT PAUSE needs Redis 6.2 and "
            "the @admin commands): reading the parts while workers write, and again if a "
            "customer fact moved between two of them meanwhile",
            error,
        )
        await _resume_writes(paused)
        return False
    except _REDIS_ERRORS as error:
        raise StoreUnavailable("snapshot export", error) from error
    return True


async def _renew_pause(paused: list[redis.Redis]) -> None:
    """Pause the masters again every quarter of `PAUSE_LEASE_MS` (Redis keeps the later end):
    writes stay paused while the read goes on, and resume soon after an export that dies."""
    while True:
        await asyncio.sleep(PAUSE_LEASE_MS / 4000)
        for master in paused:
            try:
                await master.client_pause(PAUSE_LEASE_MS, all=False)
            except _REDIS_ERRORS as error:
                # A lapsed pause lets facts move: `check_outboxes` catches that.
                logger.warning("cannot renew the pause of writes on a master (%s)", error)


async def _resume_writes(paused: list[redis.Redis]) -> None:
    """Resume writes on the `paused` masters (emptied), to the end even when the export is
    cancelled meanwhile (the cancellation then goes on): each within the pause's own length,
    after which Redis resumes them anyway."""
    resuming = asyncio.ensure_future(_unpause(paused[:]))
    paused.clear()
    cancelled = False
    while not resuming.done():
        try:
            await asyncio.shield(resuming)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


async def _unpause(masters: list[redis.Redis]) -> None:
    for master in masters:
        try:
            async with asyncio.timeout(PAUSE_LEASE_MS / 1000):
                await master.client_unpause()
        except (*_REDIS_ERRORS, TimeoutError) as error:
            logger.warning("cannot resume writes on a master (%r): they resume on their own "
                           "within %g s", error, PAUSE_LEASE_MS / 1000)  # fmt: skip


async def _read_parts(
    cluster: RedisCluster, clients: dict[int, redis.Redis], keys: KeySpace
) -> tuple[list[int], list[dict[str, Any]]]:
    """Each part's moment and keys (named with its tag), then the root keys."""
    moments: list[int] = []
    entries: list[dict[str, Any]] = []
    for number in range(CLUSTER_PARTS):
        part = keys.part(number)
        moment, found = await read_keys(clients[number], part, anchor=part.stats)
        moments.append(moment)
        tag = part.prefix[len(keys.prefix) :]
        entries += [entry | {"key": tag + entry["key"]} for entry in found]
    try:
        entries += await _read_root(cluster, keys)
    except _REDIS_ERRORS as error:
        raise StoreUnavailable("snapshot export", error) from error
    return moments, entries


def customer_part(fingerprint: str) -> int:
    """The part a customer lives in (`keys`, "Customers across parts"), as the apply-batch
    script computes it (`events.lua`): the first 32 bits of the SHA1 of its fingerprint,
    scaled to `CLUSTER_PARTS`."""
    high = int(hashlib.sha1(fingerprint.encode(), usedforsecurity=False).hexdigest()[:8], 16)
    return high * CLUSTER_PARTS // 2**32


def _customers_in_parts(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A one-instance snapshot's customer generations cut by customer part: key name -> the
    entry for each part. A bucket keeps its part's customers, so the generation's layout still
    places them; a layout counts its part's customers, and a bucket left without any (a key
    the part lacks, which a later write would create without its expiry) in ``x`` (for a
    script before the expiry bits) and by leaving out the generation's bits (``:e``)."""
    buckets: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, list[int]] = {}
    missing: dict[str, list[int]] = {}
    for entry in entries:
        match = _CUSTOMER_BUCKET.fullmatch(entry["key"])
        if match is None or entry["type"] != "hash":
            continue
        by_part: list[dict[str, str]] = [{} for _ in range(CLUSTER_PARTS)]
        for customer, state in entry["value"].items():
            by_part[customer_part(customer)][customer] = state
        generation = match[1]
        counts.setdefault(generation, [0] * CLUSTER_PARTS)
        missing.setdefault(generation, [0] * CLUSTER_PARTS)
        buckets[entry["key"]] = []
        for number, (tag, kept) in enumerate(zip(CLUSTER_TAGS, by_part, strict=True)):
            counts[generation][number] += len(kept)
            if kept:
                buckets[entry["key"]].append(entry | {"key": f"{{{tag}}}:{entry['key']}",
                                                      "value": kept})  # fmt: skip
            else:
                missing[generation][number] += 1
    for entry in entries:
        bits = _CUSTOMER_BITS.fullmatch(entry["key"])
        if bits is not None and bits[1] in counts:
            # The instance's bits say which buckets have their expiry; a part lacks some of
            # them, and a bucket it creates under a set bit would get none. Without bits, each
            # part's script sets the expiry on its first write to each bucket, and the bits.
            buckets[entry["key"]] = []
            continue
        match = _CUSTOMER_LAYOUT.fullmatch(entry["key"])
        if match is None or entry["type"] != "hash" or match[1] not in counts:
            continue
        layout, generation = entry["value"], match[1]
        buckets[entry["key"]] = []
        for number, tag in enumerate(CLUSTER_TAGS):
            # Buckets the instance lacked too are in its own x already; count ours beside.
            lacking = int(layout.get("x", 0)) + missing[generation][number]
            value = layout | {"c": str(counts[generation][number]), "x": str(lacking)}
            buckets[entry["key"]].append(entry | {"key": f"{{{tag}}}:{entry['key']}",
                                                  "value": value})  # fmt: skip
    return buckets


def into_parts(snapshot: Snapshot) -> list[dict[str, Any]]:
    """A one-instance snapshot's keys as a cluster keeps them (see "Redis Cluster" above)."""
    entries: list[dict[str, Any]] = []
    customers = _customers_in_parts(snapshot.keys)
    for entry in snapshot.keys:
        name = entry["key"]
        kind = name.partition(":")[0]
        if kind in _ROOT:
            entries.append(entry)
        if name in customers:
            entries += customers[name]
        elif kind in _EVERY_PART:
            entries += [entry | {"key": f"{{{tag}}}:{name}"} for tag in CLUSTER_TAGS]
        elif kind == "s":
            tag = CLUSTER_TAGS[part_of(name.removeprefix("s:"))]
            entries.append(entry | {"key": f"{{{tag}}}:{name}"})
        elif kind == "hist" and entry["type"] == "hash":
            # A history import's record of a day, per row: in its channel's part, where a
            # re-import on a cluster looks for it (`stream.imports`, a row by its channel).
            rows: list[dict[str, Any]] = [{} for _ in range(CLUSTER_PARTS)]
            for row, figures in entry["value"].items():
                rows[part_of(row.partition("\t")[0])][row] = figures
            entries += [entry | {"key": f"{{{tag}}}:{name}", "value": kept}
                        for tag, kept in zip(CLUSTER_TAGS, rows, strict=True) if kept]  # fmt: skip
        elif kind not in _ROOT:
            entries.append(entry | {"key": f"{{{CLUSTER_TAGS[0]}}}:{name}"})
    return entries


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
    client: redis.Redis | RedisCluster,
    snapshot: Snapshot,
    keys: KeySpace,
    now_ms: int | None = None,
) -> int:
    """Write the snapshot's keys under `keys` (which should be empty); the keys written.

    Keys whose expiry has passed are left out; event-id generations are moved forward (above).
    `client` a cluster's: each key to its part (a one-instance snapshot's by `into_parts`).
    """
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    entries = _entries_for(snapshot, isinstance(client, RedisCluster))
    written = 0
    try:
        for first in range(0, len(entries), _WRITE_CHUNK):
            # A cluster client sends a pipeline as one per master.
            async with client.pipeline(transaction=False) as pipe:
                for entry in entries[first : first + _WRITE_CHUNK]:
                    tag, name = _part_tag(entry["key"])
                    kind, value = entry["type"], entry["value"]
                    expire_at_ms = entry["expire_at"]
                    if expire_at_ms is not None and expire_at_ms <= now_ms:
                        continue
                    if name.startswith("ids:") and name[4:].partition(":")[0].isdigit():
                        name, expire_at = _shifted(name, snapshot, now_ms // 1000)
                        if expire_at is not None:
                            expire_at_ms = expire_at * 1000
                    full = keys.prefix + tag + name
                    if kind == "hash" and value:
                        pipe.hset(full, mapping=value)
                    elif kind == "set" and value:
                        pipe.sadd(full, *value)
                    elif kind == "string" and value is not None:
                        pipe.set(full, value)
                    elif kind == "list" and value:
                        pipe.rpush(full, *value)
                    else:
                        continue
                    if expire_at_ms is not None:
                        pipe.pexpireat(full, expire_at_ms)
                    written += 1
                await pipe.execute()
    except _REDIS_ERRORS as error:
        raise StoreUnavailable("snapshot restore", error) from error
    return written


def check_target(snapshot: Snapshot, cluster: bool) -> None:
    """Refuse (SnapshotError, saying what to do instead) to restore a cluster's snapshot into
    one instance, or one cut into another number of parts than `CLUSTER_PARTS`."""
    if snapshot.parts is None:
        return
    if not cluster:
        raise SnapshotError(
            f"the snapshot is of a Redis Cluster's {snapshot.parts} parts, which one instance "
            f"cannot merge (each part has remembered ids of its own): restore it into a "
            f"cluster (ADPULSE_REDIS_URL=redis+cluster://host:port), or rebuild this instance "
            f"from Kafka (`adpulse rebuild` without --snapshot)"
        )
    if snapshot.parts != CLUSTER_PARTS:
        raise SnapshotError(
            f"the snapshot is of a key space cut into {snapshot.parts} parts, this adpulse "
            f"cuts it into {CLUSTER_PARTS}: restore it with the adpulse version that exported "
            f"it, or rebuild from Kafka (`adpulse rebuild` without --snapshot)"
        )


def _entries_for(snapshot: Snapshot, cluster: bool) -> list[dict[str, Any]]:
    """The keys to write for a cluster (`cluster`) or one instance, or SnapshotError."""
    check_target(snapshot, cluster)
    if snapshot.parts is None:
        return into_parts(snapshot) if cluster else snapshot.keys
    # A chunk of the pipeline then touches few parts, so few masters.
    return sorted(snapshot.keys, key=lambda entry: _part_tag(entry["key"])[0])


async def export_snapshot(
    client: redis.Redis | RedisCluster,
    keys: KeySpace,
    offsets: dict[int, int],
    topic: str,
    group: str,
    retention: Retention | None = None,
) -> Snapshot:
    """The snapshot of `keys`; `offsets`: the group's committed offsets, read just before;
    `retention`: the workers' (their windows numbered the generations)."""
    retention = retention or Retention()
    cluster = isinstance(client, RedisCluster)
    if isinstance(client, RedisCluster):
        exported_at, entries = await read_cluster_keys(client, keys)
    else:
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
        parts=CLUSTER_PARTS if cluster else None,
    )


async def save(snapshot: Snapshot, path: Path) -> int:
    return await asyncio.to_thread(write_file, snapshot, path)


async def load(path: Path) -> Snapshot:
    return await asyncio.to_thread(read_file, path)
