"""Counter sums over rolling windows, the KPIs computed from them, and the snapshot types.

Pure: `snapshot_reads` says which buckets a snapshot needs, the store fetches them, and
`build_snapshot` turns them into a `Snapshot`. A KPI whose denominator is zero is None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Context, Decimal
from operator import attrgetter
from typing import Final

from stream.customers import NEW_CUSTOMERS, REPEAT_REVENUE, REPEAT_SALES
from stream.keys import (
    ANSWERED,
    BOT_CLICKS,
    CALLS,
    CLICKS,
    CONVERSIONS,
    DELAY,
    LEADS,
    REDEMPTIONS,
    REVENUE,
    SPEND,
)
from stream.orders import (
    DECLINED_AMOUNT,
    DECLINED_COUNT,
    GROSS_CONVERSIONS,
    GROSS_REVENUE,
    NET_REVENUE_CHANGE,
    PENDING_AMOUNT,
    PENDING_COUNT,
    REFUNDED_AMOUNT,
    REFUNDED_COUNT,
    RESTATEMENTS,
)

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
    """Counts and money (integer micros of the reporting currency) of one channel and period.

    `bot_clicks`: clicks the edge took as a bot's, never in `clicks` nor in any KPI."""

    clicks: int = 0
    redemptions: int = 0
    conversions: int = 0
    """Net: orders now pending or approved (`stream.orders`); every KPI reads these two."""
    revenue_micros: int = 0
    spend_micros: int = 0
    # Orders (`stream.orders`): gross as first reported, the counts and amounts by status, and
    # the restatements counted at their own time with the change of net revenue they made.
    gross_conversions: int = 0
    gross_revenue_micros: int = 0
    pending: int = 0
    pending_micros: int = 0
    declined: int = 0
    declined_micros: int = 0
    refunded: int = 0
    refunded_micros: int = 0
    restatements: int = 0
    net_revenue_change_micros: int = 0
    # Customers (`stream.customers`): acquired through the channel, and its repeat sales.
    new_customers: int = 0
    repeat_sales: int = 0
    repeat_revenue_micros: int = 0
    # The funnel: leads, and the clicks taken as a bot's (counted apart, in no KPI).
    leads: int = 0
    bot_clicks: int = 0

    # Calls to tracked numbers (issue 14); a qualified call is also a lead (counter `l`).
    calls: int = 0
    answered_calls: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


_values: Final = attrgetter(*(f.name for f in fields(Counters)))
_FIELD_NAMES: Final[Mapping[str, str]] = {
    CLICKS: "clicks",
    REDEMPTIONS: "redemptions",
    CONVERSIONS: "conversions",
    REVENUE: "revenue_micros",
    SPEND: "spend_micros",
    GROSS_CONVERSIONS: "gross_conversions",
    GROSS_REVENUE: "gross_revenue_micros",
    PENDING_COUNT: "pending",
    PENDING_AMOUNT: "pending_micros",
    DECLINED_COUNT: "declined",
    DECLINED_AMOUNT: "declined_micros",
    REFUNDED_COUNT: "refunded",
    REFUNDED_AMOUNT: "refunded_micros",
    RESTATEMENTS: "restatements",
    NET_REVENUE_CHANGE: "net_revenue_change_micros",
    NEW_CUSTOMERS: "new_customers",
    REPEAT_SALES: "repeat_sales",
    REPEAT_REVENUE: "repeat_revenue_micros",
    LEADS: "leads",
    BOT_CLICKS: "bot_clicks",
    CALLS: "calls",
    ANSWERED: "answered_calls",
}

_NAMES: Final = tuple(f.name for f in fields(Counters))
COUNTER_POSITIONS: Final[Mapping[str, int]] = {
    letter: _NAMES.index(name) for letter, name in _FIELD_NAMES.items()
}
"""Counter letter -> the position of its figure in `Counters`."""


def counters_by_channel(fields: Mapping[str, int | str]) -> dict[str, Counters]:
    """Parse one bucket hash (``{channel}:{counter}`` -> value) into Counters per channel."""
    found: dict[str, dict[str, int]] = {}
    for name, value in fields.items():
        channel, _, counter = name.rpartition(":")
        attribute = _FIELD_NAMES.get(counter)
        if attribute is not None and channel:
            found.setdefault(channel, {})[attribute] = int(value)
    return {channel: Counters(**values) for channel, values in found.items()}


def delays_by_channel(fields: Mapping[str, int | str], bins: int) -> dict[str, tuple[int, ...]]:
    """The delay-bin counters of one bucket hash (``{channel}:t{bin}``, `stream.keys`
    "Delays"): channel -> conversions of the bucket's clicks per bin; bins past `bins` are
    left out (none are written)."""
    found: dict[str, list[int]] = {}
    for name, value in fields.items():
        channel, _, counter = name.rpartition(":")
        if not counter.startswith(DELAY) or not channel:
            continue
        index = counter[len(DELAY) :]
        if index.isdigit() and int(index) < bins:
            found.setdefault(channel, [0] * bins)[int(index)] = int(value)
    return {channel: tuple(values) for channel, values in found.items()}


@dataclass(frozen=True, slots=True)
class Kpis:
    """Money KPIs in units of the reporting currency; rates as plain ratios (0.05 = 5 %)."""

    cpa: Decimal | None
    cpc: Decimal | None
    conversion_rate: Decimal | None
    roas: Decimal | None
    romi: Decimal | None
    aov: Decimal | None
    # Beside the net KPIs above: the same on every order as first reported.
    gross_cpa: Decimal | None = None
    gross_roas: Decimal | None = None
    cac: Decimal | None = None
    """Customer acquisition cost: spend / new customers."""
    # The funnel: clicks -> leads -> sales, each step's rate, and the cost per lead.
    # (Repeat sales, the step after, come with the customers of issue 12.)
    cpl: Decimal | None = None
    lead_rate: Decimal | None = None
    lead_to_sale_rate: Decimal | None = None
    bot_share: Decimal | None = None
    """Of all clicks, those taken as a bot's."""


def _ratio(numerator: int, denominator: int) -> Decimal | None:
    if denominator == 0:
        return None
    return _CONTEXT.divide(Decimal(numerator), Decimal(denominator))


def kpis(counters: Counters) -> Kpis:
    """CPA, CPC, conversion rate, ROAS, ROMI and AOV of `counters`; the funnel's CPL (spend /
    leads), lead rate (leads / clicks) and lead-to-sale rate (conversions / leads); bot share.

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
        gross_cpa=_ratio(spend, counters.gross_conversions * MICROS),
        gross_roas=_ratio(counters.gross_revenue_micros, spend),
        cac=_ratio(spend, counters.new_customers * MICROS),
        cpl=_ratio(spend, counters.leads * MICROS),
        lead_rate=_ratio(counters.leads, counters.clicks),
        lead_to_sale_rate=_ratio(counters.conversions, counters.leads),
        bot_share=_ratio(counters.bot_clicks, counters.clicks + counters.bot_clicks),
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
