"""A log line at most once an interval, with a count of the lines held back.

For events that may come by the thousand (refused requests, bot clicks): each is worth a line
when it is rare, and a count when it is not. The count of a burst is logged when the interval
ends, from the running event loop, so the last lines of a burst are not left unsaid.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable


class ThrottledLog:
    """`log(...)` writes the line if the last one was at least `interval` seconds ago; otherwise
    it counts it, and the count is logged when the interval is over ("... and 12 more")."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        what: str,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.level = level
        self.what = what
        self.interval = interval
        self.clock = clock
        self.held = 0
        self._last = float("-inf")
        self._flush_scheduled = False

    def log(self, message: str, *args: object) -> None:
        now = self.clock()
        if now - self._last >= self.interval:
            self.flush()
            self._last = now
            self.logger.log(self.level, message, *args)
            return
        self.held += 1
        if not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop: the count goes out with the next line
            loop.call_later(self._last + self.interval - now, self.flush)
            self._flush_scheduled = True

    def flush(self) -> None:
        """Log the count of the lines held back, if any."""
        self._flush_scheduled = False
        if self.held:
            held, self.held = self.held, 0
            self.logger.log(self.level, "... and %d more %s in the last %g s", held, self.what,
                            self.interval)  # fmt: skip
