"""What `adpulse dev` checks before it starts anything, and the errors it stops with.

The data directory belongs to one stack at a time; a broker or Redis of the user's own
(ADPULSE_KAFKA, ADPULSE_REDIS_URL) must answer, or the stack refuses at once, naming it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from urllib.parse import urlsplit

from adpulse.cli.processes import ProcessError

LOCK_FILE = "dev.pid"


class DevStackError(ProcessError):
    """The stack could not start or a component failed; the message says what to do."""


class AlreadyRunning(DevStackError):
    def __init__(self, data_dir: Path, pid: str) -> None:
        super().__init__(
            f"another adpulse dev (pid {pid or 'unknown'}) is running on {data_dir}; stop it "
            f"first (Ctrl-C in its terminal, or kill {pid or '<pid>'}), or give this one "
            "another --data-dir (ADPULSE_DEV_DIR)"
        )
        self.data_dir = data_dir
        self.pid = pid


class ServiceUnreachable(DevStackError):
    """A broker or Redis of the user's own does not answer."""

    def __init__(self, what: str, address: str, variable: str, reason: str) -> None:
        super().__init__(
            f"the {what} at {address} ({variable}) does not answer: {reason.rstrip('.')}. "
            f"Start it, correct {variable}, or unset {variable} to use the dev stack's own"
        )
        self.address = address
        self.variable = variable


class DataDirLock:
    """One stack per data directory: an exclusive lock on a file that names its pid.

    The kernel drops the lock when the process ends, however it ends, so a stale file left by
    a killed stack does not block the next one. The descriptor is not inherited by children.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(self.path.parent, pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def redacted(url: str) -> str:
    """A Redis URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def kafka_address(bootstrap: str) -> tuple[str, int]:
    """The first host and port of a bootstrap list; ValueError when it is not host:port."""
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{first!r} is not host:port")
    return host.strip("[]"), int(port)


def redis_url_answers(url: str) -> bool:
    """True when the Redis at `url` answers PING; ValueError for a URL redis-py cannot use."""
    import redis
    from redis.exceptions import RedisError

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.ping())
    except RedisError as error:
        raise ConnectionError(str(error)) from None
    finally:
        client.close()
