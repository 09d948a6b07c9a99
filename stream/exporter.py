"""The Prometheus view of the KPI store: one collector that reads a snapshot on every scrape.

Counters come from the lifetime totals, so `rate()` and `increase()` work on them; the ratios
are gauges per window. `channel` is the only business label and its cardinality is capped: the
channels with the most events keep their own series, the rest are summed into "other" (sums of
counters first, ratios of the sums after, so "other" is exact too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream.kpi import MICROS, WINDOWS, Counters, Snapshot, kpis

log = logging.getLogger(__name__)

OTHER: Final = "other"
RATIOS: Final[Mapping[str, tuple[str, str]]] = {
    "cpa": ("cpa", "Cost per acquisition (spend / conversions), reporting currency"),
    "cpc": ("cpc", "Cost per click (spend / clicks), reporting currency"),
    "conversion_rate": ("conversion_rate", "Conversions / clicks"),
    "roas": ("roas", "Return on ad spend (revenue / spend)"),
    "romi": ("romi", "Return on marketing investment ((revenue - spend) / spend)"),
    "aov": ("aov", "Average order value (revenue / conversions), reporting currency"),
}


@dataclass(frozen=True, slots=True)
class ChannelFigures:
    """What the exporter shows of one channel (or of "other"): totals and current windows."""

    channel: str
    totals: Counters
    windows: Mapping[str, Counters]


def cap_channels(snapshot: Snapshot, max_channels: int) -> list[ChannelFigures]:
    """At most `max_channels` series: the busiest channels, the rest summed into "other".

    Busiest by lifetime events, which only grow, so a channel rarely changes sides; when one
    does, "other" drops by its share and Prometheus reads that as a counter reset.
    """
    if max_channels < 1:
        raise ValueError("max_channels must be at least 1")
    figures = [
        ChannelFigures(
            channel.channel,
            channel.totals,
            {window: channel.windows[window].current.counters for window in WINDOWS},
        )
        for channel in snapshot.channels.values()
    ]
    if len(figures) <= max_channels:
        return figures

    def activity(figure: ChannelFigures) -> tuple[int, str]:
        totals = figure.totals
        return (-(totals.clicks + totals.redemptions + totals.conversions), figure.channel)

    ranked = sorted(figures, key=activity)
    kept = [figure for figure in ranked[: max_channels - 1] if figure.channel != OTHER]
    folded = [figure for figure in ranked if figure not in kept]
    other = ChannelFigures(
        OTHER,
        sum((figure.totals for figure in folded), Counters()),
        {
            window: sum((figure.windows[window] for figure in folded), Counters())
            for window in WINDOWS
        },
    )
    return [*kept, other]


class ScrapeStats:
    def __init__(self) -> None:
        self.errors = 0
        self.last_duration = 0.0
        self.redis_up = 0


class KpiCollector(Collector):
    """Reads a snapshot per scrape through `read_snapshot`; never raises into the scrape."""

    def __init__(self, read_snapshot: Callable[[], Snapshot], *, max_channels: int = 50) -> None:
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self.read_snapshot = read_snapshot
        self.max_channels = max_channels
        self.stats = ScrapeStats()

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            snapshot = self.read_snapshot()
        except Exception as error:  # a scrape must answer whatever the store does
            self.stats.errors += 1
            if self.stats.redis_up:
                log.error("cannot read the KPI snapshot: %s", error)
            self.stats.redis_up = 0
            figures: list[ChannelFigures] = []
        else:
            if not self.stats.redis_up:
                log.info("reading the KPI snapshot from Redis")
            self.stats.redis_up = 1
            figures = cap_channels(snapshot, self.max_channels)
        self.stats.last_duration = time.perf_counter() - started
        yield from business_metrics(figures)
        yield from self._scrape_metrics()

    def _scrape_metrics(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "adpulse_exporter_scrape_duration_seconds",
            "Time the last scrape took to read the KPI snapshot",
            value=self.stats.last_duration,
        )
        yield CounterMetricFamily(
            "adpulse_exporter_scrape_errors",
            "Scrapes that could not read the KPI snapshot",
            value=self.stats.errors,
        )
        yield GaugeMetricFamily(
            "adpulse_exporter_redis_up",
            "1 when the last scrape read the KPI snapshot, 0 when Redis did not answer",
            value=self.stats.redis_up,
        )


def business_metrics(figures: list[ChannelFigures]) -> Iterator[Metric]:
    events = CounterMetricFamily(
        "adpulse_events",
        "Events counted, by attributed channel and type",
        labels=["channel", "type"],
    )
    spend = CounterMetricFamily("adpulse_spend", "Ad spend, reporting currency", labels=["channel"])
    revenue = CounterMetricFamily(
        "adpulse_revenue", "Revenue from conversions, reporting currency", labels=["channel"]
    )
    ratios = {
        name: GaugeMetricFamily(f"adpulse_{metric}", help_text, labels=["channel", "window"])
        for name, (metric, help_text) in RATIOS.items()
    }
    for figure in figures:
        totals = figure.totals
        events.add_metric([figure.channel, "click"], totals.clicks)
        events.add_metric([figure.channel, "redemption"], totals.redemptions)
        events.add_metric([figure.channel, "conversion"], totals.conversions)
        if totals.calls:
            # Calls only where a channel has any: most channels are never called.
            events.add_metric([figure.channel, "call"], totals.calls)
            events.add_metric([figure.channel, "answered_call"], totals.answered_calls)
            events.add_metric([figure.channel, "missed_call"], totals.calls - totals.answered_calls)
        spend.add_metric([figure.channel], totals.spend_micros / MICROS)
        revenue.add_metric([figure.channel], totals.revenue_micros / MICROS)
        for window, counters in figure.windows.items():
            values = kpis(counters)
            for name, family in ratios.items():
                value: Decimal | None = getattr(values, name)
                # A zero denominator has no value: the series is absent, never 0 or +Inf.
                if value is not None:
                    family.add_metric([figure.channel, window], float(value))
    yield events
    yield spend
    yield revenue
    yield from ratios.values()


HourBuckets = Mapping[int, Mapping[str, Counters]]
"""Unix hour -> channel -> Counters, as `KpiStore.hour_buckets` reads them."""
NOWCAST_WINDOWS: Final[Mapping[str, int]] = {"1h": 1, "24h": 24}
"""Nowcast window -> whole hours before the current one."""


class AdviceCollector(Collector):
    """The nowcast and the budget advice per channel, from the hour buckets, on every scrape.

    `read_hours` returns the current Unix hour and the buckets of the 8 days before it. Only the
    `max_channels` channels with the most spend in the last day get series (advice for a sum of
    channels would mean nothing); a failed read yields no series (the KPI collector reports
    Redis's state).
    """

    def __init__(
        self, read_hours: Callable[[], tuple[int, HourBuckets]], *, max_channels: int = 50
    ) -> None:
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self.read_hours = read_hours
        self.max_channels = max_channels

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(
        self,
    ) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "adpulse_conversions_nowcast",
                "Conversions of the window's clicks: counted plus those still expected",
                labels=["channel", "window"],
            ),
            GaugeMetricFamily(
                "adpulse_cpa_nowcast",
                "Spend over the nowcast of the window's conversions, reporting currency",
                labels=["channel", "window"],
            ),
            GaugeMetricFamily(
                "adpulse_advice_budget_share",
                "Recommended share of the next day's budget (0 to 1), see `adpulse advise`",
                labels=["channel"],
            ),
            GaugeMetricFamily(
                "adpulse_cpa_spike_probability",
                "P(CPA of the last 12 hours > 1.3x the 7 days before), stream.posterior.SpikeRule",
                labels=["channel"],
            ),
        )

    def collect(self) -> Iterator[Metric]:
        try:
            now_hour, hours = self.read_hours()
        except Exception as error:  # a scrape must answer whatever the store does
            log.debug("cannot read the hour buckets for the nowcast: %s", error)
            yield from self._families()
            return
        try:
            families = self._fill(now_hour, hours)
        except (ArithmeticError, ValueError) as error:
            # Figures the statistics cannot digest must not take the KPI series down with them.
            log.error("cannot compute the nowcast and advice: %r", error)
            families = self._families()
        yield from families

    def _fill(
        self, now_hour: int, hours: HourBuckets
    ) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        from stream.advice import advise
        from stream.evidence import evidence_from_hours
        from stream.posterior import SpikeRule

        families = self._families()
        conversions, cpa, share, spike = families
        evidence = evidence_from_hours(hours, now_hour)
        kept = {
            item.channel
            for item in sorted(evidence, key=lambda item: -item.window.cost)[: self.max_channels]
        }
        for window, length in NOWCAST_WINDOWS.items():
            for item in evidence_from_hours(hours, now_hour, window_hours=length):
                if item.channel not in kept:
                    continue
                expected = item.expected_conversions
                conversions.add_metric([item.channel, window], expected)
                if expected > 0 and item.window.cost > 0:
                    cpa.add_metric([item.channel, window], item.window.cost / expected)
        for recommendation in advise([item for item in evidence if item.channel in kept]):
            share.add_metric([recommendation.channel], recommendation.next_share)
        rule = SpikeRule()
        recent = evidence_from_hours(
            hours, now_hour, window_hours=rule.window_hours, baseline_hours=rule.baseline_hours
        )
        for item in recent:
            if item.channel in kept and item.baseline is not None:
                spike.add_metric([item.channel], rule.probability(item.window, item.baseline))
        return families


__all__ = ["AdviceCollector", "ChannelFigures", "KpiCollector", "cap_channels"]
