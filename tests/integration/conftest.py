"""Fixtures for tests that run adpulse's own processes against the real services."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import RedisDatabase
from tests.kafka_helpers import wait_until_sync
from tests.processes import Exporter, Tracker, exiting_cleanly
from tests.services import KafkaService

API_TOKEN = "test-token-6f1e"
REDIRECT_HOSTS = "shop.example.com,*.example.org"
TRACKER_ENV = {
    "ADPULSE_API_TOKEN": API_TOKEN,
    "ADPULSE_REDIRECT_HOSTS": REDIRECT_HOSTS,
    "ADPULSE_FX_RATES": "EUR=1.10",
    # Short, so that an outage is noticed and spooled quickly in the tests.
    "ADPULSE_KAFKA_TIMEOUT": "2",
}


@pytest.fixture
def registry_env(kafka: KafkaService, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`adpulse coupons` and `adpulse numbers` run by the test write a registry topic of its own
    on the real broker (`stream.registry`): its name."""
    name = f"adpulse.registry.t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ADPULSE_KAFKA", kafka.bootstrap)
    monkeypatch.setenv("ADPULSE_REGISTRY_TOPIC", name)
    yield name
    kafka.forget_topic(name)


def readiness(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
            document: dict[str, object] = json.load(response)
    except urllib.error.HTTPError as error:
        document = json.load(error)
    return document


def serving(process: Tracker) -> Iterator[Tracker]:
    """For a fixture: `process` once it reached the broker; terminated after, and it must have
    exited 0 (a tracker that failed to flush or crashed fails the test)."""
    try:
        wait_until_sync(
            lambda: readiness(process.url).get("broker") == "up",
            timeout=30,
            message="tracker connected to the broker",
        )
        yield process
    finally:
        code = process.terminate()
    assert code == 0, process.log()


def serve_tracker(
    kafka: KafkaService,
    topic: str,
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    extra: list[str] | None = None,
) -> Iterator[Tracker]:
    """For a fixture: a tracker producing to `topic`, with TRACKER_ENV and `env` over it, its
    spool and log in `tmp_path`, `extra` flags; served as `serving` serves it."""
    process = Tracker(
        kafka=kafka.bootstrap,
        topic=topic,
        spool_dir=tmp_path / "spool",
        log=tmp_path / "tracker.log",
        env={**TRACKER_ENV, **(env or {})},
        extra=extra,
    )
    yield from serving(process)


@pytest.fixture
def tracker(kafka: KafkaService, topic: str, tmp_path: Path) -> Iterator[Tracker]:
    """A tracker producing to `topic`, connected to the broker; stopped (exit 0) afterwards."""
    yield from serve_tracker(kafka, topic, tmp_path)


@pytest.fixture
def exporter(redis_db: RedisDatabase, tmp_path: Path) -> Iterator[Exporter]:
    """An exporter reading the test's Redis database; stopped (exit 0) afterwards."""
    yield from exiting_cleanly(Exporter(redis_url=redis_db.url, log=tmp_path / "exporter.log"))
