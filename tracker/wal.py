"""The write-ahead log: every accepted record is on disk before its 2xx leaves.

Records accepted in one turn of the event loop are written as one group frame with one
`os.write` (group commit), before the responses of that turn are handed to the sockets. The log
is also the spool: what Kafka has acknowledged is behind the cursor and its segments are
deleted; what it has not (broker down, process killed) is replayed from the cursor on.

Positions are byte offsets in one endless log (log sequence numbers, LSN); a segment file is
named by the LSN it starts at, as Kafka names its own. A segment is read up to the start of the
next one, so a torn frame at its end (a crash in the middle of a write, or a write that failed
half-way) is never taken for data: the next write after a failure goes to a new segment.

Durability: `process` leaves the frame in the page cache, which survives a crash of the process
(SIGKILL, OOM kill); `machine` also fsyncs each group, which survives a power loss.

Threads: `write_group`, `roll` and the bookkeeping run on the event loop; `read`, `remove`,
`save_cursor`, `sync` and `open` do their I/O in a worker thread and touch no shared state
beyond what they are given.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from tracker.spool import SpoolIOError, SpoolRecord

log = logging.getLogger(__name__)

# A group: payload length, crc32 of the payload, records in it. The payload is the records as a
# MessagePack array of [topic, key, value] arrays, which msgspec encodes for a whole turn in C
# rather than each record's lengths being packed in Python.
GROUP: Final = struct.Struct(">III")
# At most what a group costs besides its records: the header and the array's own header.
GROUP_OVERHEAD: Final = GROUP.size + 5
_CURSOR: Final = struct.Struct(">QI")  # acknowledged LSN, crc32 of it
_SUFFIX: Final = ".wal"
_CURSOR_FILE: Final = "wal.cursor"
# Frames larger than this are corrupt, whatever their checksum says (a group is at most what
# one turn accepted, bounded by the spool's size).
_MAX_GROUP: Final = 1 << 31
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[SpoolRecord]).decode


class Durability(enum.StrEnum):
    PROCESS = "process"
    MACHINE = "machine"


@dataclass(frozen=True, slots=True)
class Segment:
    base: int
    path: Path


def encode_group(records: Sequence[SpoolRecord]) -> bytes:
    """One frame holding `records`, at most `GROUP_OVERHEAD + sum(frame_size(r))` bytes."""
    payload = _encode(records)
    return GROUP.pack(len(payload), zlib.crc32(payload), len(records)) + payload


def decode_groups(
    data: bytes, offset: int, limit: int, max_records: int
) -> tuple[list[SpoolRecord], int, bool]:
    """Whole groups from `data[offset:limit]`, until `max_records` are reached.

    Returns the records, the offset after the last whole group, and whether a torn or corrupt
    frame stopped the reading (the rest of the data up to `limit` is then unreadable).
    """
    records: list[SpoolRecord] = []
    while offset < limit and len(records) < max_records:
        if offset + GROUP.size > limit:
            return records, offset, True
        length, checksum, count = GROUP.unpack_from(data, offset)
        start = offset + GROUP.size
        end = start + length
        if length > _MAX_GROUP or end > limit:
            return records, offset, True
        payload = data[start:end]
        if zlib.crc32(payload) != checksum:
            return records, offset, True
        try:
            decoded = _decode(payload)
        except msgspec.DecodeError:
            return records, offset, True
        if len(decoded) != count:
            return records, offset, True
        records.extend(decoded)
        offset = end
    return records, offset, False


class WriteAheadLog:
    """Segments of group frames in `directory`, a cursor at what Kafka acknowledged."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        durability: Durability,
        segments: list[Segment],
        acknowledged: int,
        end: int,
        records: int,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.durability = durability
        self._segments = segments
        # Everything before `acknowledged` is in Kafka; everything up to `end` is on disk.
        self.acknowledged = acknowledged
        self.end = end
        # Records between the two.
        self.records = records
        self._fd = -1
        self._written = 0  # bytes in the current segment
        self._roll_next = True
        # Descriptors written since the last fsync, and the directory if a segment was created.
        self.unsynced: list[int] = []
        self.directory_changed = False
        self.retired: list[int] = []
        # Descriptors the running fsync was handed: closing one before it is done would fsync
        # a closed descriptor, or another file that took its number.
        self._in_flight: list[int] = []
        # `machine`: everything before this LSN is fsynced (or given up), so it may be sent.
        self.synced_end = end
        # `machine`: ranges whose fsync failed, (start, end, records), oldest first. They were
        # answered 503, so they are never sent: acknowledging up to one skips it.
        self._skipped: list[tuple[int, int, int]] = []

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = 4 << 20,
        durability: Durability = Durability.PROCESS,
    ) -> WriteAheadLog:
        """Open (or create) the log and find what is left to send: blocking, call in a thread."""
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SpoolIOError("create", directory, error) from error
        segments = sorted(_list_segments(directory), key=lambda segment: segment.base)
        cursor = _load_cursor(directory / _CURSOR_FILE)
        first = segments[0].base if segments else 0
        acknowledged = max(cursor, first) if cursor is not None else first
        if cursor is not None and segments and cursor > _segment_end_bound(segments):
            log.error(
                "spool cursor %s points past the log's end; replaying the log from its start",
                directory / _CURSOR_FILE,
            )
            acknowledged = first
        kept: list[Segment] = []
        records = 0
        end = acknowledged
        for index, segment in enumerate(segments):
            following = segments[index + 1].base if index + 1 < len(segments) else None
            if following is not None and following <= acknowledged:
                # Everything in it is in Kafka; a crash came between the cursor and the delete.
                try:
                    segment.path.unlink(missing_ok=True)
                except OSError as error:
                    log.warning("could not remove acknowledged segment %s: %s", segment.path, error)
                continue
            kept.append(segment)
            try:
                data = segment.path.read_bytes()
            except OSError as error:
                raise SpoolIOError("read", segment.path, error) from error
            start = max(0, acknowledged - segment.base)
            limit = len(data) if following is None else min(len(data), following - segment.base)
            found, stop, torn = decode_groups(data, start, limit, 1 << 62)
            records += len(found)
            if following is None:
                end = segment.base + stop
                if torn:
                    log.warning(
                        "the log's last segment %s ends in a torn frame (%d bytes, a crash in "
                        "the middle of a write): those were never answered 2xx; ignoring them",
                        segment.path,
                        limit - stop,
                    )
            elif torn and stop < following - segment.base:
                log.warning(
                    "segment %s is unreadable from byte %d (%d bytes); reading on at the next",
                    segment.path,
                    stop,
                    following - segment.base - stop,
                )
        wal = cls(
            directory,
            max_bytes=max_bytes,
            segment_bytes=segment_bytes,
            durability=durability,
            segments=kept,
            acknowledged=acknowledged,
            end=max(end, acknowledged),
            records=records,
        )
        _import_old_spool(wal)
        if wal.records:
            log.info(
                "the log holds %d records (%d bytes) not yet acknowledged by Kafka; "
                "replaying them first",
                wal.records,
                wal.size_bytes,
            )
        return wal

    # state

    @property
    def size_bytes(self) -> int:
        """Bytes written and not yet acknowledged: what counts against `max_bytes`."""
        return self.end - self.acknowledged

    @property
    def empty(self) -> bool:
        return self.end == self.acknowledged

    # writing (event loop)

    def write_group(self, records: Sequence[SpoolRecord]) -> None:
        """Append `records` as one frame, all or none; raises SpoolIOError.

        A plain write of a few KB to the page cache: it copies memory and returns without
        waiting for the disk (unless the kernel throttles a writer of far more dirty pages than
        this), so it runs on the event loop, once a turn, where it costs less than handing it
        to a thread would; an fsync (`sync`) never does.
        """
        frame = encode_group(records)
        if self._roll_next or self._written >= self.segment_bytes:
            self.roll()
        written = 0
        try:
            while written < len(frame):
                written += os.write(self._fd, frame[written:] if written else frame)
        except OSError as error:
            if written:
                # Best effort: give the space back. Either way the next write starts a new
                # segment, and the torn bytes lie past the end this one is read to.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._written)
            self._roll_next = True
            raise SpoolIOError("write", self._segments[-1].path, error) from error
        self._written += written
        self.end += written
        self.records += len(records)
        if self.durability is Durability.MACHINE and self._fd not in self.unsynced:
            self.unsynced.append(self._fd)

    def roll(self) -> None:
        """Start a new segment at `end`. Opening a file is a metadata update of microseconds;
        it happens once a segment (megabytes) or after a failed write."""
        path = self.directory / f"{self.end:020d}{_SUFFIX}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        except OSError as error:
            self._roll_next = True
            raise SpoolIOError("create", path, error) from error
        self._retire(self._fd)
        self._fd = fd
        self._written = 0
        self._roll_next = False
        if self._segments and self._segments[-1].base == self.end:
            self._segments[-1] = Segment(self.end, path)
        else:
            self._segments.append(Segment(self.end, path))
        self.directory_changed = self.durability is Durability.MACHINE

    def _retire(self, fd: int) -> None:
        if fd < 0:
            return
        if fd in self.unsynced or fd in self._in_flight:
            # Closed once the fsync that covers it is done.
            self.retired.append(fd)
        else:
            os.close(fd)

    def take_unsynced(self) -> tuple[list[int], bool, list[int]]:
        """What the next fsync covers: descriptors, whether the directory, and those to close
        afterwards. The caller owns the retired descriptors from here on."""
        unsynced, self.unsynced = self.unsynced, []
        self._in_flight = unsynced
        retired, self.retired = self.retired, []
        directory_changed, self.directory_changed = self.directory_changed, False
        return unsynced, directory_changed, retired

    def sync(self, descriptors: list[int], directory: bool, retired: list[int]) -> None:
        """fsync what was written (in a thread); close the retired descriptors either way."""
        try:
            for fd in descriptors:
                os.fsync(fd)
            if directory:
                fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as error:
            raise SpoolIOError("fsync", self.directory, error) from error
        finally:
            for fd in retired:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def settle(self, start: int, end: int, records: int, *, kept: bool) -> None:
        """The fsync of the groups in [start, end) (`records` records) is done (event loop).

        Kept: they may be sent. Not kept: they were answered 503 and are never sent; the next
        write goes to a new segment, since the file's state after a failed fsync is unknown."""
        self._in_flight = []
        self.synced_end = max(self.synced_end, end)
        if not kept and end > start:
            self._skipped.append((start, end, records))
            self._roll_next = True
            self._skip_acknowledged()

    @property
    def sendable_end(self) -> int:
        """Where the records that may be sent end: not past a group whose fsync is not done
        (`machine`), nor into a range whose fsync failed."""
        end = self.end if self.durability is Durability.PROCESS else self.synced_end
        if self._skipped:
            end = min(end, self._skipped[0][0])
        return end

    # acknowledgement (event loop)

    def acknowledge(self, position: int, records: int) -> None:
        """Kafka has every record before `position`."""
        if position > self.acknowledged:
            self.acknowledged = min(position, self.end)
            self.records = max(0, self.records - records)
            if self._skipped:
                self._skip_acknowledged()
            if self.acknowledged == self.end:
                self.records = 0

    def _skip_acknowledged(self) -> None:
        """Move the acknowledged position past the failed ranges it has reached."""
        skipped = self._skipped
        while skipped and skipped[0][0] <= self.acknowledged:
            _, end, records = skipped.pop(0)
            # Never sent, so not in the count the caller acknowledged.
            self.records = max(0, self.records - records)
            if end > self.acknowledged:
                self.acknowledged = min(end, self.end)

    def obsolete(self) -> list[Segment]:
        """Segments wholly acknowledged, which `remove` may delete (never the current one)."""
        done = []
        for segment, following in zip(self._segments, self._segments[1:], strict=False):
            if following.base <= self.acknowledged:
                done.append(segment)
        if self.acknowledged == self.end and self._written >= self.segment_bytes // 4:
            # All sent: a fresh segment at the next write lets this one go at the next pass.
            self._roll_next = True
        return done

    def forget(self, removed: Sequence[Segment]) -> None:
        gone = {segment.base for segment in removed}
        self._segments = [segment for segment in self._segments if segment.base not in gone]

    def segments(self) -> tuple[Segment, ...]:
        return tuple(self._segments)

    # thread side

    def read(
        self, segments: Sequence[Segment], start: int, end: int, max_records: int
    ) -> tuple[list[SpoolRecord], int]:
        """Records from LSN `start` up to `end` (whole groups, at most about `max_records`),
        and the LSN after them. Reads in a thread from a snapshot of the segments."""
        records: list[SpoolRecord] = []
        position = start
        for index, segment in enumerate(segments):
            following = segments[index + 1].base if index + 1 < len(segments) else end
            following = min(following, end)
            if following <= position:
                continue
            if position < segment.base:
                position = segment.base
            try:
                with segment.path.open("rb") as file:
                    file.seek(position - segment.base)
                    data = file.read(following - position)
            except OSError as error:
                raise SpoolIOError("read", segment.path, error) from error
            found, stop, torn = decode_groups(data, 0, len(data), max_records - len(records))
            records.extend(found)
            position += stop
            if len(records) >= max_records and position < following:
                break
            if torn or position < following:
                if torn:
                    log.warning(
                        "segment %s has a corrupt frame at byte %d; reading on at the next",
                        segment.path,
                        position - segment.base,
                    )
                position = following
        return records, position

    def save_cursor(self, position: int) -> None:
        """Write the acknowledged LSN in place (in a thread). Overwriting the same bytes needs
        no new disk space, so it works on a full disk; a torn cursor fails its checksum and
        the log is replayed from its oldest segment (duplicates, which the worker drops)."""
        path = self.directory / _CURSOR_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                data = _CURSOR.pack(position, zlib.crc32(position.to_bytes(8, "big")))
                if os.pwrite(fd, data, 0) != len(data):
                    raise OSError(errno.EIO, "short write")
                if self.durability is Durability.MACHINE:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            raise SpoolIOError("cursor", path, error) from error

    def remove(self, segments: Sequence[Segment]) -> None:
        """Delete acknowledged segments (in a thread)."""
        for segment in segments:
            try:
                segment.path.unlink(missing_ok=True)
            except OSError as error:
                raise SpoolIOError("remove", segment.path, error) from error

    def close(self) -> None:
        for fd in (self._fd, *self.retired, *self.unsynced):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = -1
        self.retired = []
        self.unsynced = []


def _list_segments(directory: Path) -> list[Segment]:
    segments = []
    for path in directory.glob(f"*{_SUFFIX}"):
        number = path.name[: -len(_SUFFIX)]
        if number.isdigit():
            segments.append(Segment(int(number), path))
    return segments


def _segment_end_bound(segments: list[Segment]) -> int:
    last = segments[-1]
    try:
        return last.base + last.path.stat().st_size
    except OSError:
        return last.base


def _load_cursor(path: Path) -> int | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.error(
            "spool cursor %s is unreadable (%s); replaying the log from its start", path, error
        )
        return None
    if len(data) >= _CURSOR.size:
        position, checksum = _CURSOR.unpack_from(data)
        if zlib.crc32(position.to_bytes(8, "big")) == checksum:
            return int(position)
    log.error("spool cursor %s is torn or corrupt; replaying the log from its start", path)
    return None


# The spool before the write-ahead log: frames of (length, crc32) and (topic length, key length)
# then topic, key, value, in segment-N.spool files, with "segment offset" in a text cursor.
_OLD_FRAME = struct.Struct(">II")
_OLD_FIELDS = struct.Struct(">HH")


def _import_old_spool(wal: WriteAheadLog) -> None:
    """Move what an older tracker left in its spool into the log, so an upgrade loses nothing."""
    old = sorted(wal.directory.glob("segment-*.spool"))
    if not old:
        return
    cursor_path = wal.directory / "cursor"
    start_segment, start_offset = 0, 0
    with contextlib.suppress(OSError, ValueError):
        start_segment, start_offset = (int(part) for part in cursor_path.read_text().split())
    records: list[SpoolRecord] = []
    for path in old:
        number = int(path.name[len("segment-") : -len(".spool")])
        if number < start_segment:
            continue
        try:
            data = path.read_bytes()
        except OSError as error:
            raise SpoolIOError("read", path, error) from error
        offset = start_offset if number == start_segment else 0
        while offset + _OLD_FRAME.size <= len(data):
            length, checksum = _OLD_FRAME.unpack_from(data, offset)
            payload = data[offset + _OLD_FRAME.size : offset + _OLD_FRAME.size + length]
            if len(payload) != length or zlib.crc32(payload) != checksum or length < 4:
                break
            topic_length, key_length = _OLD_FIELDS.unpack_from(payload)
            key_start = _OLD_FIELDS.size + topic_length
            topic = payload[_OLD_FIELDS.size : key_start].decode("utf-8", "replace")
            key = payload[key_start : key_start + key_length]
            records.append(SpoolRecord(topic, key, payload[key_start + key_length :]))
            offset += _OLD_FRAME.size + length
    if records:
        wal.write_group(records)
        # On disk for good before the old files go.
        wal.sync([wal._fd], True, [])
    for path in (*old, cursor_path):
        path.unlink(missing_ok=True)
    log.info("moved %d records of an older spool into the write-ahead log", len(records))
