"""The worker's framework adapters: the start-up check and the version bounds agree."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import cast

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import PartitionRecords
from faust.types import TP
from prometheus_client import CollectorRegistry

from stream.batch_writer import BatchWriter
from stream.framework import (
    WRITTEN_FOR,
    FrameworkMismatch,
    check_framework,
    installed_versions,
    note_streaming,
    set_fetch_wait,
)
from stream.store import KpiStore
from stream.worker import build_app, run
from stream.worker_metrics import WorkerMetrics
from stream.worker_settings import WorkerSettings

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_installed_libraries_pass_the_check() -> None:
    check_framework()


def test_another_release_series_fails_naming_the_one_written_for() -> None:
    versions = {**installed_versions(), "faust-streaming": "0.16.0"}
    with pytest.raises(FrameworkMismatch) as raised:
        check_framework(versions)
    message = str(raised.value)
    assert "faust-streaming 0.16.0 is installed" in message
    assert f"faust-streaming {WRITTEN_FOR['faust-streaming']}.x" in message
    assert f"aiokafka {WRITTEN_FOR['aiokafka']}.x" in message
    assert raised.value.problems == ("faust-streaming 0.16.0 is installed",)


def test_a_missing_private_method_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(PartitionRecords, "_consumer_record")
    with pytest.raises(FrameworkMismatch, match=r"has no PartitionRecords\._consumer_record"):
        check_framework()


def test_the_worker_does_not_start_on_a_mismatch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(PartitionRecords, "_consumer_record")
    loop = asyncio.new_event_loop()
    try:
        assert run(WorkerSettings(port=0), loop) == 1
    finally:
        loop.close()
    assert "stream/framework.py was written for" in caplog.text
    assert "has no PartitionRecords._consumer_record" in caplog.text


def test_a_consumer_without_the_fetch_wait_attribute_is_refused() -> None:
    with pytest.raises(FrameworkMismatch, match="_fetch_max_wait_ms"):
        set_fetch_wait(object(), 0.1)


def test_pyproject_bounds_each_library_to_the_series_written_for() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    for name, series in WRITTEN_FOR.items():
        major, minor = series.split(".")
        expected = f"{name}>={series},<{major}.{int(minor) + 1}"
        found = [d for d in dependencies if re.match(rf"{re.escape(name)}\b", d)]
        assert found == [expected]


async def test_fetched_partitions_count_as_streaming_for_fausts_livelock_check(
    tmp_path: Path,
) -> None:
    # faust's check looks the time up by its own TP; the worker fetches by aiokafka's
    # TopicPartition. Without the note, a worker behind for 5 minutes logged "Stream has not
    # started processing" for every partition every few seconds while it was counting.
    writer = BatchWriter(cast(KpiStore, None), WorkerMetrics(CollectorRegistry()))  # not used
    app = build_app(WorkerSettings(), tmp_path, writer)
    monitor = app.monitor
    assert monitor.stream_inbound_time.get(TP("events", 3)) is None
    before = time.monotonic()
    note_streaming(monitor, [TopicPartition("events", 3), TopicPartition("events", 5)])
    assert monitor.stream_inbound_time.get(TP("events", 3), 0.0) >= before
    assert monitor.stream_inbound_time.get(TP("events", 5), 0.0) >= before
    assert monitor.stream_inbound_time.get(TP("events", 4)) is None
    note_streaming(None, [TopicPartition("events", 3)])  # no monitor: nothing to tell


def test_a_settled_heap_keeps_startup_frozen_and_still_collects_later_cycles() -> None:
    # In a process of its own: freezing would keep this test process's heap from the collector.
    code = """
import gc, weakref
from stream.framework import GC_YOUNG_THRESHOLD, settle_heap

class Node:
    pass

startup = Node()
startup.itself = startup
settle_heap()
assert gc.get_freeze_count() > 0, "startup's objects are not frozen"
assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD, gc.get_threshold()
later = Node()
later.itself = later
gone = weakref.ref(later)
del later
held = [[] for _ in range(2 * GC_YOUNG_THRESHOLD)]  # tracked objects: a young collection
assert gone() is None, "a cycle made after settling was not collected"
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
