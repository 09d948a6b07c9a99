"""A process's CPU time from /proc, as the benches read it: one parser for all of them.

Linux only (the benches' machine): `/proc/PID/stat` fields 14 and 15 (utime, stime) in clock
ticks, counted after the command name's closing parenthesis because the name may hold spaces.
Cheaper than a library call per sample, and it needs nothing installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

_TICK: Final = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process `pid` so far."""
    user, system = cpu_times(pid)
    return user + system
