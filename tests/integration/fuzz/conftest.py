"""The fuzz run's figures in the terminal summary, so CI output shows what was tried."""

from __future__ import annotations

import pytest

FIGURES = pytest.StashKey[list[str]]()


def record_figures(config: pytest.Config, line: str) -> None:
    config.stash.setdefault(FIGURES, []).append(line)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("schemathesis against the tracker's /openapi.json")
        for line in lines:
            terminalreporter.write_line(line)
