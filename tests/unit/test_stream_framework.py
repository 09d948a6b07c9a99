"""The worker's framework adapters: the start-up check and the version bounds agree."""

from __future__ import annotations

import asyncio
import random
import re
import struct
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, cast

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer import fetcher
from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c as crc32c_cython
from faust.types import TP
from prometheus_client import CollectorRegistry

from stream.batch_writer import BatchWriter
from stream.framework import (
    _GETALL,
    _GETONE,
    _UNPACK_RECORDS,
    REPLACED,
    WRITTEN_FOR,
    FetchedRecords,
    FrameworkMismatch,
    _batch_records,
    _getall,
    _getone,
    check_framework,
    hand_on_batch_records,
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
    monkeypatch.delattr(PartitionRecords, "_unpack_records")
    with pytest.raises(FrameworkMismatch, match=r"has no PartitionRecords\._unpack_records"):
        check_framework()


def test_the_worker_does_not_start_on_a_mismatch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(PartitionRecords, "_unpack_records")
    loop = asyncio.new_event_loop()
    try:
        assert run(WorkerSettings(port=0), loop) == 1
    finally:
        loop.close()
    assert "stream/framework.py was written for" in caplog.text
    assert "has no PartitionRecords._unpack_records" in caplog.text


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


# aiokafka's record hand-over, against the worker's (`hand_on_batch_records`).


class _Position:
    """A partition's consumer state as `FetchResult` reads and moves it."""

    paused = False

    def __init__(self, position: int) -> None:
        self.position = position

    def consumed_to(self, position: int) -> None:
        self.position = position


class _Assignment:
    active = True

    def __init__(self, state: _Position) -> None:
        self.state = state

    def state_value(self, tp: TopicPartition) -> _Position:
        return self.state


def _record_batches(layout: Sequence[tuple[int, Sequence[int]]]) -> bytes:
    """Record batches as a fetch answer holds them: (base offset, offsets within the batch),
    gaps standing for compacted records; each value is its offset's text."""
    answer = b""
    for base, deltas in layout:
        builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
        for delta in deltas:
            builder.append(delta, 0, None, str(base + delta).encode(), [])
        built = builder.build()
        struct.pack_into(">q", built, 0, base)  # the broker's offset; outside the CRC
        answer += bytes(built)
    return answer


# aiokafka's classes with its own methods and with the worker's (whichever are installed now).
_AiokafkaRecords: Final = type("Records", (PartitionRecords,), {"_unpack_records": _UNPACK_RECORDS})
_AiokafkaResult: Final = type("Result", (FetchResult,), {"getall": _GETALL, "getone": _GETONE})
_WorkerRecords: Final = type("Records", (PartitionRecords,), {"_unpack_records": _batch_records})
_WorkerResult: Final = type("Result", (FetchResult,), {"getall": _getall, "getone": _getone})


def _drained(
    result_type: type[Any],
    records_type: type[Any],
    answer: bytes,
    fetch_offset: int,
    takes: Sequence[int | str | None],
    answer_type: type[Any] = FetchedRecords,
) -> list[tuple[list[tuple[int, bytes]], int, bool]]:
    """Per `getall(take)` (`getone()` for "one") until none are left (aiokafka then drops the
    result): the (offset, value) of each record taken, the partition's position after it,
    whether records are left. The answer's records as the worker's fetcher makes them
    (`FetchedRecords`) unless `answer_type` says otherwise."""
    tp = TopicPartition("adpulse.events", 0)
    state = _Position(fetch_offset)
    records = records_type(tp, answer_type(answer), [], fetch_offset, None, None, True, 0)
    result = result_type(tp, assignment=_Assignment(state), partition_records=records, backoff=0)
    steps = []
    for take in takes:
        taken = [one] if take == "one" and (one := result.getone()) else []
        if take != "one":
            taken = result.getall(take)
        steps.append(([(r.offset, r.value) for r in taken], state.position, result.has_more()))
        if not result.has_more():
            break
    return steps


LAYOUTS: Final = {
    "one batch": [(0, range(10))],
    "three batches, one compacted": [(0, range(10)), (10, [0, 1, 2, 5, 6]), (17, range(8))],
    "compacted at a batch's end": [(5, [0, 1, 2]), (10, [0, 3])],
}


@pytest.mark.parametrize("answer_type", [FetchedRecords, MemoryRecords])
@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("seed", range(20))
def test_the_worker_takes_fetched_records_as_aiokafka_does(
    layout: Sequence[tuple[int, Sequence[int]]], seed: int, answer_type: type[Any]
) -> None:
    """Same records, same position after each take, whatever the takes and wherever in the
    first batch the fetch started (the broker answers from the batch holding the offset
    asked for: the records before it are skipped)."""
    draw = random.Random(seed)
    answer = _record_batches(layout)
    offsets = [base + delta for base, deltas in layout for delta in deltas]
    base, deltas = layout[0]
    fetch_offset = draw.choice([base, base + draw.choice(deltas)])
    takes = [draw.choice([None, 1, 2, 3, 7, 100, "one", "one"]) for _ in range(30)]
    worker = _drained(_WorkerResult, _WorkerRecords, answer, fetch_offset, takes, answer_type)
    aiokafka = _drained(
        _AiokafkaResult, _AiokafkaRecords, answer, fetch_offset, takes, MemoryRecords
    )
    assert worker == aiokafka
    taken = [offset for step in worker for offset, _ in step[0]]
    left = [offset for offset in offsets if offset >= fetch_offset]
    assert taken == left[: len(taken)]
    assert len(taken) == len(left) or worker[-1][2]  # records left only if not all taken


CORRUPTIONS: Final = {
    "a record's value": (2, -3),
    "the last byte": (2, -1),
    "the first byte under the CRC (attributes)": (0, 21),
    "the CRC itself": (0, 17),
    "a middle batch's record count": (1, 57),
}
"""Where a bit is flipped: (which of three record batches, at which byte of it)."""


def _batch_bounds(answer: bytes) -> list[tuple[int, int]]:
    bounds, start = [], 0
    while start < len(answer):
        end = start + 12 + struct.unpack_from(">i", answer, start + 8)[0]
        bounds.append((start, end))
        start = end
    return bounds


@pytest.mark.parametrize("answer_type", [FetchedRecords, MemoryRecords])
@pytest.mark.parametrize("place", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
@pytest.mark.parametrize("flip", [0x01, 0x80, 0xFF])
def test_a_corrupt_record_batch_is_refused_as_aiokafka_refuses_it(
    place: tuple[int, int], flip: int, answer_type: type[Any]
) -> None:
    answer = bytearray(_record_batches([(0, range(5)), (5, range(3)), (8, range(4))]))
    batch, at = place
    start, end = _batch_bounds(bytes(answer))[batch]
    answer[(start if at >= 0 else end) + at] ^= flip
    for result_type, records_type, answers in (
        (_WorkerResult, _WorkerRecords, answer_type),
        (_AiokafkaResult, _AiokafkaRecords, MemoryRecords),
    ):
        with pytest.raises(CorruptRecordException, match="Invalid CRC"):
            _drained(result_type, records_type, bytes(answer), 0, [None], answers)


def test_the_worker_checks_crcs_with_hardware_crc32c() -> None:
    """google-crc32c's C extension, not its pure-Python fallback (`hand_on_batch_records`
    leaves the fetcher's records to aiokafka's `validate_crc` then)."""
    import google_crc32c

    assert google_crc32c.implementation == "c"
    data = random.Random(0).randbytes(4096)
    assert google_crc32c.value(data) == crc32c_cython(data)


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """What `hand_on_batch_records` replaces, put back after the test."""
    for owner, name in REPLACED:
        monkeypatch.setattr(owner, name, getattr(owner, name))
    return monkeypatch


def test_the_worker_installs_its_hand_over(restored: pytest.MonkeyPatch) -> None:
    hand_on_batch_records()
    assert PartitionRecords._unpack_records is _batch_records
    assert FetchResult.getall is _getall
    assert FetchResult.getone is _getone
    assert fetcher.MemoryRecords is FetchedRecords


def test_without_google_crc32c_s_c_extension_aiokafka_checks_the_crcs(
    restored: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import google_crc32c

    restored.setattr(google_crc32c, "implementation", "python")
    hand_on_batch_records()
    assert fetcher.MemoryRecords is MemoryRecords
    assert PartitionRecords._unpack_records is _batch_records
    assert "no C extension" in caplog.text
