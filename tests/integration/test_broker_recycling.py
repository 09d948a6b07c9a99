"""`adpulse dev` replaces its embedded broker when it holds too much, losing nothing.

The limit is set below an empty broker's own size, so the stack replaces the broker at every
check while the simulator sends: each replacement pauses the tracker, waits for the worker to
count everything, restarts broker and worker. The counters must still equal what was sent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import AIOKafkaProducer

from adpulse.cli.broker_recycling import fetch_seconds, topic_layout, undrained
from tests.integration.test_dev_stack import (
    SEED,
    assert_all_gone,
    counts_match,
    start_dev,
)
from tests.kafka_helpers import wait_until_sync
from tests.services import KafkaService

REPLACED = "replaced by an empty one"


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
        layout = asyncio.run(topic_layout(f"127.0.0.1:{run.ports['kafka']}"))
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
