"""Steps the `adpulse rebuild` tests share, on one redis-server or a Redis Cluster: the CLI in a
subprocess, coupons imported through it, a worker counting what is produced, the rebuild with
its switch, and the worker started again on the rebuilt key space."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from adpulse.core.event import Event
from tests.integration.test_worker_pipeline import committed_offsets, produce
from tests.kafka_helpers import wait_until
from tests.processes import Worker
from tests.services import KafkaService


def adpulse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adpulse", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def import_coupons(
    coupons: Mapping[str, str], redis_url: str, kafka_flags: list[str], tmp_path: Path
) -> None:
    """`coupons` through `adpulse coupons import` (so into the registry topic too)."""
    coupons_csv = tmp_path / "coupons.csv"
    coupons_csv.write_text("code,channel\n" + "".join(f"{c},{ch}\n" for c, ch in coupons.items()))
    imported = adpulse("coupons", "import", str(coupons_csv), "--redis-url", redis_url,
                       *kafka_flags)  # fmt: skip
    assert imported.returncode == 0, imported.stderr


async def count_with_a_worker(
    kafka: KafkaService,
    topic: str,
    redis_url: str,
    group: str,
    log: Path,
    batches: Sequence[Sequence[Event]],
) -> None:
    """A worker of `group` counts each batch, produced in turn once it committed the one before;
    then it stops, and must exit 0."""
    worker = Worker(kafka=kafka.bootstrap, topic=topic, redis_url=redis_url, log=log, group=group)
    try:
        for produced in batches:
            ends = await produce(kafka.bootstrap, topic, produced)

            async def committed_all(ends: list[int] = ends) -> bool:
                return await committed_offsets(kafka.bootstrap, group, topic) == ends

            await wait_until(committed_all, timeout=30, interval=0.2, message="worker caught up")
    finally:
        assert worker.terminate() == 0, worker.log()


def rebuild(
    redis_url: str, topic: str, group: str, kafka_flags: list[str], records: int
) -> subprocess.CompletedProcess[str]:
    """`adpulse rebuild` of `topic` as `group` read it: it must succeed, replay `records`
    records and switch the readers from the default key space."""
    rebuilt = adpulse("rebuild", "--redis-url", redis_url, "--topic", topic, "--group", group,
                      *kafka_flags)  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "readers switched from 'adpulse:'" in rebuilt.stdout, rebuilt.stdout
    assert f"{records} records" in rebuilt.stdout, rebuilt.stdout
    return rebuilt


@asynccontextmanager
async def worker_counting_again(
    kafka: KafkaService, topic: str, redis_url: str, group: str, log: Path, prefix: str
) -> AsyncIterator[Worker]:
    """The worker of `group` started again after the rebuild: once it says it counts into the
    key space `prefix`; it must exit 0 after."""
    worker = Worker(kafka=kafka.bootstrap, topic=topic, redis_url=redis_url, log=log, group=group)
    try:
        await wait_until(
            lambda: f"counting into the key space '{prefix}'" in worker.log(),
            timeout=15,
            interval=0.1,
            message="the worker read the live key space",
        )
        yield worker
    finally:
        assert worker.terminate() == 0, worker.log()
