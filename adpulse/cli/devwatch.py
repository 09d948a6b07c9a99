"""What `adpulse dev` watches while it runs: metrics pages, the tracker's notices, the simulator.

Everything here reads what the components publish (their /metrics pages and logs) and prints
it in the dev terminal; nothing here changes a component.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TextIO

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""(sample name, labels) -> value, as read from a /metrics page."""

# Lines of the tracker's log echoed in the dev terminal: refusals and bot clicks, which the
# tracker itself limits to about a line a second.
TRACKER_NOTICES = (" refused ", " bot click")


def scrape(url: str, timeout: float = 5.0) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def try_scrape(url: str) -> Samples | None:
    try:
        return scrape(url)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def total(samples: Samples, name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


# What the simulator's report calls each figure, and the exporter series that counts it.
CHECKED: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "clicks": ("adpulse_events_total", {"type": "click"}),
    "bot_clicks": ("adpulse_bot_clicks_total", {}),
    "leads": ("adpulse_events_total", {"type": "lead"}),
    "conversions": ("adpulse_events_total", {"type": "conversion"}),
    "redemptions": ("adpulse_events_total", {"type": "redemption"}),
    "spend": ("adpulse_spend_total", {}),
    "revenue": ("adpulse_revenue_total", {}),
    # Orders restated during the run move net revenue; customers are new or come back.
    "net_revenue": ("adpulse_net_revenue", {}),
    "new_customers": ("adpulse_new_customers_total", {}),
    "repeat_sales": ("adpulse_repeat_sales_total", {}),
}
MONEY: Final = frozenset({"spend", "revenue", "net_revenue"})


def counted(samples: Samples, channel: str, figure: str) -> Decimal:
    name, labels = CHECKED[figure]
    wanted = frozenset({("channel", channel), *labels.items()})
    return Decimal(str(samples.get((name, wanted), 0.0)))


@dataclass(frozen=True, slots=True)
class SimulatorCheck:
    """The simulator's report against how much the exporter's counters grew meanwhile."""

    sent: Mapping[str, Decimal]
    grown: Mapping[str, Decimal]
    differences: tuple[str, ...]
    bot_clicks: int
    bot_shares: tuple[str, ...] = ()
    """"channel 4.1%": of each channel's clicks sent, the bots'."""

    @property
    def matches(self) -> bool:
        return not self.differences

    def lines(self) -> list[str]:
        figures = ", ".join(
            f"{self.sent[name].normalize():f} {name}" if name not in MONEY
            else f"{name} {self.sent[name]:.2f}"
            for name in CHECKED
        )  # fmt: skip
        head = f"  simulator check: sent {figures}"
        shares = []
        if self.bot_shares:
            shares = [f"    bot share of clicks (counted apart): {', '.join(self.bot_shares)}"]
        if self.matches:
            return [head, *shares, "    the counters grew by exactly that"]
        return [
            head,
            *shares,
            "    the counters differ (other traffic meanwhile counts too, and a stop cut short "
            "may leave events in the spool for the next start):",
            *(f"    {line}" for line in self.differences[:10]),
        ]


def compare(report: Mapping[str, Any], before: Samples, after: Samples) -> SimulatorCheck:
    sent = dict.fromkeys(CHECKED, Decimal(0))
    grown = dict.fromkeys(CHECKED, Decimal(0))
    differences: list[str] = []
    bots = 0
    shares = []
    for channel, figures in report["channels"].items():
        bot_clicks = int(figures.get("bot_clicks", 0))
        bots += bot_clicks
        every_click = bot_clicks + int(figures.get("clicks", 0))
        if every_click:
            shares.append(f"{channel} {100 * bot_clicks / every_click:.1f}%")
        for figure in CHECKED:
            expected = Decimal(str(figures.get(figure, 0)))
            change = counted(after, channel, figure) - counted(before, channel, figure)
            sent[figure] += expected
            grown[figure] += change
            if round(change, 6) != round(expected, 6):
                differences.append(
                    f"{channel} {figure}: sent {expected.normalize():f}, "
                    f"counted {change.normalize():f}"
                )
    return SimulatorCheck(sent, grown, tuple(differences), bots, tuple(shares))


def growth(before: Samples, after: Samples) -> dict[str, Decimal]:
    """How much each event counter grew, summed over the channels."""
    grown = {}
    for figure in ("clicks", "bot_clicks", "leads", "conversions", "redemptions"):
        name, labels = CHECKED[figure]
        wanted = set(labels.items())
        grown[figure] = sum(
            (
                Decimal(str(value)) - Decimal(str(before.get((sample, found), 0.0)))
                for (sample, found), value in after.items()
                if sample == name and wanted <= found
            ),
            Decimal(0),
        )
    return grown


def last_progress(log: Path, start: int) -> tuple[str, str] | None:
    """The time and message of the simulator's latest "sent N requests, ..." log line (from
    byte `start` of its log)."""
    try:
        with log.open("rb") as file:
            file.seek(start)
            text = file.read().decode(errors="replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        head, _, message = line.partition(": ")
        if message.startswith("sent ") and " requests" in message:
            # The line starts with an ISO 8601 time: 2026-12-06T03:44:36+0000.
            when = head.split(" ", 1)[0].partition("T")[2][:8]
            return when, message
    return None


def simulator_report(log: Path, start: int) -> dict[str, Any] | None:
    """The JSON report the simulator printed last in its log (from byte `start`), if any."""
    try:
        with log.open("rb") as file:
            file.seek(start)
            text = file.read().decode(errors="replace")
    except OSError:
        return None
    begin, end = text.rfind("\n{\n"), text.rfind("\n}")
    if begin < 0 or end < begin:
        return None
    try:
        report: dict[str, Any] = json.loads(text[begin + 1 : end + 2])
    except ValueError:
        return None
    return report if isinstance(report.get("channels"), dict) else None


def wait_for(condition: Callable[[], bool], deadline: float, poll: float = 0.25) -> bool:
    """Poll `condition` until it holds or `deadline` seconds pass."""
    end = time.monotonic() + deadline
    while True:
        if condition():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(poll)  # polling another process's metrics page


def worker_drained(metrics_url: str) -> Callable[[], bool]:
    """True once the worker reports no lag and its processed count stopped moving."""
    last: list[float] = []

    def drained() -> bool:
        samples = try_scrape(metrics_url)
        if samples is None:
            return True  # nothing left to ask: the worker is gone
        processed = total(samples, "adpulse_worker_events_processed_total")
        lag = total(samples, "adpulse_worker_consumer_lag")
        settled = bool(last) and last[-1] == processed
        last.append(processed)
        return lag == 0 and settled

    return drained


class LogEcho(threading.Thread):
    """Prints the lines of a log that contain one of `markers`, as they are written."""

    def __init__(
        self, path: Path, start: int, markers: tuple[str, ...], out: TextIO, prefix: str
    ) -> None:
        super().__init__(name=f"echo-{path.name}", daemon=True)
        self.path = path
        self.offset = start
        self.markers = markers
        self.out = out
        self.prefix = prefix
        self.stopped = threading.Event()

    def run(self) -> None:
        partial = b""
        while not self.stopped.wait(0.5):
            try:
                with self.path.open("rb") as file:
                    file.seek(self.offset)
                    chunk = file.read(1 << 20)
            except OSError:
                continue
            self.offset += len(chunk)
            *lines, partial = (partial + chunk).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                if any(marker in line for marker in self.markers):
                    # The log line's own time and logger name are noise in the terminal.
                    message = line.split(": ", 1)[-1]
                    print(f"  {self.prefix}{message}", file=self.out, flush=True)

    def stop(self) -> None:
        self.stopped.set()
