"""`adpulse dev` as a new user meets it: wrong settings, a second start, a restart, the banner.

Every test runs `adpulse dev` as a subprocess, with the real Tansu broker and redis-server.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_dev_stack import ROOT, DevRun, assert_all_gone, metric, start_dev
from tests.kafka_helpers import wait_until_sync
from tests.metrics import scrape
from tests.services import free_port

API_TOKEN = "first-hour-token"
RUNNING = "adpulse dev is running"


def wait_running(run: DevRun) -> None:
    wait_until_sync(
        lambda: RUNNING in run.text() or run.process.poll() is not None,
        timeout=120,
        interval=0.1,
        message="the dev stack's banner",
    )
    assert run.process.poll() is None, run.text()


def banner_line(run: DevRun, label: str) -> str:
    for line in run.text().splitlines():
        if line.strip().startswith(label + " "):
            return line.strip()[len(label) :].strip()
    raise AssertionError(f"no {label!r} line in the banner:\n{run.text()}")


def adpulse(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adpulse", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_refused_quickly(run: DevRun, *named: str) -> None:
    started = time.monotonic()
    try:
        code = run.process.wait(15)
    except subprocess.TimeoutExpired:
        run.stop()
        pytest.fail(f"still running after 15 s:\n{run.text()}")
    assert time.monotonic() - started < 15
    assert code != 0
    text = run.text()
    for name in named:
        assert name in text, text
    assert "Traceback" not in text, text
    assert_all_gone(run)


# Errors that name the real cause


def test_a_broker_that_does_not_answer_is_named_within_seconds(tmp_path: Path) -> None:
    run = start_dev(tmp_path, env={"ADPULSE_KAFKA": "127.0.0.1:1"})
    assert_refused_quickly(run, "127.0.0.1:1", "ADPULSE_KAFKA", "does not answer")


def test_a_redis_that_does_not_answer_is_named_within_seconds(tmp_path: Path) -> None:
    run = start_dev(tmp_path, "--simulate", env={"ADPULSE_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert_refused_quickly(run, "redis://127.0.0.1:1/0", "ADPULSE_REDIS_URL", "does not answer")


def test_a_stop_while_starting_stops_at_once(tmp_path: Path) -> None:
    # A broker that accepts connections and never answers: the stack waits for it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        run = start_dev(tmp_path, env={"ADPULSE_KAFKA": address})
        wait_until_sync(lambda: "starting the adpulse dev stack" in run.text(), timeout=30)
        run.process.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = run.process.wait(15)
    assert time.monotonic() - started < 3, run.text()
    assert code == 0, run.text()
    assert "Traceback" not in run.text()
    assert_all_gone(run)


# One stack per data directory, and its state kept


def test_a_second_stack_refuses_and_a_restart_keeps_counters_and_coupons(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "dev"
    first = start_dev(tmp_path, data_dir=data_dir, output=tmp_path / "first.out")
    try:
        wait_running(first)
        tracker = f"http://127.0.0.1:{first.ports['tracker']}"
        post_click(tracker, "email")
        added = adpulse("coupons", "add", "KEEP5", "affiliate", "--redis-url", first.redis_url,
                        "--kafka", f"127.0.0.1:{first.ports['kafka']}")  # fmt: skip
        assert added.returncode == 0, added.stderr
        wait_until_sync(
            lambda: metric(scrape(first.exporter), "adpulse_events_total", channel="email",
                           type="click") == 1,
            timeout=30, interval=0.2, message="the first run's click counted",
        )  # fmt: skip
        redis_files = sorted(p.name for p in (data_dir / "redis").rglob("*") if p.is_file())
        assert any(name.endswith(".aof") for name in redis_files), redis_files

        second = start_dev(tmp_path, data_dir=data_dir, output=tmp_path / "second.out")
        code = second.process.wait(15)
        assert code != 0
        assert f"pid {first.process.pid}" in second.text(), second.text()
        assert "Traceback" not in second.text()
        assert first.process.poll() is None, first.text()
        assert sorted(p.name for p in (data_dir / "redis").rglob("*") if p.is_file()) == (
            redis_files
        )
        assert metric(scrape(first.exporter), "adpulse_events_total", channel="email",
                      type="click") == 1  # fmt: skip
    finally:
        first.process.send_signal(signal.SIGINT)  # Ctrl-C
        assert first.process.wait(60) == 0, first.text()
    assert_all_gone(first)

    again = start_dev(tmp_path, data_dir=data_dir, output=tmp_path / "again.out")
    try:
        wait_running(again)
        samples = scrape(again.exporter)
        assert metric(samples, "adpulse_events_total", channel="email", type="click") == 1
        listed = adpulse("coupons", "list", "--redis-url", again.redis_url)
        assert re.search(r"^KEEP5\s+affiliate$", listed.stdout, flags=re.MULTILINE), listed
    finally:
        assert again.stop() == 0, again.text()

    fresh = start_dev(tmp_path, "--reset", data_dir=data_dir, output=tmp_path / "fresh.out")
    try:
        wait_running(fresh)
        assert "--reset: deleted the Redis data and the spool" in fresh.text()
        samples = scrape(fresh.exporter)
        assert metric(samples, "adpulse_events_total", channel="email", type="click") == 0
        listed = adpulse("coupons", "list", "--redis-url", fresh.redis_url)
        assert "KEEP5" not in listed.stdout
        assert "SUMMER10" in listed.stdout  # the sample coupon, registered again
    finally:
        assert fresh.stop() == 0, fresh.text()


def post_click(tracker: str, channel: str) -> None:
    import urllib.request

    request = urllib.request.Request(
        f"{tracker}/p.gif?type=click&channel={channel}", headers={"User-Agent": "Mozilla/5.0"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


# The banner


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    tmp_path = tmp_path_factory.mktemp("banner")
    run = start_dev(tmp_path, env={"ADPULSE_API_TOKEN": API_TOKEN})
    try:
        wait_running(run)
        yield run
    finally:
        assert run.stop() == 0, run.text()
    assert_all_gone(run)


def test_the_banner_s_report_command_prints_the_table(stack: DevRun) -> None:
    command = banner_line(stack, "report")
    assert command.startswith(".venv/bin/adpulse report"), command
    # Exactly as printed, from the project directory, in a shell, in a terminal (a pty: the
    # live table draws itself only on one).
    terminal, child_end = pty.openpty()
    report = subprocess.Popen(
        command, shell=True, cwd=ROOT, stdin=child_end, stdout=child_end, stderr=child_end,
        start_new_session=True,
    )  # fmt: skip
    os.close(child_end)
    seen = bytearray()

    def drawn() -> bool:
        while select.select([terminal], [], [], 0)[0]:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # the report exited and closed its end
                return True
            if not chunk:
                return True
            seen.extend(chunk)
        return b"Channel" in seen and b"total" in seen

    try:
        wait_until_sync(drawn, timeout=30, interval=0.1, message="the report's table")
    finally:
        if report.poll() is None:
            os.killpg(report.pid, signal.SIGINT)
        code = report.wait(30)
        os.close(terminal)
    text = seen.decode(errors="replace")
    assert "Channel" in text, text
    assert "total" in text, text
    assert "Traceback" not in text, text
    # Ctrl-C: the report stops cleanly (0); the shell around it may die of the signal itself.
    assert code in (0, -signal.SIGINT), text


def test_the_banner_names_the_redirect_hosts_and_the_sample_data(stack: DevRun) -> None:
    assert "shop.example.com" in banner_line(stack, "redirects")
    sample = banner_line(stack, "sample data")
    assert "EUR=" in sample
    assert "SUMMER10" in sample


def test_the_tracker_root_is_a_page_for_people(stack: DevRun) -> None:
    import urllib.request

    tracker = f"http://127.0.0.1:{stack.ports['tracker']}/"
    with urllib.request.urlopen(tracker, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        page = response.read().decode()
    for link in ('href="/openapi.json"', 'href="/metrics"'):
        assert link in page
    assert "shop.example.com" in page


def test_refusals_and_bot_clicks_are_printed_in_the_dev_terminal(stack: DevRun) -> None:
    import urllib.error
    import urllib.request

    tracker = f"http://127.0.0.1:{stack.ports['tracker']}"
    request = urllib.request.Request(
        f"{tracker}/v1/events",
        data=b'{"type":"conversion","order_id":"R-1","value":"5","currency":"JPY"}',
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code == 400
    bot = urllib.request.Request(
        f"{tracker}/p.gif?type=click&channel=email", headers={"User-Agent": "Googlebot/2.1"}
    )
    with urllib.request.urlopen(bot, timeout=10) as response:
        assert response.status == 200

    def printed() -> bool:
        live = stack.text().split(RUNNING)[-1]
        return "tracker: refused events 400: currency" in live and "tracker: bot click" in live

    wait_until_sync(printed, timeout=10, interval=0.1, message="the refusal and bot click printed")


def test_a_tracker_alone_without_a_broker_warns_at_once(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "tracker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADPULSE_")}
    with log.open("wb") as sink:
        tracker = subprocess.Popen(
            [sys.executable, "-m", "adpulse", "tracker", "--kafka", "127.0.0.1:1",
             "--port", str(port), "--spool-dir", str(tmp_path / "spool")],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        wait_until_sync(
            lambda: "(ADPULSE_KAFKA) does not answer" in log.read_text(errors="replace"),
            timeout=15,
            interval=0.1,
            message="the tracker's warning",
        )
    finally:
        tracker.send_signal(signal.SIGTERM)
        code = tracker.wait(30)
    text = log.read_text(errors="replace")
    assert "WARNING" in text.split("(ADPULSE_KAFKA) does not answer")[0].splitlines()[-1]
    assert "127.0.0.1:1" in text
    assert code == 0, text
