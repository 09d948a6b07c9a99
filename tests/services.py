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

`RedisCluster` starts three redis-server masters in cluster mode on free loopback ports and joins
them with `redis-cli --cluster create` (the Redis Cluster tests, `stream.cluster`).

The embedded broker is Tansu with memory storage. Each start is a new, empty cluster: this module
gives every incarnation its own cluster id (`adpulse-<port>-<n>`) so that a client can tell a
restarted broker from a reconnection to the same one (see `tests.kafka_helpers.TopicReader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import redis

from adpulse.cli.processes import (
    KAFKA_INSTALL_HINT,
    REDIS_INSTALL_HINT,
    BinaryNotFound,
    ManagedProcess,
    ServiceStartError,
    free_port,
    kafka_metadata_answers,
    redis_answers_ping,
    redis_server_binary,
    tansu_binary,
)
from tests.kafka_helpers import create_topic, delete_topic

__all__ = [
    "KAFKA_INSTALL_HINT",
    "REDIS_INSTALL_HINT",
    "BinaryNotFound",
    "ServiceStartError",
    "free_port",
    "kafka_metadata_answers",
    "redis_answers_ping",
    "redis_server_binary",
    "tansu_binary",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class HarnessError(Exception):
    """Root of the errors raised by the test services."""


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


@contextlib.contextmanager
def frozen(process: ManagedProcess) -> Iterator[None]:
    """`process` stopped (SIGSTOP) inside the block: a server that hangs, its connections open
    and nothing answered, as under a stall or a network partition; continued (SIGCONT) after."""
    if process.process is None or not process.running:
        raise HarnessError(f"{process.name} on port {process.port} is not running")
    pid = process.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


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

# --- Kafka ----------------------------------------------------------------------------------------


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
        self._process = ManagedProcess("tansu", self.port, workdir)

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
        self._process = ManagedProcess("redis", self.port, workdir)

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

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server hanging inside the block (`frozen`), answering again after it."""
        with frozen(self._process):
            yield

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


class RedisCluster:
    """A Redis Cluster of `masters` redis-server processes on loopback ports, no replicas.

    Each node has its own directory (nodes.conf, an append-only file synced on every write), so
    stop() then start() brings back the same cluster with the same data. The nodes are joined
    with ``redis-cli --cluster create``, which spreads the 16384 slots over them; `url` is what
    ``ADPULSE_REDIS_URL`` takes for cluster mode (`stream.store`), any node serving as a seed.
    """

    restartable = True

    def __init__(self, masters: int = 3, *, ready_deadline: float = 30.0) -> None:
        self.ready_deadline = ready_deadline
        self._binary = redis_server_binary()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise BinaryNotFound("redis-cli", REDIS_INSTALL_HINT, "not on PATH")
        self._cli = cli
        self.ports = [free_port() for _ in range(masters)]
        # The cluster bus listens on a port of its own (default: port + 10000, maybe taken).
        self._bus_ports = [free_port() for _ in range(masters)]
        self._nodes = [
            ManagedProcess(
                "redis-cluster", port, Path(tempfile.mkdtemp(prefix=f"adpulse-cluster-{port}-"))
            )
            for port in self.ports
        ]
        self._created = False

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    @property
    def node_urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]

    @property
    def running(self) -> bool:
        return all(node.running for node in self._nodes)

    def start(self) -> None:
        """Start every node (again: same ports, same data); join them the first time; wait
        until the cluster says ``cluster_state:ok`` on every node."""
        for node, bus_port in zip(self._nodes, self._bus_ports, strict=True):
            node.spawn(
                [
                    self._binary,
                    "--port", str(node.port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-port", str(bus_port),
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "2000",
                    "--dir", str(node.workdir),
                    "--appendonly", "yes",
                    "--appendfsync", "always",
                    "--save", "",
                    "--daemonize", "no",
                ]
            )  # fmt: skip
        for node in self._nodes:
            node.wait_ready(functools.partial(redis_answers_ping, "127.0.0.1", node.port),
                            self.ready_deadline)  # fmt: skip
        if not self._created:
            self._create()
        for node in self._nodes:
            node.wait_ready(functools.partial(self._state_ok, node.port), self.ready_deadline)
        logger.info("redis cluster up at %s", ",".join(map(str, self.ports)))

    def _create(self) -> None:
        argv = [self._cli, "--cluster", "create"]
        argv += [f"127.0.0.1:{port}" for port in self.ports]
        argv += ["--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise ServiceStartError(
                "redis-cluster", f"redis-cli --cluster create exited {done.returncode}",
                done.stdout[-2000:] + done.stderr[-2000:],
            )  # fmt: skip
        self._created = True

    @staticmethod
    def _state_ok(port: int) -> bool:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) as client:
            info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    @contextlib.contextmanager
    def frozen_master(self, key: str) -> Iterator[None]:
        """The master serving `key`'s slot hanging inside the block (`frozen`), the others
        answering; after it, the cluster ok again on every node."""
        with redis.Redis(host="127.0.0.1", port=self.ports[0], socket_timeout=5) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            ranges = client.execute_command("CLUSTER", "SLOTS")
        port = next(int(r[2][1]) for r in ranges if int(r[0]) <= slot <= int(r[1]))
        node = next(node for node in self._nodes if node.port == port)
        try:
            with frozen(node):
                yield
        finally:
            for node in self._nodes:
                node.wait_ready(functools.partial(self._state_ok, node.port), self.ready_deadline)

    def flush(self) -> None:
        """Every node's keys deleted (between tests)."""
        for port in self.ports:
            with redis.Redis(host="127.0.0.1", port=port, socket_timeout=5) as client:
                client.flushall()

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every node (each fsyncs and exits), SIGKILL one that takes over `grace`."""
        for node in self._nodes:
            node.terminate(grace)

    def close(self) -> None:
        self.stop()
        for node in self._nodes:
            node.remove_workdir()
