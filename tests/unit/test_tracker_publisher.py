"""The publisher's bookkeeping between the write-ahead log and the broker, without a broker.

Each test drives the real EventPublisher and WriteAheadLog on a temporary directory; the broker
is an address nothing listens on, so nothing is produced. An fsync that fails is injected by
replacing `os.fsync` (there is no real device whose fsync fails on demand).
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.services import free_port
from tracker.publisher import EventPublisher, PublisherSettings, PublisherState, TopicSpec
from tracker.spool import SpoolRecord
from tracker.wal import Durability, WriteAheadLog

EVENTS = "adpulse.events"


def record(number: int, size: int = 20) -> SpoolRecord:
    return SpoolRecord(EVENTS, f"k{number}".encode(), bytes([number % 256]) * size)


def publisher(
    directory: Path,
    durability: Durability = Durability.PROCESS,
    *,
    segment_bytes: int = 4 << 20,
    max_pending_bytes: int = 64 << 20,
) -> EventPublisher:
    wal = WriteAheadLog.open(
        directory, max_bytes=1 << 30, segment_bytes=segment_bytes, durability=durability
    )
    settings = PublisherSettings(
        f"127.0.0.1:{free_port()}",
        (TopicSpec(EVENTS, 1),),
        max_pending_bytes=max_pending_bytes,
        probe_interval=0.3,
    )
    built = EventPublisher(settings, wal)
    built.schedule_commit = lambda: None
    if durability is Durability.MACHINE:
        built._sync_thread = ThreadPoolExecutor(1, thread_name_prefix="test-fsync")
    return built


def unsent(events: EventPublisher) -> list[bytes]:
    """The keys replay would send: from the acknowledged position to where sending may go."""
    wal = events.spool
    records, _ = wal.read(wal.segments(), wal.acknowledged, wal.sendable_end, 1000)
    return [key for _, key, _ in records]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_an_overflow_during_the_linger_acknowledges_nothing(tmp_path: Path) -> None:
    """The memory queue overflows while the flush task lingers: the records are read from the
    log instead, and nothing is acknowledged for them (it was, once: silent loss)."""

    async def run() -> EventPublisher:
        events = publisher(tmp_path, max_pending_bytes=4096)
        events.state = PublisherState.UP
        assert events.submit_one(record(1))
        assert events.commit() is True
        step = asyncio.create_task(events._step())
        await asyncio.sleep(0)  # the step lingers on one pending record
        assert events.submit_one(record(2, size=5000))
        assert events.commit() is True  # over max_pending_bytes: the log takes over
        await step
        return events

    events = asyncio.run(run())
    assert events.state is PublisherState.REPLAYING
    assert events.spool.acknowledged == 0
    assert unsent(events) == [b"k1", b"k2"]


def test_sending_nothing_acknowledges_nothing(tmp_path: Path) -> None:
    events = publisher(tmp_path)
    assert events.submit_one(record(1))
    assert events.commit() is True
    events.state = PublisherState.UP
    events._pending.clear()
    events._pending_end = events.spool.end
    asyncio.run(events._send_pending())
    assert events.spool.acknowledged == 0
    assert unsent(events) == [b"k1"]


def test_a_rolled_segment_stays_open_until_its_fsync_is_done(tmp_path: Path) -> None:
    """The fsync thread holds a segment's descriptor while the next write rolls to a new
    segment: closing it then would fsync a closed descriptor, or another file that took its
    number."""
    wal = WriteAheadLog.open(
        tmp_path, max_bytes=1 << 20, segment_bytes=1, durability=Durability.MACHINE
    )
    wal.write_group([record(1)])
    first = wal.segments()[-1].path
    descriptors, directory, retired = wal.take_unsynced()
    wal.write_group([record(2)])  # rolls: the first segment is retired
    assert len(wal.segments()) == 2
    for fd in descriptors:
        assert os.readlink(f"/proc/self/fd/{fd}") == str(first)
    wal.sync(descriptors, directory, retired)
    later, directory, retired = wal.take_unsynced()
    assert set(descriptors) <= set(retired)
    wal.sync(later, directory, retired)
    for fd in descriptors:
        with pytest.raises(OSError, match="Bad file descriptor") as closed:
            os.fstat(fd)
        assert closed.value.errno == errno.EBADF
    wal.close()


def test_machine_turns_are_queued_only_after_their_fsync_in_order(tmp_path: Path) -> None:
    gate = threading.Event()

    async def run() -> None:
        events = publisher(tmp_path, Durability.MACHINE, segment_bytes=1)
        events.state = PublisherState.UP
        wal = events.spool
        real_sync = wal.sync

        def held_sync(descriptors: list[int], directory: bool, retired: list[int]) -> None:
            assert gate.wait(5)
            for fd in descriptors:
                # Still the segment it was when taken (a closed one raises here).
                assert os.readlink(f"/proc/self/fd/{fd}").endswith(".wal")
            real_sync(descriptors, directory, retired)

        wal.sync = held_sync  # type: ignore[method-assign]
        assert events.submit_one(record(1))
        first = events.commit()
        assert events.submit_one(record(2))  # a new segment: the first one is retired
        second = events.commit()
        assert events.submit_one(record(3))
        third = events.commit()
        assert isinstance(first, asyncio.Future)
        assert isinstance(second, asyncio.Future)
        assert isinstance(third, asyncio.Future)
        # Not on disk for sure yet: neither queued nor replayable.
        assert events.pending == 0
        assert wal.sendable_end == 0
        gate.set()
        assert list(await asyncio.gather(first, second, third)) == [True, True, True]
        assert [key for _, key, _ in events._pending] == [b"k1", b"k2", b"k3"]
        assert events._pending_end == wal.end
        events._sync_thread.shutdown(wait=True)  # type: ignore[union-attr]
        wal.close()

    asyncio.run(run())


def test_a_failed_fsync_is_never_sent_and_clears_without_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn whose fsync fails is answered 503: it must not reach Kafka, from memory or from
    the log. The flush task's probe of the log fsyncs too, so /readyz says accepting again
    without a request."""
    real_fsync = os.fsync
    failures = [OSError(errno.EIO, "injected EIO")]

    def fsync(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    async def run() -> None:
        events = publisher(tmp_path, Durability.MACHINE)
        events.state = PublisherState.UP
        wal = events.spool
        assert events.submit_one(record(1))
        refused = events.commit()
        assert isinstance(refused, asyncio.Future)
        assert await refused is False
        assert events.pending == 0
        assert unsent(events) == []
        assert wal.records == 0
        assert events.accepting is False
        assert "fsync" in events.readiness()["spool_errors"]
        # No request comes: the flush task probes the log.
        events._probed_log_at = 0.0
        events._probe_log()
        await until(lambda: events._syncing is None and events._next_sync is None)
        assert events.accepting is True
        assert events.readiness()["spool_errors"] is None
        # The next turn is kept and queued on its own.
        assert events.submit_one(record(2))
        kept = events.commit()
        assert isinstance(kept, asyncio.Future)
        assert await kept is True
        assert [key for _, key, _ in events._pending] == [b"k2"]
        events._sync_thread.shutdown(wait=True)
        wal.close()

    asyncio.run(run())


def test_a_failed_fsync_between_kept_ones_is_skipped_by_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync
    failing = [False]

    def fsync(fd: int) -> None:
        if failing[0]:
            raise OSError(errno.EIO, "injected EIO")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    async def run() -> None:
        # Broker down: everything goes out by replay from the log.
        events = publisher(tmp_path, Durability.MACHINE)
        outcomes = []
        for number in (1, 2, 3):
            failing[0] = number == 2
            assert events.submit_one(record(number))
            outcome = events.commit()
            assert isinstance(outcome, asyncio.Future)
            outcomes.append(await outcome)
        assert outcomes == [True, False, True]
        wal = events.spool
        records, position = wal.read(wal.segments(), wal.acknowledged, wal.sendable_end, 1000)
        assert [key for _, key, _ in records] == [b"k1"]
        wal.acknowledge(position, len(records))
        assert unsent(events) == [b"k3"]
        records, position = wal.read(wal.segments(), wal.acknowledged, wal.sendable_end, 1000)
        wal.acknowledge(position, len(records))
        assert wal.acknowledged == wal.end
        assert wal.records == 0
        events._sync_thread.shutdown(wait=True)  # type: ignore[union-attr]
        wal.close()

    asyncio.run(run())


def test_requests_do_not_hurry_the_broker_probes(tmp_path: Path) -> None:
    """While the broker is down, a commit per turn must not end the wait between probes."""
    probes = 0

    async def run() -> None:
        nonlocal probes
        events = publisher(tmp_path)
        real_probe = events._probe

        async def counted() -> bool:
            nonlocal probes
            probes += 1
            return await real_probe()

        events._probe = counted  # type: ignore[method-assign]
        await events.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() - started < 1.0:
            events.submit_one(record(1))
            events.commit()
            commits.append(loop.time())
            await asyncio.sleep(0.002)
        await events.close(timeout=3)

    commits: list[float] = []
    asyncio.run(run())
    # The broker was probed while down, but on its own schedule (every 0.3 s over about a
    # second, with room for a slow machine), not once per commit as before.
    assert probes >= 1
    assert len(commits) > 50
    assert probes <= 6 < len(commits) // 10
