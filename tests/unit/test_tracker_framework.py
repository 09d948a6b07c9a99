"""The tracker's framework adapters: the start-up check bites, and the version bounds agree."""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.producer.message_accumulator import BatchBuilder

from tracker.framework import (
    WRITTEN_FOR,
    FrameworkMismatch,
    check_framework,
    installed_versions,
    live_connections,
)
from tracker.server import serve
from tracker.settings import TrackerSettings

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_installed_aiokafka_passes_the_check() -> None:
    check_framework()


def test_another_release_series_fails_naming_the_one_written_for() -> None:
    versions = {**installed_versions(), "aiokafka": "0.15.0"}
    with pytest.raises(FrameworkMismatch) as raised:
        check_framework(versions)
    assert "aiokafka 0.15.0 is installed" in str(raised.value)
    assert f"written for aiokafka {WRITTEN_FOR['aiokafka']}.x" in str(raised.value)
    assert raised.value.problems == ("aiokafka 0.15.0 is installed",)


def test_a_batch_builder_that_counts_elsewhere_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # A release that keeps the count somewhere else: setting _relative_offset changes nothing.
    monkeypatch.setattr(BatchBuilder, "record_count", lambda self: 0)
    with pytest.raises(FrameworkMismatch, match="no longer counts a batch's records"):
        check_framework()


def test_a_batch_builder_without_the_wrapped_builder_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = BatchBuilder.__init__

    def without_builder(self: BatchBuilder, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        del self._builder

    monkeypatch.setattr(BatchBuilder, "__init__", without_builder)
    with pytest.raises(FrameworkMismatch, match=r"has no BatchBuilder\._builder\.append"):
        check_framework()


def test_a_client_without_its_connection_table_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    original = AIOKafkaClient.__init__

    def without_connections(self: AIOKafkaClient, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        del self._conns

    monkeypatch.setattr(AIOKafkaClient, "__init__", without_connections)
    with pytest.raises(FrameworkMismatch, match=r"has no AIOKafkaClient\._conns"):
        check_framework()


async def test_the_tracker_does_not_start_on_a_mismatch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(BatchBuilder, "record_count", lambda self: 0)
    spool = tmp_path / "spool"
    # Already told to stop: a tracker that wrongly started would stop at once, not hang.
    stop = asyncio.Event()
    stop.set()
    assert await serve(TrackerSettings(port=0, spool_dir=spool), stop) == 1
    assert "tracker/framework.py was written for aiokafka 0.14.x" in caplog.text
    assert "no longer counts a batch's records" in caplog.text
    # Refused before it opened anything.
    assert not spool.exists()


async def test_a_producer_not_started_has_no_connections() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")
    try:
        assert live_connections(producer) == frozenset()
        assert live_connections(None) == frozenset()
    finally:
        await producer.stop()


def test_pyproject_bounds_aiokafka_to_the_series_written_for() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    for name, series in WRITTEN_FOR.items():
        major, minor = series.split(".")
        expected = f"{name}>={series},<{major}.{int(minor) + 1}"
        found = [d for d in dependencies if re.match(rf"{re.escape(name)}\b", d)]
        assert found == [expected]
