"""Opt-in Prometheus series per (channel, campaign): this month's counters, capped.

`channel` stays Prometheus's business label; campaign series exist only when the exporter is
asked for them (``ADPULSE_EXPORTER_CAMPAIGN_SERIES``), because campaign names come from the
events and each one is a series in Prometheus. They are read from the current local month's
campaign bucket (``mc:{month}``, `stream.keys`), one HGETALL per scrape, so they are
month-to-date counters: each restarts at the first local midnight of a month, which its
``_created`` sample states and which ``rate()`` and ``increase()`` read as a counter reset.

At most ``ADPULSE_EXPORTER_MAX_CAMPAIGN_SERIES`` campaigns keep series of their own, the
busiest this month; the others of each channel are summed into ``campaign="other"`` (exact: sums
of counters) and counted in ``adpulse_exporter_campaigns_folded``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream.keys import OTHER_CAMPAIGN
from stream.kpi import MICROS, Counters

log = logging.getLogger(__name__)

DEFAULT_MAX_CAMPAIGN_SERIES: Final = 200

CampaignSums = Mapping[tuple[str, str], Counters]
"""(channel, campaign) -> this month's Counters; campaign "" is "no campaign"."""


@dataclass(frozen=True, slots=True)
class MonthCampaigns:
    """What one scrape read: the local month's start (Unix seconds) and its campaigns."""

    month_start: int
    campaigns: CampaignSums


def cap_campaigns(
    campaigns: CampaignSums, max_series: int
) -> tuple[dict[tuple[str, str], Counters], int]:
    """At most `max_series` named campaigns (the busiest by clicks, redemptions and
    conversions, then spend), the rest of each channel summed into its "other"; and how many
    campaigns were summed so (the worker's own "other" is not counted: it was never named)."""
    if max_series < 1:
        raise ValueError("max_series must be at least 1")

    def activity(item: tuple[tuple[str, str], Counters]) -> tuple[int, int, str, str]:
        (channel, campaign), counters = item
        events = counters.clicks + counters.redemptions + counters.conversions
        return (-events, -counters.spend_micros, channel, campaign)

    named = sorted(
        (item for item in campaigns.items() if item[0][1] != OTHER_CAMPAIGN), key=activity
    )
    kept: dict[tuple[str, str], Counters] = dict(named[:max_series])
    named_kept = set(kept)
    folded = 0
    for (channel, campaign), counters in campaigns.items():
        if (channel, campaign) in named_kept:
            continue
        if campaign != OTHER_CAMPAIGN:
            folded += 1
        key = (channel, OTHER_CAMPAIGN)
        kept[key] = kept.get(key, Counters()) + counters
    return kept, folded


class CampaignCollector(Collector):
    """Reads the month's campaigns per scrape through `read_month`; never raises into it (the
    KPI collector reports Redis's state)."""

    def __init__(
        self,
        read_month: Callable[[], MonthCampaigns],
        *,
        max_series: int = DEFAULT_MAX_CAMPAIGN_SERIES,
    ) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.read_month = read_month
        self.max_series = max_series

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(0.0))

    def _families(
        self, created: float
    ) -> tuple[CounterMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        labels = ["channel", "campaign"]
        return (
            CounterMetricFamily(
                "adpulse_campaign_events",
                "Events counted this local month, by channel, campaign and type (opt-in: "
                "ADPULSE_EXPORTER_CAMPAIGN_SERIES); restarts each month",
                labels=[*labels, "type"],
            ),
            CounterMetricFamily(
                "adpulse_campaign_spend",
                "Ad spend this local month, reporting currency, by channel and campaign",
                labels=labels,
            ),
            CounterMetricFamily(
                "adpulse_campaign_revenue",
                "Revenue this local month, reporting currency, by channel and campaign",
                labels=labels,
            ),
        )

    def collect(self) -> Iterator[Metric]:
        folded_gauge = GaugeMetricFamily(
            "adpulse_exporter_campaigns_folded",
            'Campaigns summed into campaign="other" by the series cap at the last scrape '
            "(ADPULSE_EXPORTER_MAX_CAMPAIGN_SERIES)",
        )
        try:
            month = self.read_month()
        except Exception as error:  # a scrape must answer whatever the store does
            log.debug("cannot read this month's campaigns: %s", error)
            yield from self._families(0.0)
            return
        kept, folded = cap_campaigns(month.campaigns, self.max_series)
        created = float(month.month_start)
        events, spend, revenue = self._families(created)
        for (channel, campaign), counters in sorted(kept.items()):
            labels = [channel, campaign]
            for kind, count in (
                ("click", counters.clicks),
                ("redemption", counters.redemptions),
                ("conversion", counters.conversions),
            ):
                events.add_metric([*labels, kind], count, created=created)
            spend.add_metric(labels, counters.spend_micros / MICROS, created=created)
            revenue.add_metric(labels, counters.revenue_micros / MICROS, created=created)
        folded_gauge.add_metric([], folded)
        yield events
        yield spend
        yield revenue
        yield folded_gauge
