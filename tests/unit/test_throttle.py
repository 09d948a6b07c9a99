"""ThrottledLog: a line at most once an interval, and the rest counted, never dropped unsaid."""

from __future__ import annotations

import asyncio
import logging

import pytest

from adpulse.core.throttle import ThrottledLog

log = logging.getLogger("test.throttle")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == log.name]


def test_one_line_an_interval_then_the_count_with_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    throttled = ThrottledLog(log, logging.INFO, "refused", interval=1.0, clock=clock)
    for number in range(5):
        throttled.log("refused %d", number)
    assert messages(caplog) == ["refused 0"]
    clock.now += 1.0
    throttled.log("refused %d", 5)
    assert messages(caplog) == [
        "refused 0",
        "... and 4 more refused in the last 1 s",
        "refused 5",
    ]


def test_the_count_of_a_burst_is_said_when_its_interval_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    async def burst() -> None:
        counted = asyncio.Event()

        class Watch(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.getMessage().startswith("... and"):
                    counted.set()

        watch = Watch()
        log.addHandler(watch)
        try:
            throttled = ThrottledLog(log, logging.INFO, "bot clicks", interval=0.05)
            for _ in range(3):
                throttled.log("bot click")
            assert messages(caplog) == ["bot click"]
            await asyncio.wait_for(counted.wait(), 5)
        finally:
            log.removeHandler(watch)

    asyncio.run(burst())
    assert messages(caplog) == ["bot click", "... and 2 more bot clicks in the last 0.05 s"]
