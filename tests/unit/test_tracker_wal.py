"""The tracker's write-ahead log: frames, checksums, torn tails, the cursor, and a full disk.

A full disk is real here: the segment the log is about to create is a symlink to /dev/full,
whose writes fail with ENOSPC as a full file system's do.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import re
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adpulse.core.options import SettingError
from tracker.http import Connection, HttpServer, Request, Response
from tracker.publisher import EventPublisher, PublisherSettings, TopicSpec
from tracker.server import _until_stopped
from tracker.settings import add_arguments, settings_from
from tracker.spool import SpoolIOError, SpoolRecord, frame_size
from tracker.wal import GROUP_OVERHEAD, Durability, WriteAheadLog, decode_groups, encode_group

EVENTS = "adpulse.events"
records_strategy = st.lists(
    st.builds(
        SpoolRecord,
        st.sampled_from([EVENTS, "adpulse.events.rejected"]),
        st.binary(max_size=40),
        st.binary(max_size=300),
    ),
    max_size=20,
)


def record(number: int) -> SpoolRecord:
    return SpoolRecord(EVENTS, b"key-%d" % number, b'{"event_id":"e%d"}' % number)


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def full_disk_at(wal: WriteAheadLog) -> Path:
    """Make the segment the log creates next a file that is always full."""
    path = wal.directory / f"{wal.end:020d}.wal"
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/full")
    return path


@settings(max_examples=200)
@given(st.lists(records_strategy, max_size=5))
def test_groups_decode_to_what_was_encoded(groups: list[list[SpoolRecord]]) -> None:
    data = b"".join(encode_group(group) for group in groups)
    found, end, torn = decode_groups(data, 0, len(data), 1 << 30)
    assert found == [r for group in groups for r in group]
    assert (end, torn) == (len(data), False)
    # A group takes at most what the publisher counts for it before writing.
    for group in groups:
        assert len(encode_group(group)) <= GROUP_OVERHEAD + sum(map(frame_size, group))


@settings(max_examples=200)
@given(records_strategy.filter(bool), records_strategy, st.data())
def test_a_torn_last_group_is_never_read(
    first: list[SpoolRecord], second: list[SpoolRecord], data: st.DataObject
) -> None:
    whole = encode_group(first)
    last = encode_group(second)
    cut = data.draw(st.integers(1, len(last) - 1))
    blob = whole + last[:cut]
    found, end, torn = decode_groups(blob, 0, len(blob), 1 << 30)
    assert (found, end, torn) == (first, len(whole), True)
    # A flipped byte in a whole group fails its checksum.
    flipped = bytearray(whole)
    flipped[data.draw(st.integers(GROUP_OVERHEAD, len(whole) - 1))] ^= 0x01
    found, end, torn = decode_groups(bytes(flipped), 0, len(flipped), 1 << 30)
    assert (found, end, torn) == ([], 0, True)


def test_a_crash_keeps_what_was_written_and_drops_the_torn_tail(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    wal.write_group([record(0), record(1)])
    wal.write_group([record(2)])
    end = wal.end
    # The process dies in the middle of its next write: half a frame reaches the file.
    half = encode_group([record(3), record(4)])
    with segment_files(tmp_path)[-1].open("ab") as file:
        file.write(half[: len(half) // 2])
    # No close: a SIGKILL closes nothing.
    reopened = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    assert (reopened.acknowledged, reopened.end, reopened.records) == (0, end, 3)
    found, position = reopened.read(reopened.segments(), 0, reopened.end, 100)
    assert (found, position) == ([record(0), record(1), record(2)], end)
    # New writes go after the last whole group, in a segment of their own.
    reopened.write_group([record(5)])
    found, _ = reopened.read(reopened.segments(), 0, reopened.end, 100)
    assert found == [record(0), record(1), record(2), record(5)]


def test_the_cursor_skips_what_kafka_acknowledged(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    for number in range(6):
        wal.write_group([record(number)])
    segments = wal.segments()
    assert len(segments) >= 3
    found, middle = wal.read(segments, 0, wal.end, 3)
    assert found == [record(0), record(1), record(2)]
    wal.acknowledge(middle, 3)
    assert wal.records == 3
    obsolete = wal.obsolete()
    assert obsolete
    assert all(s.base < middle for s in obsolete)
    wal.remove(obsolete)
    wal.forget(obsolete)
    wal.save_cursor(middle)
    reopened = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    assert (reopened.acknowledged, reopened.records) == (middle, 3)
    found, _ = reopened.read(reopened.segments(), middle, reopened.end, 100)
    assert found == [record(3), record(4), record(5)]


def test_a_torn_cursor_replays_from_the_oldest_segment(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    wal.write_group([record(0)])
    wal.write_group([record(1)])
    wal.save_cursor(wal.end)
    (tmp_path / "wal.cursor").write_bytes(b"\x00\x00\x00")
    reopened = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    # Duplicates rather than a loss: both records are sent again.
    assert (reopened.acknowledged, reopened.records) == (0, 2)


def test_a_full_disk_refuses_the_group_and_the_log_recovers(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    wal.write_group([record(0)])
    end = wal.end
    wal._roll_next = True  # the next write starts a segment, as after a restart
    full = full_disk_at(wal)
    with pytest.raises(SpoolIOError) as raised:
        wal.write_group([record(1), record(2)])
    assert raised.value.operation == "write"
    assert raised.value.cause.errno == errno.ENOSPC
    assert str(full) in str(raised.value)
    assert "ENOSPC" in str(raised.value)
    assert (wal.end, wal.records) == (end, 1)
    # Space comes back: the next write goes to a new segment and nothing is torn.
    full.unlink()
    wal.write_group([record(3)])
    found, _ = wal.read(wal.segments(), 0, wal.end, 100)
    assert found == [record(0), record(3)]
    assert WriteAheadLog.open(tmp_path, max_bytes=1 << 20).records == 2


def test_an_older_spool_is_moved_into_the_log(tmp_path: Path) -> None:
    def old_frame(item: SpoolRecord) -> bytes:
        topic = item.topic.encode()
        payload = struct.pack(">HH", len(topic), len(item.key)) + topic + item.key + item.value
        return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload

    first = old_frame(record(0))
    (tmp_path / "segment-0000000000000000.spool").write_bytes(first + old_frame(record(1)))
    (tmp_path / "segment-0000000000000001.spool").write_bytes(old_frame(record(2)))
    # The first record was confirmed by the broker before the upgrade.
    (tmp_path / "cursor").write_text(f"0 {len(first)}\n")
    wal = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    found, _ = wal.read(wal.segments(), wal.acknowledged, wal.end, 100)
    assert found == [record(1), record(2)]
    assert not list(tmp_path.glob("*.spool"))
    assert not (tmp_path / "cursor").exists()


def test_the_cursor_is_written_in_place_on_a_full_disk(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    wal.write_group([record(0)])
    wal.save_cursor(0)
    # Overwriting the cursor's bytes needs no new space; a cursor that cannot be written is
    # an error the caller logs and retries, never a crash.
    wal.save_cursor(wal.end)
    (tmp_path / "wal.cursor").unlink()
    (tmp_path / "wal.cursor").symlink_to("/dev/full")
    with pytest.raises(SpoolIOError) as raised:
        wal.save_cursor(wal.end)
    assert raised.value.operation == "cursor"


def publisher(directory: Path, durability: Durability = Durability.PROCESS) -> EventPublisher:
    wal = WriteAheadLog.open(directory, max_bytes=1 << 20, durability=durability)
    built = EventPublisher(PublisherSettings("127.0.0.1:9", (TopicSpec(EVENTS, 1),)), wal)
    built.schedule_commit = lambda: None
    return built


def test_a_turn_the_log_cannot_take_is_refused_and_counted(tmp_path: Path) -> None:
    events = publisher(tmp_path)
    assert events.submit_one(record(0))
    assert events.commit() is True
    events.spool._roll_next = True
    full = full_disk_at(events.spool)
    assert events.submit_one(record(1))
    assert events.submit([record(2), record(3)])
    assert events.commit() is False
    assert events.stats.refused == 3
    assert events.spool_errors["write"] == 1
    state = events.readiness()
    assert state["accepting"] is False
    assert "ENOSPC" in state["spool_errors"]["write"]
    full.unlink()
    assert events.submit_one(record(4))
    assert events.commit() is True
    assert events.readiness()["accepting"] is True
    assert events.readiness()["spool_errors"] is None
    assert events.stats.logged == 2


def test_the_log_full_refuses_at_submit(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path, max_bytes=4096)
    events = EventPublisher(PublisherSettings("127.0.0.1:9", (TopicSpec(EVENTS, 1),)), wal)
    events.schedule_commit = lambda: None
    accepted = 0
    while events.submit_one(record(accepted)):
        accepted += 1
        if accepted % 10 == 0:
            assert events.commit() is True
    assert events.commit() is True
    assert wal.size_bytes <= 4096
    assert wal.records == accepted
    assert events.stats.refused == 1


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


REFUSED = Response(503, b"refused", constant=True)
ACCEPTED = Response(202, b"accepted", constant=True, refusal=REFUSED)


def test_answers_wait_for_the_commit_and_become_refusals_when_it_fails() -> None:
    outcomes = iter([True, False])
    refused: list[Response] = []

    async def run() -> list[bytes]:
        server = HttpServer(
            lambda request: ACCEPTED if request.path == "/a" else Response(204),
            commit=lambda: next(outcomes),
            on_refused=refused.append,
        )
        connection = Connection(server)
        transport = Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        # Alone on the server, an acceptance still waits for the end of its turn.
        connection.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert transport.written == []
        await asyncio.sleep(0)
        connection.data_received(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await asyncio.sleep(0)
        return transport.written

    written = b"".join(asyncio.run(run()))
    statuses = re.findall(rb"HTTP/1\.1 (\d+)", written)
    assert statuses == [b"202", b"503", b"204"]
    assert refused == [REFUSED]


def test_a_head_acceptance_waits_for_the_commit_too() -> None:
    """HEAD answers the GET's headers: an acceptance among them becomes the refusal's headers
    when the commit fails, as the GET's would."""

    async def run() -> list[bytes]:
        server = HttpServer(lambda request: ACCEPTED, commit=lambda: False)
        connection = Connection(server)
        transport = Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert transport.written == []
        await asyncio.sleep(0)
        return transport.written

    written = b"".join(asyncio.run(run()))
    assert re.findall(rb"HTTP/1\.1 (\d+)", written) == [b"503"]
    assert b"content-length: 7\r\n" in written.lower()
    assert written.endswith(b"\r\n\r\n")


def test_machine_durability_answers_after_the_fsync_in_order(tmp_path: Path) -> None:
    async def run() -> tuple[list[bytes], list[bytes]]:
        events = publisher(tmp_path, Durability.MACHINE)
        await events.start()
        server = HttpServer(lambda request: handle(events, request), commit=events.commit)
        events.schedule_commit = server.end_turn
        connection = Connection(server)
        transport = Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        connection.data_received(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        before_sync = list(transport.written)
        for _ in range(1000):
            if len(transport.written) >= 2:
                break
            await asyncio.sleep(0.01)
        await events.close(timeout=1)
        return before_sync, transport.written

    before_sync, written = asyncio.run(run())
    assert before_sync == []
    statuses = re.findall(rb"HTTP/1\.1 (\d+)", b"".join(written))
    assert statuses == [b"202", b"204"]
    assert WriteAheadLog.open(tmp_path, max_bytes=1 << 20).records == 1


def handle(events: EventPublisher, request: Request) -> Response:
    if request.path == "/a" and events.submit_one(record(0)):
        return ACCEPTED
    return Response(204)


def test_dev_full_is_what_the_tests_take_it_for() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError, match="No space") as raised:
            os.write(fd, b"x")
        assert raised.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_background_task_that_dies_stops_the_tracker() -> None:
    async def run() -> tuple[asyncio.Task[None] | None, asyncio.Task[None] | None]:
        async def dies() -> None:
            raise RuntimeError("broken")

        async def lives() -> None:
            await asyncio.Event().wait()  # never set: runs until cancelled

        stop = asyncio.Event()
        living = asyncio.create_task(lives(), name="lives")
        died = await _until_stopped(stop, [living, asyncio.create_task(dies(), name="dies")])
        stop.set()
        stopped = await _until_stopped(stop, [living])
        living.cancel()
        return died, stopped

    died, stopped = asyncio.run(run())
    assert died is not None
    assert died.get_name() == "dies"
    assert stopped is None


def durability(argv: list[str], env: dict[str, str]) -> Durability:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from(parser.parse_args(argv), env).durability


def test_durability_from_the_flag_the_variable_or_the_default() -> None:
    assert durability([], {}) is Durability.PROCESS
    assert durability([], {"ADPULSE_DURABILITY": "machine"}) is Durability.MACHINE
    assert durability(["--durability", "process"], {"ADPULSE_DURABILITY": "machine"}) is (
        Durability.PROCESS
    )
    with pytest.raises(SettingError, match="ADPULSE_DURABILITY"):
        durability([], {"ADPULSE_DURABILITY": "disk"})


def test_a_second_restart_still_reads_past_the_torn_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    wal.write_group([record(0)])
    torn = encode_group([record(1)])
    with segment_files(tmp_path)[-1].open("ab") as file:
        file.write(torn[:-1])
    first_restart = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    assert "ends in a torn frame" in caplog.text
    first_restart.write_group([record(2)])
    caplog.clear()
    # Killed again: the torn bytes are still in the older segment, before the newer one's start.
    second_restart = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    assert len(segment_files(tmp_path)) == 2
    assert second_restart.records == 2
    found, position = second_restart.read(second_restart.segments(), 0, second_restart.end, 100)
    assert (found, position) == ([record(0), record(2)], second_restart.end)
    assert "torn" not in caplog.text
    assert "unreadable" not in caplog.text


def test_a_torn_tail_after_the_cursor_leaves_nothing_to_send(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    wal.write_group([record(0), record(1)])
    wal.acknowledge(wal.end, 2)
    wal.save_cursor(wal.end)
    end = wal.end
    torn = encode_group([record(2)])
    with segment_files(tmp_path)[-1].open("ab") as file:
        file.write(torn[: GROUP_OVERHEAD - 1])
    reopened = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    assert (reopened.acknowledged, reopened.end, reopened.records) == (end, end, 0)
    assert reopened.empty


def test_a_corrupt_frame_in_an_older_segment_reads_on_at_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    wal.write_group([record(0)])
    wal.write_group([record(1)])
    wal.roll()
    wal.write_group([record(2)])
    wal.write_group([record(3)])
    older = segment_files(tmp_path)[0]
    data = bytearray(older.read_bytes())
    # A flipped bit in the first group's payload: its crc32 no longer matches.
    data[GROUP_OVERHEAD] ^= 0x01
    older.write_bytes(bytes(data))
    reopened = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    assert f"segment {older} is unreadable from byte 0" in caplog.text
    # The rest of the damaged segment is lost (and said so); the next segment is all there.
    assert reopened.records == 2
    found, position = reopened.read(reopened.segments(), 0, reopened.end, 100)
    assert (found, position) == ([record(2), record(3)], reopened.end)


@pytest.mark.parametrize("damage", ["flipped", "past the end"])
def test_a_wrong_cursor_replays_from_the_oldest_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    wal = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    wal.write_group([record(0)])
    wal.write_group([record(1)])
    if damage == "flipped":
        wal.save_cursor(wal.end)
        cursor = tmp_path / "wal.cursor"
        data = bytearray(cursor.read_bytes())
        data[7] ^= 0x01
        cursor.write_bytes(bytes(data))
    else:
        # A valid checksum, but a position the log never reached (a cursor from another log).
        wal.save_cursor(wal.end + 4096)
    reopened = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    assert (reopened.acknowledged, reopened.records) == (0, 2)
    assert "replaying the log from its start" in caplog.text


def test_segments_acknowledged_before_a_crash_are_deleted_at_open(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    wal.write_group([record(0)])
    wal.write_group([record(1)])
    wal.roll()
    newer = wal.end
    wal.write_group([record(2)])
    wal.acknowledge(newer, 2)
    wal.save_cursor(newer)
    older = segment_files(tmp_path)[0]
    # Killed between saving the cursor and deleting the acknowledged segment.
    reopened = WriteAheadLog.open(tmp_path, max_bytes=1 << 20)
    assert not older.exists()
    assert (reopened.acknowledged, reopened.records) == (newer, 1)
    found, _ = reopened.read(reopened.segments(), reopened.acknowledged, reopened.end, 100)
    assert found == [record(2)]
