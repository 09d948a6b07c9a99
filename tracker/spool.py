"""What the spool holds and how it fails.

The spool is the tracker's write-ahead log (`tracker.wal`): every accepted record is written
there before it is answered, and what Kafka has not acknowledged is replayed from it. This
module is the small part the request path and the publisher share: the record, its cost in the
log, and the errors.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import NamedTuple

# At most what a record costs in the log besides its topic, key and value: MessagePack's array,
# string and two binary headers (tracker.wal). Requests are admitted by this bound, so the log
# never holds more than its capacity.
FRAME_OVERHEAD = 16


class SpoolRecord(NamedTuple):
    topic: str
    key: bytes
    value: bytes


class SpoolError(Exception):
    """The spool cannot take or give records."""

    retriable = False


class SpoolIOError(SpoolError):
    """A file operation of the spool failed (disk full, I/O error, permissions)."""

    retriable = True

    def __init__(self, operation: str, path: Path, cause: OSError) -> None:
        code = errno.errorcode.get(cause.errno, str(cause.errno)) if cause.errno else "?"
        super().__init__(
            f"spool {operation} failed on {path}: {cause.strerror or cause} ({code}); "
            "free space there or choose another ADPULSE_SPOOL_DIR"
        )
        self.operation = operation
        self.path = path
        self.cause = cause


def frame_size(record: SpoolRecord) -> int:
    return FRAME_OVERHEAD + len(record.topic) + len(record.key) + len(record.value)
