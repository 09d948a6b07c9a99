"""`adpulse dev` replaces its embedded broker when it holds too much, losing nothing.

The limit is set below an empty broker's own size, so the stack replaces the broker at every
check while the simulator sends: each replacement pauses the tracker, waits for the worker to
count everything, restarts broker and worker. The counters must still equal what was sent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from adpulse.broker_recycling import topic_layout
from tests.integration.test_dev_stack import (
    SEED,
    assert_all_gone,
    counts_match,
    start_dev,
)
from tests.kafka_helpers import wait_until_sync

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
