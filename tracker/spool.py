"""A bounded on-disk spool for records the broker could not take.

Records are appended as checksummed frames to numbered segment files; a cursor file says where
the oldest record not yet confirmed by the broker starts. Replay reads from the cursor, and the
cursor only moves once the broker acknowledged what was read, so a crash during replay sends a
record twice (same `event_id`, which the worker deduplicates) but never loses one.

The class is synchronous on purpose: the publisher owns it and calls it through
`asyncio.to_thread`, so no file I/O runs on the event loop.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

_FRAME = struct.Struct(">II")  # payload length, crc32 of the payload
_FIELDS = struct.Struct(">HH")  # topic length, key length
# What a record costs in the spool (and in memory accounting) besides its topic, key and value.
FRAME_OVERHEAD = _FRAME.size + _FIELDS.size
_SEGMENT_PREFIX = "segment-"
_SEGMENT_SUFFIX = ".spool"
_CURSOR = "cursor"


class SpoolRecord(NamedTuple):
    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Cursor:
    segment: int
    offset: int


class SpoolError(Exception):
    """The spool cannot take or give records."""

    retriable = False


class SpoolFull(SpoolError):
    """Taking these records would exceed the spool's configured size."""

    retriable = True

    def __init__(self, size_bytes: int, max_bytes: int) -> None:
        super().__init__(
            f"the spool holds {size_bytes} bytes of its {max_bytes}; "
            "raise ADPULSE_SPOOL_MAX_BYTES or bring the broker back"
        )
        self.size_bytes = size_bytes
        self.max_bytes = max_bytes


def frame_size(record: SpoolRecord) -> int:
    return FRAME_OVERHEAD + len(record.topic) + len(record.key) + len(record.value)


class DiskSpool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = 8 << 20,
        fsync: bool = True,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        self._cursor = self._load_cursor()
        self._segments = self._list_segments()
        self.size_bytes = 0
        self.records = 0
        self._recount()

    # public API

    def append(self, records: Sequence[SpoolRecord]) -> None:
        """Write `records` after everything already spooled, all or none."""
        if not records:
            return
        frames = b"".join(_encode(record) for record in records)
        if self.size_bytes + len(frames) > self.max_bytes:
            raise SpoolFull(self.size_bytes, self.max_bytes)
        segment = self._segments[-1] if self._segments else self._cursor.segment
        path = self._path(segment)
        if path.exists() and path.stat().st_size >= self.segment_bytes:
            segment += 1
            path = self._path(segment)
        with path.open("ab") as file:
            file.write(frames)
            file.flush()
            if self.fsync:
                os.fsync(file.fileno())
        if not self._segments or self._segments[-1] != segment:
            self._segments.append(segment)
        self.size_bytes += len(frames)
        self.records += len(records)

    def read(self, max_records: int) -> tuple[list[SpoolRecord], Cursor]:
        """The oldest unconfirmed records and the cursor just past them."""
        records: list[SpoolRecord] = []
        cursor = self._cursor
        for segment in self._segments:
            if segment < cursor.segment:
                continue
            offset = cursor.offset if segment == cursor.segment else 0
            data = self._path(segment).read_bytes()
            while offset < len(data) and len(records) < max_records:
                decoded = _decode(data, offset)
                if decoded is None:
                    log.warning(
                        "spool segment %s has a torn frame at byte %d; skipping the rest",
                        segment,
                        offset,
                    )
                    offset = len(data)
                    break
                record, offset = decoded
                records.append(record)
            cursor = Cursor(segment, offset)
            if len(records) >= max_records:
                break
        return records, cursor

    def commit(self, cursor: Cursor, records: int) -> None:
        """Mark the `records` before `cursor` as confirmed and free the segments they covered."""
        if (cursor.segment, cursor.offset) <= (self._cursor.segment, self._cursor.offset):
            return
        self._write_cursor(cursor)
        self._cursor = cursor
        for segment in list(self._segments):
            last = segment == self._segments[-1]
            done = segment < cursor.segment or (
                segment == cursor.segment and cursor.offset >= self._path(segment).stat().st_size
            )
            if done and not last:
                self._path(segment).unlink(missing_ok=True)
                self._segments.remove(segment)
            elif done and last:
                # Everything is confirmed: start afresh rather than keep an empty tail around.
                self._path(segment).unlink(missing_ok=True)
                self._segments.remove(segment)
                self._cursor = Cursor(segment + 1, 0)
                self._write_cursor(self._cursor)
        self.records = max(0, self.records - records)
        self.size_bytes = self._unconfirmed_bytes()

    @property
    def empty(self) -> bool:
        return self.records == 0

    # internals

    def _path(self, segment: int) -> Path:
        return self.directory / f"{_SEGMENT_PREFIX}{segment:016d}{_SEGMENT_SUFFIX}"

    def _list_segments(self) -> list[int]:
        segments = []
        for path in self.directory.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}"):
            number = path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)]
            if number.isdigit():
                segments.append(int(number))
        return sorted(s for s in segments if s >= self._cursor.segment)

    def _load_cursor(self) -> Cursor:
        path = self.directory / _CURSOR
        try:
            segment, offset = path.read_text().split()
            return Cursor(int(segment), int(offset))
        except FileNotFoundError:
            return Cursor(0, 0)
        except ValueError:
            log.error("spool cursor %s is unreadable; replaying the spool from its start", path)
            return Cursor(0, 0)

    def _write_cursor(self, cursor: Cursor) -> None:
        path = self.directory / _CURSOR
        temporary = path.with_suffix(".tmp")
        temporary.write_text(f"{cursor.segment} {cursor.offset}\n")
        if self.fsync:
            with temporary.open("rb") as file:
                os.fsync(file.fileno())
        temporary.replace(path)

    def _unconfirmed_bytes(self) -> int:
        total = sum(self._path(segment).stat().st_size for segment in self._segments)
        if self._segments and self._segments[0] == self._cursor.segment:
            total -= self._cursor.offset
        return max(0, total)

    def _recount(self) -> None:
        size = 0
        count = 0
        for segment in self._segments:
            data = self._path(segment).read_bytes()
            offset = self._cursor.offset if segment == self._cursor.segment else 0
            size += max(0, len(data) - offset)
            while offset < len(data):
                decoded = _decode(data, offset)
                if decoded is None:
                    break
                count += 1
                offset = decoded[1]
        self.size_bytes = size
        self.records = count


def _encode(record: SpoolRecord) -> bytes:
    topic = record.topic.encode()
    payload = _FIELDS.pack(len(topic), len(record.key)) + topic + record.key + record.value
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _decode(data: bytes, offset: int) -> tuple[SpoolRecord, int] | None:
    if offset + _FRAME.size > len(data):
        return None
    length, checksum = _FRAME.unpack_from(data, offset)
    start = offset + _FRAME.size
    end = start + length
    if end > len(data) or length < _FIELDS.size:
        return None
    payload = data[start:end]
    if zlib.crc32(payload) != checksum:
        return None
    topic_length, key_length = _FIELDS.unpack_from(payload, 0)
    position = _FIELDS.size
    topic = payload[position : position + topic_length].decode()
    position += topic_length
    key = payload[position : position + key_length]
    value = payload[position + key_length :]
    return SpoolRecord(topic, key, value), end
