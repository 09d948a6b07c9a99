"""The Prometheus view of the KPI store: one collector that reads a snapshot on every scrape.

Counters come from the lifetime totals, so `rate()` and `increase()` work on them; the ratios
are gauges per window. `channel` is the only business label and its cardinality is capped: the
channels with the most events keep their own series, the rest are summed into "other" (sums of
counters first, ratios of the sums after, so "other" is exact too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream.advice_settings import AdviceOptions, SpikeSpan
from stream.customers import HORIZON_DAYS, CohortValue
from stream.days import month_number
from stream.kpi import MICROS, WINDOWS, Counters, Snapshot, kpis

if TYPE_CHECKING:
    from stream.advice import ChannelEvidence
    from stream.evidence import HourReading

log = logging.getLogger(__name__)

OTHER: Final = "other"
CURRENCY_INFO: Final = "adpulse_reporting_currency"
"""An info metric (`{name}_info{currency="EUR"} 1`): the dashboard's money panels name the
currency from it, since Grafana's units cannot follow a setting."""
RATIOS: Final[Mapping[str, tuple[str, str]]] = {
    "cpa": ("cpa", "Cost per acquisition (spend / conversions), reporting currency"),
    "cpc": ("cpc", "Cost per click (spend / clicks), reporting currency"),
    "conversion_rate": ("conversion_rate", "Conversions / clicks"),
    "roas": ("roas", "Return on ad spend (revenue / spend)"),
    "romi": ("romi", "Return on marketing investment ((revenue - spend) / spend)"),
    "aov": ("aov", "Average order value (revenue / conversions), reporting currency"),
    "gross_roas": ("gross_roas", "Return on ad spend on every order as first reported"),
    # The funnel: clicks -> leads -> sales.
    "cpl": ("cpl", "Cost per lead (spend / leads), reporting currency"),
    "lead_rate": ("lead_rate", "Leads / clicks"),
    "lead_to_sale_rate": ("lead_to_sale_rate", "Conversions / leads"),
    "cac": ("cac", "Customer acquisition cost (spend / new customers), reporting currency"),
}
# Orders now in a status other than approved (`stream.orders`): a closed set of label values.
ORDER_STATUSES: Final[Mapping[str, tuple[str, str]]] = {
    "pending": ("pending", "pending_micros"),
    "declined": ("declined", "declined_micros"),
    "refunded": ("refunded", "refunded_micros"),
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
        events = totals.clicks + totals.redemptions + totals.conversions + totals.leads
        return (-events, figure.channel)

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
    # Counters only grow, so these two count every order once as first reported (gross); what
    # refunds and declines take back out is in the gauges below.
    revenue = CounterMetricFamily(
        "adpulse_revenue",
        "Revenue from conversions as first reported (gross), reporting currency",
        labels=["channel"],
    )
    net_revenue = GaugeMetricFamily(
        "adpulse_net_revenue",
        "Revenue of the orders now pending or approved, at their current value (lifetime)",
        labels=["channel"],
    )
    net_conversions = GaugeMetricFamily(
        "adpulse_net_conversions",
        "Orders now pending or approved (lifetime)",
        labels=["channel"],
    )
    new_customers = CounterMetricFamily(
        "adpulse_new_customers", "Customers acquired through the channel", labels=["channel"]
    )
    repeat_sales = CounterMetricFamily(
        "adpulse_repeat_sales", "Conversions of customers acquired before", labels=["channel"]
    )
    orders = GaugeMetricFamily(
        "adpulse_orders", "Orders now in a status (lifetime)", labels=["channel", "status"]
    )
    order_amounts = GaugeMetricFamily(
        "adpulse_order_amount",
        "Value of the orders now in a status (lifetime), reporting currency",
        labels=["channel", "status"],
    )
    bot_clicks = CounterMetricFamily(
        "adpulse_bot_clicks",
        "Clicks taken as a bot's (user agent), by channel: counted apart, in no KPI",
        labels=["channel"],
    )
    ratios = {
        name: GaugeMetricFamily(f"adpulse_{metric}", help_text, labels=["channel", "window"])
        for name, (metric, help_text) in RATIOS.items()
    }
    for figure in figures:
        totals = figure.totals
        events.add_metric([figure.channel, "click"], totals.clicks)
        events.add_metric([figure.channel, "redemption"], totals.redemptions)
        events.add_metric([figure.channel, "conversion"], totals.gross_conversions)
        events.add_metric([figure.channel, "lead"], totals.leads)
        bot_clicks.add_metric([figure.channel], totals.bot_clicks)
        if totals.calls:
            # Calls only where a channel has any: most channels are never called.
            events.add_metric([figure.channel, "call"], totals.calls)
            events.add_metric([figure.channel, "answered_call"], totals.answered_calls)
            events.add_metric([figure.channel, "missed_call"], totals.calls - totals.answered_calls)
        spend.add_metric([figure.channel], totals.spend_micros / MICROS)
        revenue.add_metric([figure.channel], totals.gross_revenue_micros / MICROS)
        net_revenue.add_metric([figure.channel], totals.revenue_micros / MICROS)
        net_conversions.add_metric([figure.channel], totals.conversions)
        new_customers.add_metric([figure.channel], totals.new_customers)
        repeat_sales.add_metric([figure.channel], totals.repeat_sales)
        for status, (count, amount) in ORDER_STATUSES.items():
            orders.add_metric([figure.channel, status], getattr(totals, count))
            order_amounts.add_metric([figure.channel, status], getattr(totals, amount) / MICROS)
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
    yield net_revenue
    yield net_conversions
    yield new_customers
    yield repeat_sales
    yield orders
    yield order_amounts
    yield bot_clicks
    yield from ratios.values()


LTV_MONTHS: Final = 12
"""The LTV gauge sums the cohorts acquired in this many local months, the current one included."""


def cohort_months(today: date, count: int = LTV_MONTHS) -> list[int]:
    """YYYYMM of the `count` local months up to and including `today`'s, newest first.

    >>> cohort_months(date(2026, 2, 14), 3)
    [202602, 202601, 202512]
    """
    months = []
    year, month = today.year, today.month
    for _ in range(count):
        months.append(month_number(date(year, month, 1)))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months


def merge_cohorts(
    cohorts: Iterable[Mapping[str, CohortValue]], max_channels: int
) -> dict[str, CohortValue]:
    """The cohorts summed per acquisition channel: at most `max_channels` channels, those with
    the most customers, the rest summed into "other" (sums first, so its LTV is exact too)."""
    customers: dict[str, int] = {}
    revenue: dict[str, dict[int, int]] = {}
    for cohort in cohorts:
        for channel, value in cohort.items():
            customers[channel] = customers.get(channel, 0) + value.customers
            sums = revenue.setdefault(channel, {})
            for days, micros in value.revenue_micros.items():
                sums[days] = sums.get(days, 0) + micros
    ranked = sorted(customers, key=lambda channel: (-customers[channel], channel))
    kept = ranked
    if len(ranked) > max_channels:
        kept = [channel for channel in ranked[: max_channels - 1] if channel != OTHER]
    merged = {channel: CohortValue(customers[channel], revenue[channel]) for channel in kept}
    folded = [channel for channel in ranked if channel not in merged]
    if folded:
        other_revenue = {
            days: sum(revenue[channel].get(days, 0) for channel in folded) for days in HORIZON_DAYS
        }
        merged[OTHER] = CohortValue(sum(customers[c] for c in folded), other_revenue)
    return merged


class LtvCollector(Collector):
    """Lifetime value per acquisition channel, from the cohorts of the last `LTV_MONTHS` local
    months (`read_cohorts` returns them, each as `KpiStore.cohort` reads it); never raises into
    the scrape (the KPI collector reports Redis's state)."""

    def __init__(
        self,
        read_cohorts: Callable[[], Iterable[Mapping[str, CohortValue]]],
        *,
        max_channels: int = 50,
    ) -> None:
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self.read_cohorts = read_cohorts
        self.max_channels = max_channels

    def describe(self) -> Iterator[Metric]:
        return iter([self._family()])

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "adpulse_ltv",
            "Lifetime value: net revenue per customer acquired through the channel, of the "
            "orders within the horizon of their acquisition, over the customers acquired in the "
            f"last {LTV_MONTHS} local months (this one included: young cohorts' horizons are not "
            "over yet, so it grows), reporting currency",
            labels=["channel", "horizon"],
        )

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        try:
            cohorts = list(self.read_cohorts())
        except Exception as error:  # a scrape must answer whatever the store does
            log.debug("cannot read the cohorts for the LTV: %s", error)
            yield family
            return
        for channel, value in merge_cohorts(cohorts, self.max_channels).items():
            for days in HORIZON_DAYS:
                ltv = value.ltv(days)
                # No customers acquired: no value, the series is absent.
                if ltv is not None:
                    family.add_metric([channel, f"{days}d"], float(ltv))
        yield family


HourBuckets = Mapping[int, Mapping[str, Counters]]
"""Unix hour -> channel -> Counters, as `KpiStore.lag_buckets` reads them."""
NOWCAST_WINDOWS: Final[Mapping[str, int]] = {"1h": 1, "24h": 24}
"""Nowcast window -> whole hours before the current one."""


class AdviceCollector(Collector):
    """The nowcast and the budget advice per channel, from the hour buckets, on every scrape.

    `read_hours` returns the hour buckets before the current hour with their delay bins
    (`stream.evidence.HourReading`, `reading_hours` of them). Only the
    `max_channels` channels with the most spend in the last day get series (advice for a sum of
    channels would mean nothing); a failed read yields no series (the KPI collector reports
    Redis's state).
    """

    def __init__(
        self,
        read_hours: Callable[[], HourReading],
        *,
        max_channels: int = 50,
        options: AdviceOptions | None = None,
        spike: SpikeSpan | None = None,
    ) -> None:
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self.read_hours = read_hours
        self.max_channels = max_channels
        self.options = options or AdviceOptions()
        self.spike = spike or SpikeSpan()

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "adpulse_conversions_nowcast",
                "Conversions of the window's clicks: counted plus those still expected",
                labels=["channel", "window"],
            ),
            GaugeMetricFamily(
                "adpulse_conversions_counted",
                "Conversions of the window's clicks counted so far (the nowcast's seen part)",
                labels=["channel", "window"],
            ),
            GaugeMetricFamily(
                "adpulse_conversions_usual_low",
                "Fewest conversions the window's clicks would have brought by now at the "
                "channel's usual rate (1 % quantile, delays counted); more counted is normal",
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
                f"P(CPA of {self.spike.describe()}), stream.posterior.SpikeRule",
                labels=["channel"],
            ),
        )

    def collect(self) -> Iterator[Metric]:
        try:
            reading = self.read_hours()
        except Exception as error:  # a scrape must answer whatever the store does
            log.debug("cannot read the hour buckets for the nowcast: %s", error)
            yield from self._families()
            return
        try:
            families = self._fill(reading)
        except (ArithmeticError, ValueError) as error:
            # Figures the statistics cannot digest must not take the KPI series down with them.
            log.error("cannot compute the nowcast and advice: %r", error)
            families = self._families()
        yield from families

    def _fill(self, reading: HourReading) -> tuple[GaugeMetricFamily, ...]:
        from stream.advice import advise
        from stream.evidence import (
            BASELINE_HOURS,
            WINDOW_HOURS,
            evidence_from_hours,
            minute_spike_evidence,
        )
        from stream.nowcast import usual_low
        from stream.posterior import SpikeRule

        families = self._families()
        conversions, counted, low, cpa, share, spike = families

        def evidence_from(
            window_hours: int, baseline_hours: int = BASELINE_HOURS
        ) -> list[ChannelEvidence]:
            return evidence_from_hours(
                reading.hours,
                reading.now,
                window_hours=window_hours,
                baseline_hours=baseline_hours,
                delays=reading.delays,
                lookback_hours=self.options.lookback_hours,
                target_cpa=self.options.target_cpa,
                target_roas=self.options.target_roas,
            )

        evidence = evidence_from(WINDOW_HOURS)
        kept = {
            item.channel
            for item in sorted(evidence, key=lambda item: -item.window.cost)[: self.max_channels]
        }
        for window, length in NOWCAST_WINDOWS.items():
            for item in evidence_from(length):
                if item.channel not in kept:
                    continue
                expected = item.expected_conversions
                conversions.add_metric([item.channel, window], expected)
                counted.add_metric([item.channel, window], item.window.seen)
                fewest = usual_low(item.baseline, item.window)
                if fewest is not None:
                    low.add_metric([item.channel, window], fewest)
                if expected > 0 and item.window.cost > 0:
                    cpa.add_metric([item.channel, window], item.window.cost / expected)
        kept_evidence = [item for item in evidence if item.channel in kept]
        for recommendation in advise(kept_evidence, self.options.rules):
            share.add_metric([recommendation.channel], recommendation.next_share)
        rule = SpikeRule()
        if self.spike.hourly:
            recent = evidence_from(self.spike.window // 60, self.spike.baseline // 60)
        else:
            recent = minute_spike_evidence(reading, self.spike.window, self.spike.baseline)
        if not self.spike.hourly:
            # Read in minutes (the dev stack): channels young enough to have no whole hour yet.
            ranked = sorted(recent, key=lambda item: -item.window.cost)
            kept = {item.channel for item in ranked[: self.max_channels]}
        for item in recent:
            if item.channel in kept and item.baseline is not None:
                spike.add_metric([item.channel], rule.probability(item.window, item.baseline))
        return families


__all__ = ["AdviceCollector", "ChannelFigures", "KpiCollector", "LtvCollector", "cap_channels"]
