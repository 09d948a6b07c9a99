"""The embedded dev stack: broker, Redis, tracker, worker, exporter (and traffic) on one machine.

Each component is a child process with its own log under the data directory, which also keeps
Redis's data and the tracker's spool from one run to the next (`--reset` starts afresh); one
stack at a time holds the directory. They start in dependency order, each waited on until it
answers; a child that dies is reported with the tail of this run's log and the whole stack stops
with a non-zero code rather than limping on. A stop (Ctrl-C, SIGTERM) ends the traffic, then
the tracker (which flushes to the broker), then the worker once it has counted what the broker
holds, then the rest, so that everything accepted is counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
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
from typing import Any, Final, TextIO

from aiokafka.errors import KafkaError

from adpulse.cli import devwatch
from adpulse.cli.broker_recycling import (
    BrokerRecycler,
    RecycleSettings,
    wait_joined,
    write_bootstrap_file,
)
from adpulse.cli.devcheck import (
    AlreadyRunning,
    DataDirLock,
    DevStackError,
    ServiceUnreachable,
    kafka_address,
    redacted,
    redis_url_answers,
)
from adpulse.cli.devswap import START_DEADLINE, SwapControl
from adpulse.cli.processes import (
    ManagedProcess,
    ProcessError,
    ServiceStartError,
    StartCancelled,
    kafka_metadata_answers,
    port_is_free,
    redis_answers_ping,
    redis_server_binary,
    tansu_binary,
)
from adpulse.core.currencies import parse_fx_rates
from adpulse.core.options import (
    API_TOKEN,
    LOG_LEVEL,
    REGISTRY_TOPIC,
    Secret,
    Setting,
    declare,
    declared,
    option,
    parse_int,
    parse_port,
    switch,
)
from stream.exporter_settings import ExporterSettings
from stream.worker_settings import WorkerSettings
from tracker.settings import TrackerSettings

# The host of the simulator's and the README's links; `/c` may redirect there.
SIMULATOR_HOSTS = "shop.example.com"
# Sample settings so that the README's examples work against the dev stack as written: its
# conversions are in EUR, its redemption uses SUMMER10.
SAMPLE_FX_RATES = "EUR=1.08,GBP=1.27"
SAMPLE_COUPONS = (("SUMMER10", "email"),)
BROKER_MAX_MEMORY = 256 << 20
# A broker holding more than this is a mistyped unit, not a dev stack.
MAX_BROKER_MEMORY_MB = 1 << 20


def parse_megabytes(raw: str) -> int:
    """Megabytes, 0 to 1 TiB, as bytes."""
    megabytes = parse_int(raw)
    if not 0 <= megabytes <= MAX_BROKER_MEMORY_MB:
        raise ValueError(f"must be from 0 to {MAX_BROKER_MEMORY_MB} (megabytes)")
    return megabytes << 20


# How long a broker or Redis of the user's own (ADPULSE_KAFKA, ADPULSE_REDIS_URL) may take to
# answer before the stack refuses to start.
SERVICE_DEADLINE = 5.0
# How often the terminal shows what the simulator sent so far and how the counters grew.
PROGRESS_EVERY = 60.0
# How long a stop waits for the worker to count what the tracker flushed.
DRAIN_DEADLINE = 20.0
# The defaults of `adpulse report`, so that the banner's command needs no flag for them.
REPORT_DEFAULT_REDIS_URLS = ("redis://127.0.0.1:6379/0", "redis://localhost:6379/0")


class PortTaken(DevStackError):
    def __init__(self, component: str, host: str, port: int, flag: str) -> None:
        other = 8081 if port == 8080 else port + 1
        super().__init__(
            f"port {port} on {host} is already in use, so the {component} cannot listen there; "
            f"stop whatever uses it or choose another port with {flag} "
            f"(through make: make run ARGS='{flag} {other}')"
        )
        self.component = component
        self.port = port
        self.flag = flag


class ComponentDied(DevStackError):
    def __init__(self, component: str, code: int | None, process: ManagedProcess) -> None:
        super().__init__(
            f"the {component} exited with code {code}; last lines of {process.log_path} "
            f"from this run:\n{process.log_tail(25)}"
        )
        self.component = component
        self.code = code


def report_command(redis_url: str) -> str:
    """`adpulse report` as it runs from the current directory, flags only where needed."""
    script = Path(sys.executable).parent / "adpulse"
    command = "adpulse"
    if script.is_file():
        try:
            command = str(script.relative_to(Path.cwd()))
        except ValueError:
            command = str(script)
    if redis_url in REPORT_DEFAULT_REDIS_URLS:
        return f"{command} report"
    return f"{command} report --redis-url {redis_url}"


def _port_of(cls: type[Any], flag: str, what: str) -> Setting[int]:
    """A component's port declaration as the stack's flag for it: same variable and default."""
    return dataclasses.replace(declared(cls, "port"), flag=flag, help=what)


def check_fx_rates(text: str) -> str:
    """ADPULSE_FX_RATES checked here, so that a bad value stops the stack before it starts."""
    parse_fx_rates(text)
    return text


@dataclass(frozen=True, slots=True)
class DevSettings:
    host: str = option(
        "--host", "ADPULSE_DEV_HOST", "127.0.0.1", str, "address every component listens on"
    )
    tracker_port: int = declare(_port_of(TrackerSettings, "--port", "tracker port"))
    exporter_port: int = declare(_port_of(ExporterSettings, "--exporter-port", "exporter port"))
    worker_port: int = declare(_port_of(WorkerSettings, "--worker-port", "worker metrics port"))
    kafka_port: int = option(
        "--kafka-port", None, 9092, parse_port, "embedded broker port; unused with `ADPULSE_KAFKA`"
    )
    redis_port: int = option(
        "--redis-port",
        None,
        6379,
        parse_port,
        "embedded Redis port; unused with `ADPULSE_REDIS_URL`",
    )
    prometheus_port: int = option(
        "--prometheus-port", None, 9090, parse_port, "Prometheus port with `--prometheus`"
    )
    kafka: str | None = option(
        None, "ADPULSE_KAFKA", None, str, "a Kafka of your own instead of the embedded broker"
    )
    redis_url: str | None = option(
        None, "ADPULSE_REDIS_URL", None, str, "a Redis of your own instead of the embedded one"
    )
    data_dir: Path = option(
        "--data-dir",
        "ADPULSE_DEV_DIR",
        Path(".adpulse/dev"),
        Path,
        "logs, Redis data and the spool, kept from one run to the next",
    )
    api_token: Secret | None = declare(
        dataclasses.replace(
            API_TOKEN, help="the tracker's API token, shown in the banner; unset: a new random one"
        )
    )
    redirect_hosts: str = option(
        None,
        "ADPULSE_REDIRECT_HOSTS",
        "",
        str,
        f"hosts `/c` may redirect to besides the simulator's {SIMULATOR_HOSTS}",
    )
    fx_rates: str = option(
        None,
        "ADPULSE_FX_RATES",
        SAMPLE_FX_RATES,
        check_fx_rates,
        "the tracker's exchange rates; the sample ones make the README's examples work",
    )
    reset: bool = switch(
        "--reset", "delete the Redis data and the spool of earlier runs before starting"
    )
    simulate: bool = switch("--simulate", "also run `adpulse simulate` against the tracker")
    prometheus: bool = switch(
        "--prometheus",
        "also start `prometheus` (if on PATH) with the deploy/ rules scraping the stack",
    )
    broker_max_memory: int = option(
        "--broker-max-memory",
        "ADPULSE_DEV_BROKER_MAX_MEMORY",
        BROKER_MAX_MEMORY,
        parse_megabytes,
        "replace the embedded broker by an empty one when its memory passes MB (it cannot drop "
        "old records itself), without pausing the tracker: a second broker and worker start, "
        "the tracker moves there, the old pair stops once its worker has counted all; 0 never",
        shown_default=str(BROKER_MAX_MEMORY >> 20),
        metavar="MB",
    )
    registry_topic: str = declare(REGISTRY_TOPIC)
    log_level: str = declare(LOG_LEVEL)
    simulate_args: tuple[str, ...] = ()
    """The simulator's flags from --rate, --seed, --duration and --spike."""
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The ADPULSE_* variables passed on to the components."""

    @property
    def token(self) -> str:
        return self.api_token.reveal() if self.api_token is not None else ""


DEV_SPIKE: Final[Mapping[str, str]] = {
    "ADPULSE_SPIKE_WINDOW": "2m",
    "ADPULSE_SPIKE_BASELINE": "60m",
}
"""The exporter's CPA-spike rule in the dev stack: minutes, not the 12 hours against 7 days of
production, so that a `--spike` shows within minutes; ADPULSE_* variables of the user's win."""
DEV_SPIKE_FOR: Final = "30s"
"""`for:` of AdpulseCpaSpike in the dev stack (60m in deploy/): the dev gauge moves each minute."""


def dev_alerts(text: str) -> str:
    """deploy/'s alert rules with the dev stack's `for:` for AdpulseCpaSpike."""
    head, marker, rest = text.partition("- alert: AdpulseCpaSpike\n")
    before, found, after = rest.partition("        for: ")
    if not marker or not found:
        raise ValueError("deploy/prometheus/rules/alerts.yml has no AdpulseCpaSpike with a for:")
    return head + marker + before + found + DEV_SPIKE_FOR + after[after.index("\n") :]


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


class DevStack(SwapControl):
    def __init__(self, settings: DevSettings, out: TextIO = sys.stdout) -> None:
        self.settings = settings
        self.out = out
        self.stop_requested = threading.Event()
        self.started: list[Component] = []
        root = settings.data_dir.resolve()
        self.root = root
        self.lock = DataDirLock(root)
        self.kafka = settings.kafka or f"{settings.host}:{settings.kafka_port}"
        self.redis_url = settings.redis_url or f"redis://{settings.host}:{settings.redis_port}/0"
        self.recycler: BrokerRecycler | None = None
        # The worker's Kafka client id, this run's own: its member of the group is told from
        # one a worker of another run left on a broker of the user's (`wait_worker_joined`).
        self.worker_client_id = f"adpulse-dev-worker-{secrets.token_hex(4)}"
        # The embedded broker's address for the tracker, which reads it again on SIGHUP.
        self.kafka_file = root / "kafka-bootstrap"
        self.tracker_log_mark = 0
        self.redirect_hosts = ",".join(filter(None, [settings.redirect_hosts, SIMULATOR_HOSTS]))
        self.echoes: list[devwatch.LogEcho] = []
        # The exporter's counters when the simulator started, and whether its check was shown.
        self.baseline: devwatch.Samples | None = None
        self.checked = False

    # plan

    def components(self) -> list[Component]:
        s = self.settings
        python = [sys.executable, "-m", "adpulse"]
        env = self.component_environment()
        planned: list[Component] = []
        if s.kafka is None:
            planned.append(self.broker_component(s.kafka_port))
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
        tracker_url = f"http://{s.host}:{s.tracker_port}"
        planned.append(
            Component(
                "tracker",
                self._process("tracker", s.tracker_port),
                [*python, "tracker", "--host", s.host, "--port", str(s.tracker_port),
                 *(["--kafka", self.kafka] if s.kafka else ["--kafka-file", str(self.kafka_file)]),
                 "--spool-dir", str(self.root / "spool"), "--redis-url", self.redis_url],
                http_ok(f"{tracker_url}/readyz", broker_up),
                env={
                    **env,
                    "ADPULSE_API_TOKEN": s.token,
                    "ADPULSE_REDIRECT_HOSTS": self.redirect_hosts,
                    "ADPULSE_FX_RATES": s.fx_rates,
                    "ADPULSE_HASH_KEY": env.get("ADPULSE_HASH_KEY") or self.hash_key(),
                    "ADPULSE_CLICK_KEY": self.click_key(env),
                },
                grace=30.0,
            )
        )  # fmt: skip
        planned.append(self.worker_component(s.worker_port, self.kafka))
        planned.append(
            Component(
                "exporter",
                self._process("exporter", s.exporter_port),
                [*python, "exporter", "--host", s.host, "--port", str(s.exporter_port),
                 "--redis-url", self.redis_url],
                http_ok(f"http://{s.host}:{s.exporter_port}/metrics"),
                env={**DEV_SPIKE, **env},
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
                    # The dev tracker always has a hash key, so orders carry customers.
                    [
                        *python,
                        "simulate",
                        "--tracker",
                        tracker_url,
                        "--json",
                        "--customers",
                        *s.simulate_args,
                    ],
                    None,
                    env={**env, "ADPULSE_API_TOKEN": s.token},
                    may_exit=True,
                )
            )
        return planned

    def broker_component(self, port: int) -> Component:
        """The embedded broker on `port`, with a cluster id of its own: a replacement's log is
        another log (stream/apply_batch/redelivery.lua)."""
        url = f"tcp://{self.settings.host}:{port}"
        cluster = f"adpulse-dev-{secrets.token_hex(4)}"
        return Component(
            "broker",
            self._process("broker", port),
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--cluster-id", cluster],
            lambda: kafka_metadata_answers(self.settings.host, port),
            grace=1.0,
        )  # fmt: skip

    def component_environment(self) -> dict[str, str]:
        """The variables every component of the stack gets. The registry topic too, so that a
        component reading the registries names the one the stack registers its samples in,
        whether given as a flag or a variable."""
        s = self.settings
        return {
            **s.environment,
            "ADPULSE_LOG_LEVEL": s.log_level,
            str(REGISTRY_TOPIC.env): s.registry_topic,
        }

    def worker_component(self, port: int, kafka: str) -> Component:
        s = self.settings
        env = self.component_environment()
        return Component(
            "worker",
            self._process("worker", port),
            [sys.executable, "-m", "adpulse", "worker", "--host", s.host, "--port", str(port),
             "--kafka", kafka, "--redis-url", self.redis_url, "--share-port",
             "--client-id", self.worker_client_id],
            http_ok(f"http://{s.host}:{port}/metrics"),
            env={**env, "ADPULSE_CLICK_KEY": self.click_key(env)},
            grace=30.0,
        )  # fmt: skip

    def _process(self, name: str, port: int) -> ManagedProcess:
        workdir = self.root / name
        workdir.mkdir(parents=True, exist_ok=True)
        return ManagedProcess(name, port, workdir, scratch=False)

    def _prometheus_config(self) -> Path:
        s = self.settings
        # The project's deploy/ (adpulse/cli/devstack.py is two levels below the project).
        rules = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
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
        alerts = config.parent / "alerts.dev.yml"
        alerts.write_text(dev_alerts((rules / "alerts.yml").read_text()))
        config.write_text(
            "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
            "rule_files:\n"
            + "".join(
                f"  - {path}\n"
                for path in [*sorted(rules.glob("*.yml")), alerts]
                if path.name != "alerts.yml"
            )
            + f"scrape_configs:\n{scrape}\n"
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

    def check_services(self) -> None:
        """A broker or Redis of the user's own must answer before anything starts."""
        s = self.settings
        if s.kafka is not None:
            try:
                host, port = kafka_address(s.kafka)
            except ValueError as error:
                raise ServiceUnreachable(
                    "Kafka broker", s.kafka, "ADPULSE_KAFKA", str(error)
                ) from None
            self._wait_service(
                "Kafka broker", s.kafka, "ADPULSE_KAFKA", lambda: kafka_metadata_answers(host, port)
            )
        if s.redis_url is not None:
            url = s.redis_url
            self._wait_service(
                "Redis", redacted(url), "ADPULSE_REDIS_URL", lambda: redis_url_answers(url)
            )

    def _wait_service(
        self, what: str, address: str, variable: str, probe: Callable[[], bool]
    ) -> None:
        end = time.monotonic() + SERVICE_DEADLINE
        reason = f"no answer within {SERVICE_DEADLINE:g} s"
        while not self.stop_requested.is_set():
            try:
                if probe():
                    return
            except ValueError as error:  # a malformed address: waiting will not help
                raise ServiceUnreachable(what, address, variable, str(error)) from None
            except (OSError, ConnectionError) as error:
                reason = f"{type(error).__name__}: {error}"
            if time.monotonic() >= end:
                raise ServiceUnreachable(what, address, variable, reason)
            self.stop_requested.wait(0.2)  # retry backoff of a probe

    def start(self) -> None:
        """Start every component in order, each answering before the next; stop all on failure.

        The caller holds the data directory's lock (`self.lock`).
        """
        if self.settings.reset:
            for stale in ("redis", "spool"):
                shutil.rmtree(self.root / stale, ignore_errors=True)
            print(
                f"  --reset: deleted the Redis data and the spool of earlier runs in {self.root}",
                file=self.out,
                flush=True,
            )
        (self.root / "redis").mkdir(parents=True, exist_ok=True)
        if self.settings.kafka is None:
            write_bootstrap_file(self.kafka_file, self.kafka)
        planned = self.components()
        self.check_ports(planned)
        self.check_services()
        for component in planned:
            if self.stop_requested.is_set():
                return
            if component.name == "simulator":
                self.register_coupons()
                self.baseline = devwatch.try_scrape(self.exporter_metrics)
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
                    component.process.wait_ready(
                        component.ready, START_DEADLINE, self.stop_requested
                    )
                except StartCancelled:
                    print(" stopped", file=self.out, flush=True)
                    return
                except ServiceStartError as error:
                    print(" failed", file=self.out, flush=True)
                    raise DevStackError(str(error)) from error
            print(f" up ({time.monotonic() - started:.1f} s)", file=self.out, flush=True)
            if component.name == "tracker":
                self._echo(component, "tracker: ")
        self.wait_worker_joined()
        if not self.settings.simulate:
            self.register_coupons()
        if self.settings.kafka is None and not self.stop_requested.is_set():
            recycle = RecycleSettings(
                self.settings.broker_max_memory,
                topic=self.worker_setting("topic"),
                group=self.worker_setting("group"),
                carried=(self.settings.registry_topic,),
            )
            self.recycler = BrokerRecycler(recycle, self.kafka, self, self.out)

    def worker_setting(self, name: str) -> str:
        """The worker's setting `name` as the stack's environment gives it, else its default."""
        setting = declared(WorkerSettings, name)
        return str(self.settings.environment.get(str(setting.env), setting.default))

    def wait_worker_joined(self) -> None:
        """Wait until the worker holds its partitions (its consumer group stable, with the
        worker's own member, on the broker): its /metrics answers seconds earlier, and the stack
        says it runs only once what is sent to it is counted."""
        if self.stop_requested.is_set():
            return
        group = self.worker_setting("group")
        worker = next(c for c in self.started if c.name == "worker")
        process = worker.process

        def gone() -> bool:
            return process.process is None or process.process.poll() is not None

        print(f"  worker     joining its group {group} ...", end="", file=self.out, flush=True)
        started = time.monotonic()
        try:
            joined = asyncio.run(
                wait_joined(
                    self.kafka,
                    group,
                    START_DEADLINE,
                    self.stop_requested,
                    client_id=self.worker_client_id,
                    gone=gone,
                )
            )
        except KafkaError as error:
            print(" failed", file=self.out, flush=True)
            raise DevStackError(
                f"cannot see whether the worker joined its consumer group {group!r}: the broker "
                f"at {self.kafka} did not answer within {START_DEADLINE:.0f} s "
                f"({type(error).__name__}: {error}); see {process.log_path}"
            ) from error
        if self.stop_requested.is_set():
            print(" stopped", file=self.out, flush=True)
            return
        if not joined:
            print(" failed", file=self.out, flush=True)
            if gone() and process.process is not None:
                raise ComponentDied("worker", process.process.returncode, process)
            raise DevStackError(
                f"the worker did not join its consumer group {group!r} on the broker at "
                f"{self.kafka} within {START_DEADLINE:.0f} s; see {process.log_path}"
            )
        print(f" joined ({time.monotonic() - started:.1f} s)", file=self.out, flush=True)

    @property
    def exporter_metrics(self) -> str:
        return f"http://{self.settings.host}:{self.settings.exporter_port}/metrics"

    def _echo(self, component: Component, prefix: str) -> None:
        process = component.process
        echo = devwatch.LogEcho(
            process.log_path, process.log_start, devwatch.TRACKER_NOTICES, self.out, prefix
        )
        echo.start()
        self.echoes.append(echo)

    def hash_key(self) -> str:
        """The dev stack's caller-hashing key: made once and kept with its data, so that a
        caller is the same hash from one run to the next."""
        return self._kept_key("hash-key")

    def click_key(self, env: Mapping[str, str]) -> str:
        """The dev stack's click-signing key (`adpulse.core.click_ids`): the environment's, else
        made once and kept with its data, so that issued click ids stay valid across runs."""
        return env.get("ADPULSE_CLICK_KEY") or self._kept_key("click-key")

    def _kept_key(self, name: str) -> str:
        path = self.root / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def register_coupons(self) -> None:
        """The README's sample coupons (unless registered already) and the simulator's coupons
        and phone numbers, through the registry topic (`stream.registry`) like `adpulse
        coupons`, so that a rebuild of the dev stack restores them."""
        from adpulse.cli.simulate.profiles import coupon_rows, number_rows
        from adpulse.core.phone import NumberEntry
        from stream.registry import Registrar, coupon_entry, number_entry
        from stream.store import KpiStore

        async def register() -> tuple[list[tuple[str, str]], int]:
            store = KpiStore.from_url(self.redis_url)
            try:
                await store.follow_active_prefix()
                registrar = Registrar(self.kafka, self.settings.registry_topic, store)
                known = await registrar.entries("coupon")
                samples = [(code, channel) for code, channel in SAMPLE_COUPONS if code not in known]
                simulated = coupon_rows() if self.settings.simulate else []
                entries = [coupon_entry(code, channel) for code, channel in samples + simulated]
                if self.settings.simulate:
                    # The simulator's tracked phone numbers too, so that its calls count.
                    entries += [
                        number_entry(NumberEntry(number, kind, channel, campaign))
                        for number, channel, campaign, kind in number_rows()
                    ]
                # One publish for all: the registry topic's producer starts once.
                await registrar.register(entries)
                return samples, len(simulated)
            finally:
                await store.close()

        from stream.errors import StreamError

        try:
            samples, simulated = asyncio.run(register())
        except (StreamError, ValueError) as error:
            raise DevStackError(
                f"cannot register the coupons and numbers (registry topic on Kafka at "
                f"{self.kafka}, then Redis at {redacted(self.redis_url)}): {error}"
            ) from error
        for code, channel in samples:
            self._say(f"  coupons    sample {code} -> {channel} registered")
        if simulated:
            self._say(f"  coupons    {simulated} simulator coupons registered")

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _env(self, component: Component) -> dict[str, str] | None:
        if component.env is None:
            return None
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("ADPULSE_")}
        return {**inherited, **component.env}

    def watch(self, poll: float = 0.2) -> None:
        """Return when a stop is requested; raise ComponentDied if a child exits on its own."""
        progress_at = time.monotonic() + PROGRESS_EVERY
        while not self.stop_requested.wait(poll):
            if self.recycler is not None:
                self.recycler.tick()
            if time.monotonic() >= progress_at:
                progress_at += PROGRESS_EVERY
                self.show_progress()
            for component in list(self.started):
                process = component.process.process
                if process is None or process.poll() is None:
                    continue
                if component.may_exit and process.returncode == 0:
                    print(f"  {component.name} finished", file=self.out, flush=True)
                    self.started.remove(component)
                    if component.name == "simulator":
                        self.check_simulator(component, wait=True)
                    continue
                raise ComponentDied(component.name, process.returncode, component.process)

    def show_progress(self) -> None:
        """What the running simulator sent so far, and how the counters grew meanwhile."""
        simulator = next((c for c in self.started if c.name == "simulator"), None)
        if simulator is None or self.baseline is None:
            return
        progress = devwatch.last_progress(simulator.process.log_path, simulator.process.log_start)
        after = devwatch.try_scrape(self.exporter_metrics)
        if progress is None or after is None:
            return
        when, sent = progress
        grown = devwatch.growth(self.baseline, after)
        counted = ", ".join(f"{value.normalize():f} {name}" for name, value in grown.items())
        self._say(
            f"  simulator: {sent} by {when}; since it started the counters grew by {counted} "
            "by now (bot clicks are counted apart, duplicates not at all; the exact check comes "
            "when it stops)"
        )

    def check_simulator(self, simulator: Component, wait: bool) -> None:
        """Print what the simulator sent against how much the counters grew meanwhile."""
        if self.checked or self.baseline is None:
            return
        report = devwatch.simulator_report(simulator.process.log_path, simulator.process.log_start)
        if report is None:
            print("  simulator check: the simulator left no report", file=self.out, flush=True)
            return
        before = self.baseline
        found: list[devwatch.SimulatorCheck] = []

        def matches() -> bool:
            after = devwatch.try_scrape(self.exporter_metrics)
            if after is None:
                return False
            found.append(devwatch.compare(report, before, after))
            return found[-1].matches

        # The last events reach the counters a moment after the simulator sent them.
        devwatch.wait_for(matches, DRAIN_DEADLINE if wait else 0)
        self.checked = True
        if found:
            print("\n".join(found[-1].lines()), file=self.out, flush=True)

    # Stop order: traffic first, then the tracker (its SIGTERM flushes to the broker), then the
    # worker once it has counted what the broker holds, then what the others read from.
    STOP_ORDER = (
        "simulator", "prometheus", "tracker", "worker", "exporter", "redis", "broker"
    )  # fmt: skip

    def stop(self) -> None:
        """Stop every started component in STOP_ORDER, each given its grace period."""
        for echo in self.echoes:
            echo.stop()
        rank = {name: index for index, name in enumerate(self.STOP_ORDER)}
        simulator: Component | None = None
        for component in sorted(self.started, key=lambda c: rank[c.name]):
            if component.name == "worker" and component.process.running:
                print("  worker     counting what the broker holds ...", end="", file=self.out)
                metrics = f"http://{self.settings.host}:{component.process.port}/metrics"
                drained = devwatch.wait_for(devwatch.worker_drained(metrics), DRAIN_DEADLINE)
                print(" done" if drained else " gave up waiting", file=self.out, flush=True)
                if simulator is not None:
                    self.check_simulator(simulator, wait=False)
            print(f"  {component.name:<10} stopping ...", end="", file=self.out, flush=True)
            component.process.terminate(component.grace)
            print(" done", file=self.out, flush=True)
            if component.name == "simulator":
                simulator = component
        self.started.clear()
        self.lock.release()

    def request_stop(self, signum: int, frame: object) -> None:
        self.stop_requested.set()

    @property
    def registry_flag(self) -> str:
        """What `adpulse coupons` and `adpulse numbers` need to change this stack's registries."""
        topic = self.settings.registry_topic
        return "" if topic == REGISTRY_TOPIC.default else f" --registry-topic {topic}"

    def banner(self) -> str:
        s = self.settings
        tracker = f"http://{s.host}:{s.tracker_port}"
        lines = [
            "",
            "adpulse dev is running; Ctrl-C stops it.",
            f"  tracker     {tracker}/  (openapi: {tracker}/openapi.json)",
            f"  fire a pixel:  curl -A Mozilla/5.0 '{tracker}/p.gif?type=click&channel=email'",
            f"  KPIs        {self.exporter_metrics}",
            f"  worker      http://{s.host}:{s.worker_port}/metrics",
            f"  Kafka       {self.kafka}    Redis {redacted(self.redis_url)}",
            f"  report      {report_command(self.redis_url)}",
            f"  spend API   Authorization: Bearer {s.token}",
            f"  redirects   /c may redirect to {self.redirect_hosts} "
            "(ADPULSE_REDIRECT_HOSTS adds more)",
            f"  sample data FX rates {s.fx_rates} (ADPULSE_FX_RATES); coupons "
            + ", ".join(f"{code} -> {channel}" for code, channel in SAMPLE_COUPONS)
            + f" (adpulse coupons{self.registry_flag})",
            f"  state       kept in {self.root} across runs; --reset starts afresh",
            f"  logs        {self.root}/<component>/<component>.log",
        ]
        if s.prometheus and shutil.which("prometheus"):
            lines.append(f"  prometheus  http://{s.host}:{s.prometheus_port}")
        return "\n".join(lines) + "\n"


def run(settings: DevSettings, out: TextIO = sys.stdout) -> int:
    stack = DevStack(settings, out)
    signal.signal(signal.SIGTERM, stack.request_stop)
    signal.signal(signal.SIGINT, stack.request_stop)
    try:
        stack.lock.acquire()
    except AlreadyRunning as error:
        # Before anything is touched: the running stack's files and ports are its own.
        print(f"adpulse dev: {error}", file=sys.stderr, flush=True)
        return 2
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
