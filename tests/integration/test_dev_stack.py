"""`adpulse dev --simulate` as a user runs it: counts, spikes, report, a dying child."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.kafka_helpers import wait_until_sync
from tests.metrics import Samples, scrape, value
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
SEED = "20261123"
DURATION = "12"
RATE = "40"
# Influencer conversions come from coupon redemptions, several a second at this rate: its CPA
# exists in every run, where a click channel may see no conversion in a short one.
SPIKED = "influencer"
DEV_REGISTRY = "adpulse.registry.dev"
"""The `plain` stack's registry topic: not the default, to show the stack registers in it."""


def metric(samples: Samples, name: str, **labels: str) -> float:
    """A counter's value, 0 when the series is absent (nothing counted yet)."""
    return value(samples, name, **labels) or 0.0


@dataclass
class DevRun:
    process: subprocess.Popen[bytes]
    output: Path
    data_dir: Path
    ports: dict[str, int]

    @property
    def exporter(self) -> str:
        return f"http://127.0.0.1:{self.ports['exporter']}/metrics"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports['redis']}/0"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_running(self, interval: float = 0.2) -> None:
        """Until the stack says it runs; it must not have exited instead."""
        wait_until_sync(
            lambda: "adpulse dev is running" in self.text() or self.process.poll() is not None,
            timeout=120,
            interval=interval,
        )
        assert self.process.poll() is None, self.text()

    def simulator_report(self) -> dict[str, Any]:
        log = (self.data_dir / "simulator" / "simulator.log").read_text()
        start = log.index("\n{") + 1
        report: dict[str, Any] = json.loads(log[start : log.rindex("}") + 1])
        return report

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def start_dev(
    tmp_path: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    data_dir: Path | None = None,
    output: Path | None = None,
) -> DevRun:
    """`adpulse dev` with free ports; `env` adds ADPULSE_* settings to a clean environment."""
    ports = {name: free_port() for name in ("tracker", "exporter", "worker", "kafka", "redis")}
    data_dir = data_dir or tmp_path / "dev"
    output = output or tmp_path / "dev.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADPULSE_")} | (env or {})
    command = [
        sys.executable, "-m", "adpulse", "dev", "--data-dir", str(data_dir),
        "--port", str(ports["tracker"]), "--exporter-port", str(ports["exporter"]),
        "--worker-port", str(ports["worker"]), "--kafka-port", str(ports["kafka"]),
        "--redis-port", str(ports["redis"]), *extra,
    ]  # fmt: skip
    with output.open("wb") as sink:
        # From the project directory, as `make run` runs it: the banner's commands are relative.
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
    return DevRun(process, output, data_dir, ports)


def simulated(tmp_path: Path, *extra: str) -> Iterator[DevRun]:
    run = start_dev(
        tmp_path, "--simulate", "--seed", SEED, "--duration", DURATION, "--rate", RATE, *extra
    )
    try:
        wait_until_sync(
            lambda: "simulator finished" in run.text() or run.process.poll() is not None,
            timeout=120,
            interval=0.2,
            message="the simulator's run",
        )
        assert run.process.poll() is None, run.text()
        yield run
    finally:
        code = run.stop()
        assert code == 0, run.text()
    assert_all_gone(run)


def assert_all_gone(run: DevRun) -> None:
    marker = str(run.data_dir)
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in command or any(f":{port}" in command for port in run.ports.values()):
                left.append(command)
    assert not left, f"processes left behind: {left}"
    from adpulse.cli.processes import port_is_free

    for name, port in run.ports.items():
        assert port_is_free("127.0.0.1", port), f"{name} port {port} still taken"


def counts_match(run: DevRun, report: dict[str, Any]) -> bool:
    samples = scrape(run.exporter)
    for channel, sent in report["channels"].items():
        expected = {
            "click": sent["clicks"],
            "conversion": sent["conversions"],
            "redemption": sent["redemptions"],
        }
        for kind, count in expected.items():
            if metric(samples, "adpulse_events_total", channel=channel, type=kind) != count:
                return False
        if round(metric(samples, "adpulse_spend_total", channel=channel), 6) != float(
            sent["spend"]
        ):
            return False
        if round(metric(samples, "adpulse_revenue_total", channel=channel), 6) != float(
            sent["revenue"]
        ):
            return False
        # Orders restated (declined, refunded) and customers (the dev stack sends them).
        if round(metric(samples, "adpulse_net_revenue", channel=channel), 6) != float(
            sent["net_revenue"]
        ):
            return False
    # Customers: a customer's orders after different clicks sit in different partitions, and which
    # one the worker takes first (who acquired them) may differ from the order they were sent in,
    # as after a broker replacement (README, "Customers"); how many are new and how many repeat
    # sales is exact whatever the order.
    for name in ("new_customers", "repeat_sales"):
        counted = sum(
            metric(samples, f"adpulse_{name}_total", channel=channel)
            for channel in report["channels"]
        )
        if counted != sum(sent[name] for sent in report["channels"].values()):
            return False
    return True


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    yield from simulated(tmp_path_factory.mktemp("plain"), "--registry-topic", DEV_REGISTRY)


@pytest.fixture(scope="module")
def spiked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    yield from simulated(tmp_path_factory.mktemp("spiked"), "--spike", f"{SPIKED}=3@0s")


def test_the_exporter_shows_exactly_what_the_simulator_sent(plain: DevRun) -> None:
    report = plain.simulator_report()
    assert report["errors"] == 0
    assert set(report["channels"]) >= {
        "paid_search", "paid_social", "email", "affiliate", "marketplace", "native",
        "remarketing", "influencer",
    }  # fmt: skip
    totals = report["totals"]
    assert totals["bot_clicks"] > 0
    assert totals["new_customers"] > 0
    assert totals["restatements"] > 0
    wait_until_sync(
        lambda: counts_match(plain, report),
        timeout=30,
        interval=0.5,
        message="exporter counts equal to the simulator's report",
    )
    # A fresh stack: this run's customers are the only cohort, within every horizon.
    samples = scrape(plain.exporter)
    for channel, sent in report["channels"].items():
        for horizon in ("30d", "90d", "365d"):
            ltv = value(samples, "adpulse_ltv", channel=channel, horizon=horizon)
            if not sent["new_customers"]:
                assert ltv is None, channel
                continue
            expected = sent["ltv_revenue_micros"] / sent["new_customers"] / 1_000_000
            assert ltv == pytest.approx(expected, rel=1e-9), (channel, horizon)


async def test_the_samples_are_registered_through_the_registry_topic(plain: DevRun) -> None:
    """The sample and simulator coupons and the simulator's numbers are on the dev broker's
    registry topic (`--registry-topic`) as in Redis, so that `adpulse rebuild` of the dev stack
    restores them."""
    from adpulse.cli.simulate.profiles import number_rows
    from adpulse.core.options import REGISTRY_TOPIC
    from stream.registry import BOOKS, read_state
    from stream.store import KpiStore

    kafka = f"127.0.0.1:{plain.ports['kafka']}"
    assert (await read_state(kafka, REGISTRY_TOPIC.default)).records == 0
    state = await read_state(kafka, DEV_REGISTRY)
    store = KpiStore.from_url(plain.redis_url)
    try:
        await store.follow_active_prefix()
        for kind in ("coupon", "number"):
            in_topic = {entry.key: entry.value for entry in state.of_kind(kind)}
            assert in_topic == await BOOKS[kind](store).read(), kind
    finally:
        await store.close()
    assert "SUMMER10" in {entry.key for entry in state.of_kind("coupon")}
    assert len(state.of_kind("number")) == len(number_rows())


def test_report_json_gives_the_exporter_s_numbers(plain: DevRun) -> None:
    report = plain.simulator_report()
    wait_until_sync(lambda: counts_match(plain, report), timeout=30, interval=0.5)
    today = datetime.now(UTC).date()
    answer = subprocess.run(
        [
            sys.executable,
            "-m",
            "adpulse",
            "report",
            "--once",
            "--json",
            "--from",
            (today - timedelta(days=1)).isoformat(),
            "--to",
            today.isoformat(),
            "--redis-url",
            plain.redis_url,
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    document = json.loads(answer.stdout)
    samples = scrape(plain.exporter)
    # The run's events are all of today or yesterday (UTC): the report's sums are the totals.
    for row in document["rows"]:
        channel = row["channel"]
        assert row["clicks"]["value"] == metric(
            samples, "adpulse_events_total", channel=channel, type="click"
        )
        # Conversions and revenue are net (orders now pending or approved); gross beside.
        assert row["conversions"]["value"] == metric(
            samples, "adpulse_net_conversions", channel=channel
        )
        assert row["gross_conversions"]["value"] == metric(
            samples, "adpulse_events_total", channel=channel, type="conversion"
        )
        assert row["spend"]["value"] == pytest.approx(
            metric(samples, "adpulse_spend_total", channel=channel), abs=0.005
        )
        assert row["revenue"]["value"] == pytest.approx(
            metric(samples, "adpulse_net_revenue", channel=channel), abs=0.005
        )
        assert row["gross_revenue"]["value"] == pytest.approx(
            metric(samples, "adpulse_revenue_total", channel=channel), abs=0.005
        )


def test_a_spike_multiplies_that_channel_s_cpa_only(plain: DevRun, spiked: DevRun) -> None:
    for run in (plain, spiked):
        report = run.simulator_report()
        wait_until_sync(functools.partial(counts_match, run, report), timeout=30, interval=0.5)
    before, after = scrape(plain.exporter), scrape(spiked.exporter)

    def cpa(samples: Samples, channel: str) -> float | None:
        return samples.get(("adpulse_cpa", frozenset({("channel", channel), ("window", "5m")})))

    compared = 0
    for channel in (
        "paid_search",
        "paid_social",
        "email",
        "affiliate",
        "remarketing",
        "influencer",
    ):
        plain_cpa, spiked_cpa = cpa(before, channel), cpa(after, channel)
        if plain_cpa is None or spiked_cpa is None:
            continue
        factor = 3.0 if channel == SPIKED else 1.0
        # The same seed sends the same clicks and orders; only the spend per click differs.
        assert spiked_cpa / plain_cpa == pytest.approx(factor, rel=0.02), channel
        compared += 1
    assert cpa(before, SPIKED) is not None
    assert compared >= 2, "the spiked channel and at least one other were compared"


def test_the_stack_says_it_runs_once_its_worker_holds_its_partitions(tmp_path: Path) -> None:
    """The worker's /metrics answers seconds before it has joined its group: the stack says
    "joined", and then that it runs, only once the worker logged its partitions assigned."""
    run = start_dev(tmp_path)
    try:
        wait_until_sync(
            lambda: " joined (" in run.text() or run.process.poll() is not None,
            timeout=120,
            interval=0.05,
        )
        # The time "joined" was seen, before the banner, and with the register step between
        # them not covering a join said too early.
        seen = datetime.now(UTC).replace(microsecond=0)
        run.wait_running(interval=0.05)
        worker_log = (run.data_dir / "worker" / "worker.log").read_text(errors="replace")
        assigned = re.search(r"^(\S+) INFO .*partitions assigned: \d", worker_log, re.MULTILINE)
        assert assigned, worker_log[-3000:]
        # The log's seconds are truncated, as is `seen`: an assignment logged after the stack
        # said "joined" is caught from a second late on.
        assert datetime.strptime(assigned[1], "%Y-%m-%dT%H:%M:%S%z") <= seen, worker_log[-3000:]
        said = run.text()
        assert re.search(r"worker +joining its group \S+ \.\.\. joined \(", said), said
        assert said.index("joined (") < said.index("adpulse dev is running")
    finally:
        code = run.stop()
    assert code == 0, run.text()
    assert_all_gone(run)


def test_a_child_killed_from_outside_stops_the_stack_with_its_name(tmp_path: Path) -> None:
    run = start_dev(tmp_path)
    try:
        run.wait_running()
        worker_pid = find_pid(run, "worker")
        os.kill(worker_pid, signal.SIGKILL)
        code = run.process.wait(60)
    finally:
        run.stop()
    assert code != 0
    assert "the worker exited with code -9" in run.text()
    assert_all_gone(run)


def find_pid(run: DevRun, component: str) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"adpulse" in command
            and component.encode() in command
            and str(run.ports["redis"]).encode() in b" ".join(command)
        ):
            return int(entry.name)
    raise AssertionError(f"no {component} process found")
