"""The embedded dev stack: broker, Redis, tracker, worker, exporter (and traffic) on one machine.

Each component is a child process with its own log under the data directory. They start in
dependency order, each waited on until it answers; a child that dies is reported with the tail
of its log and the whole stack stops with a non-zero code rather than limping on. A stop
(Ctrl-C, SIGTERM) goes in reverse order, so the tracker flushes into a broker that is still up
and the worker commits into a Redis that is still up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from adpulse.broker_recycling import BrokerRecycler, RecycleSettings
from adpulse.processes import (
    ManagedProcess,
    ProcessError,
    ServiceStartError,
    kafka_metadata_answers,
    port_is_free,
    redis_answers_ping,
    redis_server_binary,
    tail,
    tansu_binary,
)

SIMULATOR_HOSTS = "shop.example.com"
START_DEADLINE = 60.0
BROKER_MAX_MEMORY = 256 << 20


class DevStackError(ProcessError):
    """The stack could not start or a component failed; the message says what to do."""


class PortTaken(DevStackError):
    def __init__(self, component: str, host: str, port: int, flag: str) -> None:
        super().__init__(
            f"port {port} on {host} is already in use, so the {component} cannot listen there; "
            f"stop whatever uses it or choose another port with {flag}"
        )
        self.component = component
        self.port = port
        self.flag = flag


class ComponentDied(DevStackError):
    def __init__(self, component: str, code: int | None, log: Path) -> None:
        super().__init__(
            f"the {component} exited with code {code}; last lines of {log}:\n{tail(log, 25)}"
        )
        self.component = component
        self.code = code


@dataclass(frozen=True, slots=True)
class DevSettings:
    host: str = "127.0.0.1"
    tracker_port: int = 8080
    exporter_port: int = 9108
    worker_port: int = 9109
    kafka_port: int = 9092
    redis_port: int = 6379
    prometheus_port: int = 9090
    kafka: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".adpulse/dev")
    api_token: str = ""
    redirect_hosts: str = ""
    simulate: bool = False
    simulate_args: tuple[str, ...] = ()
    prometheus: bool = False
    log_level: str = "INFO"
    environment: Mapping[str, str] = field(default_factory=dict)
    broker_max_memory: int = BROKER_MAX_MEMORY
    """Bytes of embedded broker RSS past which it is replaced (`adpulse.broker_recycling`)."""


@dataclass(eq=False)
class Component:
    name: str
    process: ManagedProcess
    argv: list[str]
    ready: Callable[[], bool] | None
    env: Mapping[str, str] | None = None
    # Seconds a SIGTERM may take: the tracker flushes to Kafka, the worker commits.
    grace: float = 10.0
    # The simulator may finish on its own (--duration); the servers may not.
    may_exit: bool = False


def http_ok(url: str, check: Callable[[bytes], bool] | None = None) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                body: bytes = response.read()
        except (urllib.error.URLError, OSError):
            return False
        return check(body) if check else True

    return probe


def broker_up(body: bytes) -> bool:
    return bool(json.loads(body).get("broker") == "up")


class DevStack:
    def __init__(self, settings: DevSettings, out: TextIO = sys.stdout) -> None:
        self.settings = settings
        self.out = out
        self.stop_requested = threading.Event()
        self.started: list[Component] = []
        root = settings.data_dir.resolve()
        self.root = root
        self.kafka = settings.kafka or f"{settings.host}:{settings.kafka_port}"
        self.redis_url = settings.redis_url or f"redis://{settings.host}:{settings.redis_port}/0"
        self.recycler: BrokerRecycler | None = None

    # plan

    def components(self) -> list[Component]:
        s = self.settings
        python = [sys.executable, "-m", "adpulse"]
        env = {**s.environment, "ADPULSE_LOG_LEVEL": s.log_level}
        planned: list[Component] = []
        if s.kafka is None:
            url = f"tcp://{s.host}:{s.kafka_port}"
            planned.append(
                Component(
                    "broker",
                    self._process("broker", s.kafka_port),
                    [tansu_binary(), "broker", "--listener-url", url,
                     "--advertised-listener-url", url],
                    lambda: kafka_metadata_answers(s.host, s.kafka_port),
                    grace=1.0,
                )
            )  # fmt: skip
        if s.redis_url is None:
            data = self.root / "redis"
            planned.append(
                Component(
                    "redis",
                    self._process("redis", s.redis_port),
                    [redis_server_binary(), "--port", str(s.redis_port), "--bind", s.host,
                     "--dir", str(data), "--appendonly", "yes", "--save", "", "--daemonize", "no"],
                    lambda: redis_answers_ping(s.host, s.redis_port),
                )
            )  # fmt: skip
        hosts = ",".join(filter(None, [s.redirect_hosts, SIMULATOR_HOSTS]))
        tracker_url = f"http://{s.host}:{s.tracker_port}"
        planned.append(
            Component(
                "tracker",
                self._process("tracker", s.tracker_port),
                [*python, "tracker", "--host", s.host, "--port", str(s.tracker_port),
                 "--kafka", self.kafka, "--spool-dir", str(self.root / "spool")],
                http_ok(f"{tracker_url}/readyz", broker_up),
                env={**env, "ADPULSE_API_TOKEN": s.api_token, "ADPULSE_REDIRECT_HOSTS": hosts},
                grace=30.0,
            )
        )  # fmt: skip
        planned.append(
            Component(
                "worker",
                self._process("worker", s.worker_port),
                [*python, "worker", "--host", s.host, "--port", str(s.worker_port),
                 "--kafka", self.kafka, "--redis-url", self.redis_url],
                http_ok(f"http://{s.host}:{s.worker_port}/metrics"),
                env=env,
                grace=30.0,
            )
        )  # fmt: skip
        planned.append(
            Component(
                "exporter",
                self._process("exporter", s.exporter_port),
                [*python, "exporter", "--host", s.host, "--port", str(s.exporter_port),
                 "--redis-url", self.redis_url],
                http_ok(f"http://{s.host}:{s.exporter_port}/metrics"),
                env=env,
            )
        )  # fmt: skip
        if s.prometheus:
            binary = shutil.which("prometheus")
            if binary is None:
                print("  prometheus: no `prometheus` on PATH, skipped", file=self.out)
            else:
                config = self._prometheus_config()
                planned.append(
                    Component(
                        "prometheus",
                        self._process("prometheus", s.prometheus_port),
                        [binary, f"--config.file={config}",
                         f"--storage.tsdb.path={self.root / 'prometheus' / 'data'}",
                         f"--web.listen-address={s.host}:{s.prometheus_port}"],
                        http_ok(f"http://{s.host}:{s.prometheus_port}/-/ready"),
                    )
                )  # fmt: skip
        if s.simulate:
            planned.append(
                Component(
                    "simulator",
                    self._process("simulator", 0),
                    # JSON in its log: what it sent, for checking against the counters.
                    [*python, "simulate", "--tracker", tracker_url, "--json", *s.simulate_args],
                    None,
                    env={**env, "ADPULSE_API_TOKEN": s.api_token},
                    may_exit=True,
                )
            )
        return planned

    def _process(self, name: str, port: int) -> ManagedProcess:
        workdir = self.root / name
        workdir.mkdir(parents=True, exist_ok=True)
        return ManagedProcess(name, port, workdir)

    def _prometheus_config(self) -> Path:
        s = self.settings
        rules = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"
        # The job names are those of deploy/prometheus/prometheus.yml: the alert rules use them.
        targets = {
            "adpulse-tracker": s.tracker_port,
            "adpulse-worker": s.worker_port,
            "adpulse-exporter": s.exporter_port,
        }
        scrape = "\n".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['{s.host}:{port}']"
            for job, port in targets.items()
        )
        config = self.root / "prometheus" / "prometheus.yml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(
            "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
            f"rule_files:\n  - {rules}/*.yml\nscrape_configs:\n{scrape}\n"
        )
        return config

    # run

    def check_ports(self, planned: list[Component]) -> None:
        s = self.settings
        flags = {
            "broker": "--kafka-port",
            "redis": "--redis-port",
            "tracker": "--port",
            "worker": "--worker-port",
            "exporter": "--exporter-port",
            "prometheus": "--prometheus-port",
        }
        for component in planned:
            port = component.process.port
            if port and not port_is_free(s.host, port):
                raise PortTaken(component.name, s.host, port, flags[component.name])

    def start(self) -> None:
        """Start every component in order, each answering before the next; stop all on failure."""
        for stale in ("redis", "spool"):
            shutil.rmtree(self.root / stale, ignore_errors=True)
        (self.root / "redis").mkdir(parents=True, exist_ok=True)
        planned = self.components()
        self.check_ports(planned)
        for component in planned:
            if self.stop_requested.is_set():
                return
            if component.name == "simulator":
                self.register_simulator_coupons()
            where = (
                f" on {self.settings.host}:{component.process.port}"
                if component.process.port
                else ""
            )
            print(f"  {component.name:<10} starting{where} ...", end="", file=self.out, flush=True)
            started = time.monotonic()
            component.process.spawn(component.argv, env=self._env(component))
            self.started.append(component)
            if component.ready is not None:
                try:
                    component.process.wait_ready(component.ready, START_DEADLINE)
                except ServiceStartError as error:
                    print(" failed", file=self.out, flush=True)
                    raise DevStackError(str(error)) from error
            print(f" up ({time.monotonic() - started:.1f} s)", file=self.out, flush=True)
        if self.settings.kafka is None and not self.stop_requested.is_set():
            from stream.worker_settings import DEFAULT_GROUP, DEFAULT_TOPIC

            env = self.settings.environment
            recycle = RecycleSettings(
                self.settings.broker_max_memory,
                topic=env.get("ADPULSE_TOPIC", DEFAULT_TOPIC),
                group=env.get("ADPULSE_WORKER_GROUP", DEFAULT_GROUP),
            )
            self.recycler = BrokerRecycler(recycle, self.kafka, self, self.out)

    # the broker recycler's view of the children

    def _component(self, name: str) -> Component | None:
        return next((c for c in self.started if c.name == name), None)

    def process_id(self, name: str) -> int | None:
        component = self._component(name)
        running = component.process.process if component else None
        return running.pid if running is not None and running.poll() is None else None

    def stop_component(self, name: str, grace: float | None = None) -> None:
        component = self._component(name)
        if component is not None:
            component.process.terminate(component.grace if grace is None else grace)

    def start_component(self, name: str) -> None:
        component = self._component(name)
        if component is None:
            return
        component.process.spawn(component.argv, env=self._env(component))
        if component.ready is not None:
            try:
                component.process.wait_ready(component.ready, START_DEADLINE)
            except ServiceStartError as error:
                raise DevStackError(str(error)) from error

    def register_simulator_coupons(self) -> None:
        """The simulator's influencer coupons, so its redemptions are attributed."""
        import asyncio

        from adpulse.simulate.profiles import coupon_rows
        from stream.store import KpiStore

        async def register() -> int:
            store = KpiStore.from_url(self.redis_url)
            try:
                return await store.import_coupons(coupon_rows())
            finally:
                await store.close()

        count = asyncio.run(register())
        print(f"  coupons    {count} simulator coupons registered", file=self.out, flush=True)

    def _env(self, component: Component) -> dict[str, str] | None:
        if component.env is None:
            return None
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("ADPULSE_")}
        return {**inherited, **component.env}

    def watch(self, poll: float = 0.2) -> None:
        """Return when a stop is requested; raise ComponentDied if a child exits on its own."""
        while not self.stop_requested.wait(poll):
            if self.recycler is not None:
                self.recycler.tick()
            for component in list(self.started):
                process = component.process.process
                if process is None or process.poll() is None:
                    continue
                if component.may_exit and process.returncode == 0:
                    print(f"  {component.name} finished", file=self.out, flush=True)
                    self.started.remove(component)
                    continue
                raise ComponentDied(component.name, process.returncode, component.process.log_path)

    def stop(self) -> None:
        """Stop every started component in reverse order, each given its grace period."""
        for component in reversed(self.started):
            print(f"  {component.name:<10} stopping ...", end="", file=self.out, flush=True)
            component.process.terminate(component.grace)
            print(" done", file=self.out, flush=True)
        self.started.clear()

    def request_stop(self, signum: int, frame: object) -> None:
        self.stop_requested.set()

    def banner(self) -> str:
        s = self.settings
        tracker = f"http://{s.host}:{s.tracker_port}"
        lines = [
            "",
            "adpulse dev is running; Ctrl-C stops it.",
            f"  tracker     {tracker}  (openapi: {tracker}/openapi.json)",
            f"  fire a pixel:  curl -A Mozilla/5.0 '{tracker}/p.gif?type=click&channel=email'",
            f"  KPIs        http://{s.host}:{s.exporter_port}/metrics",
            f"  worker      http://{s.host}:{s.worker_port}/metrics",
            f"  Kafka       {self.kafka}    Redis {self.redis_url}",
            f"  report      adpulse report --redis-url {self.redis_url}",
            f"  spend API   Authorization: Bearer {s.api_token}",
            f"  logs        {self.root}/<component>/<component>.log",
        ]
        if s.prometheus and shutil.which("prometheus"):
            lines.append(f"  prometheus  http://{s.host}:{s.prometheus_port}")
        return "\n".join(lines) + "\n"


def run(settings: DevSettings, out: TextIO = sys.stdout) -> int:
    stack = DevStack(settings, out)
    signal.signal(signal.SIGTERM, stack.request_stop)
    signal.signal(signal.SIGINT, stack.request_stop)
    print("starting the adpulse dev stack", file=out, flush=True)
    code = 0
    try:
        stack.start()
        if not stack.stop_requested.is_set():
            print(stack.banner(), file=out, flush=True)
            stack.watch()
    except ComponentDied as error:
        print(f"\nadpulse dev: {error}", file=sys.stderr, flush=True)
        code = 1
    except ProcessError as error:
        print(f"\nadpulse dev: {error}", file=sys.stderr, flush=True)
        code = 2 if isinstance(error, PortTaken) else 1
    finally:
        print("stopping", file=out, flush=True)
        stack.stop()
    return code
