"""Counter sums over rolling windows, the KPIs computed from them, and the snapshot types.

Pure: `snapshot_reads` says which buckets a snapshot needs, the store fetches them, and
`build_snapshot` turns them into a `Snapshot`. A KPI whose denominator is zero is None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal
from typing import Final

from stream.keys import ANSWERED, CALLS, CLICKS, CONVERSIONS, REDEMPTIONS, REVENUE, SPEND

WINDOWS: Final[Mapping[str, int]] = {"5m": 5, "1h": 60, "24h": 1440}
"""Window name -> length in minutes."""
OFFSETS: Final[Mapping[str, int]] = {"current": 0, "day_earlier": 1440, "week_earlier": 10080}
"""Comparison -> how many minutes earlier the window ends."""

MICROS: Final = 1_000_000
_CONTEXT: Final = Context(prec=34)

Bucket = tuple[str, int]
"""("m", minute) or ("h", hour): one bucket hash to read."""


@dataclass(frozen=True, slots=True)
class Counters:
    """Counts and money (integer micros of the reporting currency) of one channel and period."""

    clicks: int = 0
    redemptions: int = 0
    conversions: int = 0
    revenue_micros: int = 0
    spend_micros: int = 0
    # Calls to tracked numbers (issue 14); a qualified call is also a lead (counter `l`).
    calls: int = 0
    answered_calls: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            self.clicks + other.clicks,
            self.redemptions + other.redemptions,
            self.conversions + other.conversions,
            self.revenue_micros + other.revenue_micros,
            self.spend_micros + other.spend_micros,
            calls=self.calls + other.calls,
            answered_calls=self.answered_calls + other.answered_calls,
        )


_FIELD_NAMES: Final[Mapping[str, str]] = {
    CLICKS: "clicks",
    REDEMPTIONS: "redemptions",
    CONVERSIONS: "conversions",
    REVENUE: "revenue_micros",
    SPEND: "spend_micros",
    CALLS: "calls",
    ANSWERED: "answered_calls",
}


def counters_by_channel(fields: Mapping[str, int | str]) -> dict[str, Counters]:
    """Parse one bucket hash (``{channel}:{counter}`` -> value) into Counters per channel."""
    found: dict[str, dict[str, int]] = {}
    for name, value in fields.items():
        channel, _, counter = name.rpartition(":")
        attribute = _FIELD_NAMES.get(counter)
        if attribute is not None and channel:
            found.setdefault(channel, {})[attribute] = int(value)
    return {channel: Counters(**values) for channel, values in found.items()}


@dataclass(frozen=True, slots=True)
class Kpis:
    """Money KPIs in units of the reporting currency; rates as plain ratios (0.05 = 5 %)."""

    cpa: Decimal | None
    cpc: Decimal | None
    conversion_rate: Decimal | None
    roas: Decimal | None
    romi: Decimal | None
    aov: Decimal | None


def _ratio(numerator: int, denominator: int) -> Decimal | None:
    if denominator == 0:
        return None
    return _CONTEXT.divide(Decimal(numerator), Decimal(denominator))


def kpis(counters: Counters) -> Kpis:
    """CPA, CPC, conversion rate, ROAS, ROMI and AOV of `counters`.

    >>> kpis(Counters(clicks=200, conversions=4, revenue_micros=300_000_000,
    ...               spend_micros=100_000_000)).cpa
    Decimal('25')
    """
    spend, revenue = counters.spend_micros, counters.revenue_micros
    return Kpis(
        cpa=_ratio(spend, counters.conversions * MICROS),
        cpc=_ratio(spend, counters.clicks * MICROS),
        conversion_rate=_ratio(counters.conversions, counters.clicks),
        roas=_ratio(revenue, spend),
        romi=_ratio(revenue - spend, spend),
        aov=_ratio(revenue, counters.conversions * MICROS),
    )


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """One window of one channel. `hourly`: read from whole hours (outside minute retention)."""

    counters: Counters
    kpis: Kpis
    hourly: bool = False


@dataclass(frozen=True, slots=True)
class Comparison:
    """A window now, and the same window one day and seven days earlier."""

    current: WindowFigures
    day_earlier: WindowFigures
    week_earlier: WindowFigures


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    channel: str
    totals: Counters
    windows: Mapping[str, Comparison]
    """Window name ("5m", "1h", "24h") -> Comparison."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every channel's lifetime totals and windows at `taken_at`."""

    taken_at: datetime
    channels: Mapping[str, ChannelSnapshot]


def window_buckets(end_minute: int, length: int, oldest_minute: int) -> tuple[list[Bucket], bool]:
    """The buckets whose sum is the window of `length` minutes ending with `end_minute`.

    Whole hours inside the window are read as one hourly bucket (an hour holds exactly the sum
    of its minutes). A window reaching past the minute retention is read as the whole hours it
    touches; the flag says so.
    """
    start = end_minute - length + 1
    if start < oldest_minute:
        return [("h", hour) for hour in range(start // 60, end_minute // 60 + 1)], True
    buckets: list[Bucket] = []
    minute = start
    while minute <= end_minute:
        if minute % 60 == 0 and minute + 59 <= end_minute:
            buckets.append(("h", minute // 60))
            minute += 60
        else:
            buckets.append(("m", minute))
            minute += 1
    return buckets, False


def snapshot_reads(now_minute: int, oldest_minute: int) -> dict[tuple[str, str], list[Bucket]]:
    """(window, comparison) -> buckets, for every window and comparison of a snapshot.

    The current window includes the minute `now_minute`, which is still filling.
    """
    reads: dict[tuple[str, str], list[Bucket]] = {}
    for window, length in WINDOWS.items():
        for comparison, offset in OFFSETS.items():
            buckets, _ = window_buckets(now_minute - offset, length, oldest_minute)
            reads[window, comparison] = buckets
    return reads


def build_snapshot(
    taken_at: datetime,
    now_minute: int,
    oldest_minute: int,
    buckets: Mapping[Bucket, Mapping[str, Counters]],
    totals: Mapping[str, Counters],
) -> Snapshot:
    """The snapshot from fetched buckets (bucket -> channel -> Counters; missing = empty)."""
    empty = Counters()
    channels: dict[str, ChannelSnapshot] = {}
    figures: dict[tuple[str, str, str], WindowFigures] = {}
    for window, length in WINDOWS.items():
        for comparison, offset in OFFSETS.items():
            needed, hourly = window_buckets(now_minute - offset, length, oldest_minute)
            sums: dict[str, Counters] = {}
            for bucket in needed:
                for channel, counters in buckets.get(bucket, {}).items():
                    sums[channel] = sums.get(channel, empty) + counters
            for channel in totals:
                counters = sums.get(channel, empty)
                figures[channel, window, comparison] = WindowFigures(
                    counters, kpis(counters), hourly
                )
    for channel, channel_totals in sorted(totals.items()):
        channels[channel] = ChannelSnapshot(
            channel=channel,
            totals=channel_totals,
            windows={
                window: Comparison(
                    current=figures[channel, window, "current"],
                    day_earlier=figures[channel, window, "day_earlier"],
                    week_earlier=figures[channel, window, "week_earlier"],
                )
                for window in WINDOWS
            },
        )
    return Snapshot(taken_at=taken_at, channels=channels)
