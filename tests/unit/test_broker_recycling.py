"""When the dev stack replaces its broker: the limit's parsing and the check's schedule."""

from __future__ import annotations

import io
import os
import threading

import pytest

from adpulse.cli.broker_recycling import BrokerRecycler, RecycleSettings, resident_memory
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
