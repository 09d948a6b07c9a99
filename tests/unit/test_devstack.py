"""The dev stack's pure parts: its data directory lock, messages and the banner's command."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adpulse.cli.devcheck import AlreadyRunning, DataDirLock, kafka_address, redacted
from adpulse.cli.devstack import Component, DevSettings, DevStack, PortTaken, report_command
from adpulse.cli.devwatch import compare, growth, last_progress, simulator_report
from adpulse.cli.processes import ManagedProcess, StartCancelled


def test_one_stack_per_data_directory_and_the_second_is_told_the_first_s_pid(
    tmp_path: Path,
) -> None:
    first, second = DataDirLock(tmp_path), DataDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(AlreadyRunning) as refused:
            second.acquire()
        assert refused.value.pid == str(os.getpid())
        assert f"pid {os.getpid()}" in str(refused.value)
    finally:
        first.release()
    second.acquire()  # free again once the first lets go, whatever its file says
    second.release()


def test_a_taken_port_says_how_to_move_it_through_make() -> None:
    message = str(PortTaken("tracker", "127.0.0.1", 8080, "--port"))
    assert "--port" in message
    assert "make run ARGS='--port 8081'" in message


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("kafka-1:9092,kafka-2:9092", ("kafka-1", 9092)),
        ("[::1]:9092", ("::1", 9092)),
    ],
)
def test_kafka_address(bootstrap: str, expected: tuple[str, int]) -> None:
    assert kafka_address(bootstrap) == expected


@pytest.mark.parametrize("bootstrap", ["localhost", "host:port", ":9092"])
def test_kafka_address_refuses_what_is_not_host_port(bootstrap: str) -> None:
    with pytest.raises(ValueError, match="not host:port"):
        kafka_address(bootstrap)


def test_a_redis_password_stays_out_of_messages() -> None:
    assert redacted("redis://:s3cret@db:6379/0") == "redis://:***@db:6379/0"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_the_report_command_has_no_redundant_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    project = Path(sys.executable).parent.parent.parent
    monkeypatch.chdir(project)
    script = Path(sys.executable).parent / "adpulse"
    command = str(script.relative_to(project)) if script.is_file() else "adpulse"
    assert report_command("redis://127.0.0.1:6379/0") == f"{command} report"
    assert (
        report_command("redis://127.0.0.1:7000/0")
        == f"{command} report --redis-url redis://127.0.0.1:7000/0"
    )


def test_a_stop_request_ends_the_wait_for_a_starting_service(tmp_path: Path) -> None:
    process = ManagedProcess("slow", 0, tmp_path)
    process.spawn(["sleep", "60"])
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(StartCancelled):
            process.wait_ready(lambda: False, deadline=60, stop=stop)
    finally:
        timer.cancel()
        process.terminate(grace=1)
    assert time.monotonic() - started < 5


def test_a_stop_during_the_recycler_s_restart_is_a_stop_not_a_failure(tmp_path: Path) -> None:
    # CI saw `adpulse dev` exit 1 when stopped while the broker recycler restarted the worker.
    stack = DevStack(DevSettings(data_dir=tmp_path))
    process = ManagedProcess("worker", 0, tmp_path)
    worker = Component("worker", process, ["sleep", "60"], ready=lambda: False)
    stack.started.append(worker)
    timer = threading.Timer(0.2, stack.stop_requested.set)
    timer.start()
    try:
        # Returns once the stop is requested, raising nothing: the stop stops it.
        assert stack.launch(worker) is False
    finally:
        timer.cancel()
        process.terminate(grace=1)
    assert stack.stop_requested.is_set()


def test_a_stop_during_a_replacement_stops_both_brokers_and_workers(tmp_path: Path) -> None:
    # A replacement runs two of each for a moment; the stop must leave none behind.
    stack = DevStack(DevSettings(data_dir=tmp_path))
    for name in ("broker", "worker", "broker", "worker"):
        component = Component(name, ManagedProcess(name, 0, tmp_path), ["sleep", "60"], None)
        stack.launch(component)
        stack.started.append(component)
    processes = [component.process for component in stack.started]
    stack.lock.acquire()
    stack.stop()
    assert all(not process.running for process in processes)
    assert stack.started == []


def test_a_log_tail_shows_this_run_only(tmp_path: Path) -> None:
    process = ManagedProcess("echo", 0, tmp_path)
    for word in ("earlier", "now"):
        process.spawn(["echo", f"run {word}"])
        assert process.process is not None
        process.process.wait(10)
        tail = process.log_tail()
        process.terminate(grace=1)
    assert "run now" in tail
    assert "run earlier" not in tail


def test_the_simulator_check_compares_what_was_sent_with_what_grew(tmp_path: Path) -> None:
    log = tmp_path / "simulator.log"
    log.write_text(
        'an older run\n{\n  "channels": {"email": {"clicks": 1}}\n}\nINFO simulating\n'
        '{\n  "channels": {"email": {"clicks": 3, "bot_clicks": 1, "conversions": 1,\n'
        '  "redemptions": 0, "spend": "2.50", "revenue": "10.00", "net_revenue": "7.50",\n'
        '  "new_customers": 1, "repeat_sales": 0}}\n}\n'
    )
    report = simulator_report(log, 0)
    assert report is not None
    assert report["channels"]["email"]["clicks"] == 3

    def samples(
        clicks: float, revenue: float
    ) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            ("adpulse_events_total", frozenset({("channel", "email"), ("type", "click")})): clicks,
            ("adpulse_events_total", frozenset({("channel", "email"), ("type", "conversion")})): 1,
            ("adpulse_spend_total", frozenset({("channel", "email")})): 2.5,
            ("adpulse_revenue_total", frozenset({("channel", "email")})): revenue,
            ("adpulse_bot_clicks_total", frozenset({("channel", "email")})): 1,
            ("adpulse_net_revenue", frozenset({("channel", "email")})): 7.5,
            ("adpulse_new_customers_total", frozenset({("channel", "email")})): 1,
        }

    before = {("adpulse_events_total", frozenset({("channel", "email"), ("type", "click")})): 5.0}
    check = compare(report, before, samples(8, 10.0))
    assert check.matches, check.differences
    assert check.bot_clicks == 1
    assert check.bot_shares == ("email 25.0%",)
    short = compare(report, before, samples(7, 10.0))
    assert short.differences == ("email clicks: sent 3, counted 2",)


def test_dev_help_names_reset() -> None:
    # `adpulse dev --help` builds its parser without importing the stack's heavy parts.
    answer = subprocess.run(
        [sys.executable, "-m", "adpulse", "dev", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "--reset" in answer.stdout


def test_the_simulator_s_progress_and_the_counters_growth(tmp_path: Path) -> None:
    log = tmp_path / "simulator.log"
    log.write_text(
        "2026-12-06T03:00:00 INFO simulate adpulse.cli.simulate.driver: sent 10 requests, 0 errors, "
        "0 conversions skipped\n"
        "2026-12-06T03:00:10 INFO simulate adpulse.cli.simulate.driver: sent 25 requests, 1 errors, "
        "0 conversions skipped\n"
    )
    assert last_progress(log, 0) == (
        "03:00:10",
        "sent 25 requests, 1 errors, 0 conversions skipped",
    )
    click = ("adpulse_events_total", frozenset({("channel", "email"), ("type", "click")}))
    other = ("adpulse_events_total", frozenset({("channel", "native"), ("type", "click")}))
    sale = ("adpulse_events_total", frozenset({("channel", "email"), ("type", "conversion")}))
    grown = growth({click: 4.0}, {click: 10.0, other: 2.0, sale: 1.0})
    assert grown == {
        "clicks": 8,
        "bot_clicks": 0,
        "leads": 0,
        "conversions": 1,
        "redemptions": 0,
    }


def test_the_dev_stack_alerts_differ_from_deploy_s_only_in_the_cpa_spike_s_for() -> None:
    from adpulse.cli.devstack import DEV_SPIKE_FOR, dev_alerts

    deploy = (
        Path(__file__).resolve().parents[2] / "deploy/prometheus/rules/alerts.yml"
    ).read_text()
    dev = dev_alerts(deploy)
    changed = [
        (old, new)
        for old, new in zip(deploy.splitlines(), dev.splitlines(), strict=True)
        if old != new
    ]
    assert changed == [("        for: 60m", f"        for: {DEV_SPIKE_FOR}")]
    assert dev.index(f"for: {DEV_SPIKE_FOR}") > dev.index("- alert: AdpulseCpaSpike")


def test_a_spike_raises_the_simulator_s_default_rate_and_a_rate_given_wins() -> None:
    import argparse

    from adpulse.cli.commands import dev
    from adpulse.core.options import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser, dev.settings())

    def simulate_args(argv: list[str], env: dict[str, str] | None = None) -> tuple[str, ...]:
        return dev.settings_from(parser.parse_args(argv), env or {}).simulate_args

    spike = ["--spike", "paid_search=3@60"]
    assert simulate_args(spike) == ("--rate", dev.SPIKE_RATE, *spike)
    assert simulate_args([*spike, "--rate", "20"]) == ("--rate", "20", *spike)
    assert simulate_args(spike, {"ADPULSE_SIMULATE_RATE": "20"}) == tuple(spike)
    assert simulate_args([]) == ()


def test_the_registry_topic_is_the_dev_stack_s_setting_and_reaches_its_components(
    tmp_path: Path,
) -> None:
    import argparse

    from adpulse.cli.commands import dev
    from adpulse.core.options import REGISTRY_TOPIC, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser, dev.settings())

    def stack(argv: list[str], env: dict[str, str]) -> DevStack:
        settings = dev.settings_from(parser.parse_args(argv), env)
        # A Kafka and a Redis of the user's own: no embedded binary is looked for.
        return DevStack(dataclasses.replace(settings, data_dir=tmp_path, kafka="127.0.0.1:1",
                                            redis_url="redis://127.0.0.1:1/0"))  # fmt: skip

    variable = str(REGISTRY_TOPIC.env)
    for argv, env, expected in (
        ([], {}, REGISTRY_TOPIC.default),
        ([], {variable: "from-env"}, "from-env"),
        (["--registry-topic", "from-flag"], {variable: "from-env"}, "from-flag"),
    ):
        started = stack(argv, env)
        assert started.settings.registry_topic == expected
        components = started.components()
        assert {c.name for c in components} >= {"tracker", "worker", "exporter"}
        for component in components:
            assert component.env is not None, component.name
            assert component.env[variable] == expected, component.name
        flag = "" if expected == REGISTRY_TOPIC.default else f" --registry-topic {expected}"
        assert f"(adpulse coupons{flag})" in started.banner()
