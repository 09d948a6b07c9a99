"""When the dev stack replaces its broker: the limit's parsing and the check's schedule."""

from __future__ import annotations

import io
import os
import threading

import pytest

from adpulse.cli import broker_recycling
from adpulse.cli.broker_recycling import (
    BrokerRecycler,
    RecycleSettings,
    Retiring,
    records_left,
    resident_memory,
)
from adpulse.cli.devstack import parse_megabytes
from adpulse.cli.main import main


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), ("256", 256 << 20), ("1_024", 1024 << 20)])
def test_megabytes_parse_to_bytes(raw: str, expected: int) -> None:
    assert parse_megabytes(raw) == expected


@pytest.mark.parametrize("raw", ["-1", "2000000", "lots", "1.5"])
def test_megabytes_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_megabytes(raw)


def test_bad_limit_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "--broker-max-memory", "-5"]) == 2
    assert "--broker-max-memory" in capsys.readouterr().err


class Stack:
    """The dev stack as the recycler sees it, with this process standing in for the broker."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.stop_requested = threading.Event()

    def process_id(self, name: str) -> int | None:
        self.asked.append(name)
        return os.getpid()

    def start_successor(self, name: str, kafka: str) -> str | None:
        raise AssertionError(f"{name} started although the broker is under its limit")

    def retire(self, name: str, newest: bool = False) -> None:
        raise AssertionError(f"{name} stopped although the broker is under its limit")

    def move_tracker(self, kafka: str) -> None:
        raise AssertionError("the tracker moved although the broker is under its limit")

    def tracker_moved(self, kafka: str) -> bool:
        raise AssertionError("no replacement to follow")

    def hand_over_metrics(self) -> None:
        raise AssertionError("no replacement to follow")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def recycler(max_memory: int, stack: Stack, clock: Clock) -> BrokerRecycler:
    settings = RecycleSettings(max_memory, topic="adpulse.events", group="adpulse-worker")
    return BrokerRecycler(settings, "127.0.0.1:9", stack, io.StringIO(), clock=clock)


def test_memory_checked_every_interval_and_nothing_done_under_the_limit() -> None:
    stack, clock = Stack(), Clock()
    subject = recycler(1 << 40, stack, clock)
    subject.tick()
    assert stack.asked == []  # not before the first interval
    clock.now += subject.settings.check_interval
    subject.tick()
    subject.tick()
    assert stack.asked == ["broker"]
    assert subject.recycled == 0


def test_no_limit_never_looks() -> None:
    stack, clock = Stack(), Clock()
    subject = recycler(0, stack, clock)
    clock.now += 3600
    subject.tick()
    assert stack.asked == []


def test_resident_memory_of_a_live_and_a_gone_process() -> None:
    own = resident_memory(os.getpid())
    assert own is not None
    assert own > 1 << 20
    assert resident_memory(2**22 + 12345) is None  # above Linux's largest process id


@pytest.mark.parametrize(
    ("committed", "ends", "left"),
    [
        ({0: 5, 1: 7}, {0: 5, 1: 7}, 0),  # all counted
        ({0: 5}, {0: 5, 1: 0}, 0),  # an empty partition, nothing committed
        ({0: 3, 1: 7}, {0: 5, 1: 9}, 4),
        ({0: 5, 1: 7}, {0: 5, 1: None}, None),  # a fetch that timed out: unknown, not drained
    ],
)
def test_records_left_to_count(
    committed: dict[int, int], ends: dict[int, int | None], left: int | None
) -> None:
    assert records_left(committed, ends) == left


class Replacing(Stack):
    """The dev stack in the middle of a replacement: old pair at :1, new pair at :2."""

    def __init__(self, confirms: bool) -> None:
        super().__init__()
        self.confirms = confirms
        self.moves: list[str] = []
        self.retired: list[tuple[str, bool]] = []
        self.handed_over = 0

    def retire(self, name: str, newest: bool = False) -> None:
        self.retired.append((name, newest))

    def move_tracker(self, kafka: str) -> None:
        self.moves.append(kafka)

    def tracker_moved(self, kafka: str) -> bool:
        return self.confirms

    def hand_over_metrics(self) -> None:
        self.handed_over += 1


def retiring(
    stack: Replacing, clock: Clock, monkeypatch: pytest.MonkeyPatch, left: int | None
) -> BrokerRecycler:
    async def undrained(bootstrap: str, topic: str, group: str, deadline: float) -> int | None:
        assert bootstrap == "127.0.0.1:1"
        return left

    async def holds_records(bootstrap: str, topic: str) -> bool:
        return False  # the new broker got nothing from the tracker

    async def carry(*args: object) -> dict[str, dict[int, int]]:
        return {}

    monkeypatch.setattr(broker_recycling, "undrained", undrained)
    monkeypatch.setattr(broker_recycling, "holds_records", holds_records)
    monkeypatch.setattr(broker_recycling, "carry", carry)
    subject = recycler(1, stack, clock)
    subject.bootstrap = "127.0.0.1:2"
    subject.retiring = Retiring("127.0.0.1:1", "127.0.0.1:2", "test", clock(), clock())
    return subject


def test_an_unknown_end_never_retires_the_old_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    stack, clock = Replacing(confirms=True), Clock()
    subject = retiring(stack, clock, monkeypatch, left=None)
    for _ in range(100):
        clock.now += 1
        subject.tick()
    assert stack.retired == []
    assert subject.retiring is not None
    assert "unknown" in subject.out.getvalue()  # type: ignore[attr-defined]


def test_a_drained_old_pair_is_retired_once_the_tracker_confirmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack, clock = Replacing(confirms=True), Clock()
    subject = retiring(stack, clock, monkeypatch, left=0)
    subject.tick()
    assert stack.retired == [("worker", False), ("broker", False)]
    assert stack.handed_over == 1  # the old worker stopped serving /metrics first
    assert subject.retiring is None
    assert subject.recycled == 1


def test_an_unconfirmed_move_is_signalled_again_then_abandoned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack, clock = Replacing(confirms=False), Clock()
    subject = retiring(stack, clock, monkeypatch, left=0)
    deadline = subject.settings.move_deadline
    clock.now += deadline - 1
    subject.tick()
    assert (stack.moves, stack.retired) == ([], [])
    clock.now += 2
    subject.tick()
    assert stack.moves == ["127.0.0.1:2"]  # signalled again
    assert stack.retired == []
    clock.now += deadline + 1
    subject.tick()
    # Abandoned: the tracker pointed back at the old broker, the NEW pair stopped, not the old.
    assert stack.moves == ["127.0.0.1:2", "127.0.0.1:1"]
    assert stack.retired == [("worker", True), ("broker", True)]
    assert subject.retiring is None
    assert subject.bootstrap == "127.0.0.1:1"
    assert subject.recycled == 0
    assert stack.handed_over == 0  # the old worker still serves /metrics
    assert "did not confirm" in subject.out.getvalue()  # type: ignore[attr-defined]
    assert subject.next_check == clock.now + subject.settings.retry_after
