"""`adpulse dev` replaces its embedded broker when it holds too much, losing nothing.

The limit is set below an empty broker's own size, so the stack replaces the broker at every
check while traffic comes: each replacement starts a second broker and worker, moves the
tracker there without pausing it, and retires the old pair once its worker has counted all.
The counters must still equal what was accepted, and the tracker must answer throughout.
"""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from pathlib import Path

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from adpulse.cli.broker_recycling import fetch_seconds, topic_layout, undrained, wait_joined
from adpulse.cli.devstack import SAMPLE_COUPONS
from stream.registry import coupon_entry, publish, read_state
from tests.integration.test_dev_stack import (
    SEED,
    DevRun,
    assert_all_gone,
    counts_match,
    metric,
    start_dev,
)
from tests.kafka_helpers import wait_until_sync
from tests.metrics import scrape
from tests.services import KafkaService, free_port

REPLACED = "replaced by an empty one"
REGISTRY = "adpulse.registry"
# A tracker paused for a replacement answered 2-5 s late; one that is not answers at once.
MAX_LATENCY = 0.5


def brokers(run: DevRun) -> set[int]:
    """Process ids of the stack's embedded brokers now."""
    found = set()
    for child in psutil.Process(run.process.pid).children():
        try:
            if "tansu" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            # Gone between the listing and the look (a retired broker, a short-lived child).
            continue
    return found


class SteadyClient(threading.Thread):
    """Pixels one after another on a keep-alive connection, each answer's latency kept."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.answers: list[tuple[float, int]] = []

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"User-Agent": "Mozilla/5.0"}
        sent = 0
        while not self.stop.is_set():
            began = time.monotonic()
            connection.request(
                "GET", f"/p.gif?type=click&channel=email&campaign=swap{sent}", headers=headers
            )
            response = connection.getresponse()
            response.read()
            self.answers.append((time.monotonic() - began, response.status))
            sent += 1
            self.stop.wait(0.01)  # pacing: about 100 pixels a second
        connection.close()

    def accepted(self) -> int:
        return sum(1 for _, status in self.answers if 200 <= status < 300)


def test_a_replacement_under_steady_traffic_never_pauses_the_tracker(tmp_path: Path) -> None:
    run = start_dev(tmp_path, "--broker-max-memory", "1")
    client = SteadyClient(run.ports["tracker"])
    seen: set[int] = set()
    try:
        wait_until_sync(
            lambda: "adpulse dev is running" in run.text() or run.process.poll() is not None,
            timeout=90,
            interval=0.2,
            message="the dev stack's start",
        )
        assert run.process.poll() is None, run.text()
        first = brokers(run)
        assert len(first) == 1, first
        seen |= first
        client.start()

        def replaced() -> bool:
            seen.update(brokers(run))
            return REPLACED in run.text()

        wait_until_sync(replaced, timeout=90, interval=0.2, message="a broker replacement")
        # Traffic goes on past the replacement, to the new broker.
        answered = len(client.answers)
        wait_until_sync(
            lambda: len(client.answers) > answered + 100, timeout=30, message="traffic after it"
        )
        client.stop.set()
        client.join(15)
        assert not client.is_alive()
        # The old broker is gone; the stack runs one broker again, or is moving to a next one.
        assert not first & brokers(run), run.text()
        assert len(seen) >= 2, seen
        statuses = {status for _, status in client.answers}
        assert statuses == {200}, statuses
        slowest = max(latency for latency, _ in client.answers)
        assert slowest < MAX_LATENCY, f"an answer took {slowest:.2f} s\n{run.text()}"
        # The worker's /metrics stays on --worker-port across replacements (Prometheus's target).
        worker = scrape(f"http://127.0.0.1:{run.ports['worker']}/metrics")
        assert "adpulse_worker_events_processed_total" in {name for name, _ in worker}, worker
        accepted = client.accepted()
        exporter = f"http://127.0.0.1:{run.ports['exporter']}/metrics"
        wait_until_sync(
            lambda: (
                metric(scrape(exporter), "adpulse_events_total", channel="email", type="click")
                == accepted
            ),
            timeout=60,
            interval=0.5,
            message=f"the exporter counting each of the {accepted} accepted pixels once",
        )
        assert_registry_carried(run)
    finally:
        client.stop.set()
        code = run.stop()
    assert code == 0, run.text()
    assert_all_gone(run)
    assert not any(psutil.pid_exists(pid) for pid in seen), seen


def assert_registry_carried(run: DevRun) -> None:
    """The registry topic (what `adpulse rebuild` restores coupons from) survives replacements:
    the stack's sample coupon, then a coupon registered and a removal made on a replacement
    broker, are on the broker after the next replacement."""
    bootstrap = run.data_dir / "kafka-bootstrap"
    state = asyncio.run(read_state(bootstrap.read_text().strip(), REGISTRY))
    coupons = {entry.key: entry.value for entry in state.of_kind("coupon")}
    assert coupons == dict(SAMPLE_COUPONS), coupons
    # Right after a replacement ended: the next one begins seconds later.
    done = run.text().count(REPLACED)
    wait_until_sync(
        lambda: run.text().count(REPLACED) > done, timeout=90, interval=0.1, message="a next one"
    )
    code, _channel = SAMPLE_COUPONS[0]
    changes = [coupon_entry("SWAP10", "affiliate"), coupon_entry(code, None)]
    asyncio.run(publish(bootstrap.read_text().strip(), REGISTRY, changes))
    done = run.text().count(REPLACED)
    wait_until_sync(
        lambda: run.text().count(REPLACED) > done, timeout=90, interval=0.2, message="one more"
    )
    state = asyncio.run(read_state(bootstrap.read_text().strip(), REGISTRY))
    coupons = {entry.key: entry.value for entry in state.of_kind("coupon")}
    assert coupons == {"SWAP10": "affiliate"}, coupons
    assert [entry.key for entry in state.removed_of_kind("coupon")] == [code], state.removed


def test_broker_replaced_under_traffic_and_counts_stay_exact(tmp_path: Path) -> None:
    run = start_dev(
        tmp_path, "--simulate", "--seed", SEED, "--duration", "15", "--rate", "40",
        "--broker-max-memory", "1",
    )  # fmt: skip
    try:
        wait_until_sync(
            lambda: "simulator finished" in run.text() or run.process.poll() is not None,
            timeout=150,
            interval=0.2,
            message="the simulator's run",
        )
        assert run.process.poll() is None, run.text()
        assert REPLACED in run.text(), run.text()
        report = run.simulator_report()
        assert report["errors"] == 0, report
        wait_until_sync(
            lambda: counts_match(run, report),
            timeout=60,
            interval=0.5,
            message="exporter counts equal to the simulator's report across broker replacements",
        )
        # The new broker has the tracker's topics with their partitions, not auto-created ones.
        current = (run.data_dir / "kafka-bootstrap").read_text().strip()
        layout = asyncio.run(topic_layout(current))
        partitions = {topic.name: topic.partitions for topic in layout}
        assert partitions.get("adpulse.events", 0) > 1, partitions
    finally:
        code = run.stop()
    assert code == 0, run.text()
    assert_all_gone(run)


async def test_fetch_time_of_the_newest_records_and_what_is_left_to_count(
    kafka: KafkaService, topic: str
) -> None:
    assert await fetch_seconds(kafka.bootstrap, topic) is None  # nothing to time yet
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, b"{}", partition=n % 2) for n in range(50)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    took = await fetch_seconds(kafka.bootstrap, topic)
    assert took is not None
    assert took < 2.0
    group = f"recycler-{topic}"
    assert await undrained(kafka.bootstrap, topic, group) == 50


async def test_the_join_wait_sees_its_own_member_only_and_gives_up_on_a_gone_worker(
    kafka: KafkaService, topic: str
) -> None:
    group = f"join-{topic}"
    member = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap, group_id=group, client_id="other-worker"
    )
    await member.start()
    try:
        assert await wait_joined(kafka.bootstrap, group, 60.0, client_id="other-worker")
        # The group is stable with a member, but not the worker waited for.
        began = time.monotonic()
        assert not await wait_joined(kafka.bootstrap, group, 1.0, client_id="this-worker")
        assert time.monotonic() - began >= 1.0
        # A worker that exited ends the wait at once, not at the deadline.
        began = time.monotonic()
        assert not await wait_joined(
            kafka.bootstrap, group, 60.0, client_id="this-worker", gone=lambda: True
        )
        assert time.monotonic() - began < 10.0
    finally:
        await member.stop()
    # No broker there: retried until the deadline, then the Kafka error.
    with pytest.raises(KafkaError):
        await wait_joined(f"127.0.0.1:{free_port()}", group, 1.0)


def test_a_stop_in_the_middle_of_a_replacement_is_a_clean_stop(tmp_path: Path) -> None:
    # Two brokers run while the new worker joins its group: a SIGTERM then stops both, exit 0.
    run = start_dev(tmp_path, "--broker-max-memory", "1")
    seen: set[int] = set()
    try:

        def two_brokers() -> bool:
            now = brokers(run)
            seen.update(now)
            return len(now) == 2 or run.process.poll() is not None

        wait_until_sync(two_brokers, timeout=120, interval=0.1, message="a second broker")
        assert run.process.poll() is None, run.text()
    finally:
        code = run.stop()
    assert code == 0, run.text()
    assert REPLACED not in run.text()
    assert_all_gone(run)
    assert not any(psutil.pid_exists(pid) for pid in seen), seen
