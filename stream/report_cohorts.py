"""The period report grouped by acquisition channel: rows are monthly customer cohorts
(`stream.customers`), read over the whole months a period touches (customers are kept per
acquisition month), and compared with whole months. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import add
from typing import Any, Final

from adpulse.core.currencies import minor_unit
from stream.customers import HORIZON_DAYS, CohortValue
from stream.days import month_number, next_month
from stream.kpi import MICROS
from stream.report_figures import Exact, Figures, figure_row, period_figures, ratio
from stream.report_periods import Period, ReportRequest

ACQUISITION_FIGURES: Final = (
    "new_customers",
    "spend",
    "cac",
    *(f"cohort_revenue_{days}" for days in HORIZON_DAYS),
    *(f"ltv_{days}" for days in HORIZON_DAYS),
    *(f"ltv_cac_{days}" for days in HORIZON_DAYS),
)
"""The figures of a row grouped by acquisition channel (`build_acquisition_report`)."""


@dataclass(frozen=True, slots=True)
class Cohort:
    """One acquisition channel over cohort months: the customers it acquired, its spend in
    those months, and those customers' net revenue (micros) within each of `HORIZON_DAYS`."""

    customers: int = 0
    spend_micros: int = 0
    revenue_micros: tuple[int, ...] = (0,) * len(HORIZON_DAYS)

    def __add__(self, other: Cohort) -> Cohort:
        return Cohort(
            self.customers + other.customers,
            self.spend_micros + other.spend_micros,
            tuple(map(add, self.revenue_micros, other.revenue_micros)),
        )


def cohort_months(period: Period) -> list[int]:
    """YYYYMM of every month the period touches: a period grouped by acquisition channel is
    read as these whole monthly cohorts (customers are kept per acquisition month)."""
    months = []
    month = period.first.replace(day=1)
    while month <= period.last:
        months.append(month_number(month))
        month = next_month(month)
    return months


def describe_cohorts(period: Period) -> dict[str, str]:
    """The cohort months a period is read as: {"from": "YYYY-MM", "to": "YYYY-MM"}."""
    return {
        "from": period.first.strftime("%Y-%m"),
        "to": period.last.strftime("%Y-%m"),
    }


def month_cohorts(
    spend_fields: Mapping[str, str], cohorts: Mapping[str, CohortValue]
) -> dict[str, Cohort]:
    """Per acquisition channel, one month's Cohort: its spend from the month's per-channel
    bucket (fields ``{channel}:s``) and its cohort (`stream.customers.cohort_values`)."""
    spend: dict[str, int] = {}
    for name, value in spend_fields.items():
        channel, _, counter = name.rpartition(":")
        if counter == "s" and channel and "\t" not in channel and int(value):
            spend[channel] = int(value)
    return {
        channel: Cohort(
            cohorts[channel].customers if channel in cohorts else 0,
            spend.get(channel, 0),
            tuple(
                cohorts[channel].revenue_micros.get(days, 0) if channel in cohorts else 0
                for days in HORIZON_DAYS
            ),
        )
        for channel in spend.keys() | cohorts.keys()
    }


def sum_cohorts(months: Iterable[Mapping[str, Cohort]]) -> dict[str, Cohort]:
    """The Cohorts of several months summed per acquisition channel."""
    sums: dict[str, Cohort] = {}
    for month in months:
        for channel, cohort in month.items():
            sums[channel] = sums.get(channel, Cohort()) + cohort
    return sums


def acquisition_figures(cohort: Cohort) -> dict[str, int | Exact | None]:
    """A Cohort's figures: CAC = spend / new customers, LTV at N days = their net revenue
    within N days / new customers, LTV/CAC = that revenue / spend (missing without spend, as
    CAC is, or without customers)."""
    customers, spend = cohort.customers, cohort.spend_micros
    exact: dict[str, int | Exact | None] = {
        "new_customers": customers,
        "spend": (spend, MICROS),
        "cac": ratio(spend, customers * MICROS) if spend else None,
    }
    for days, revenue in zip(HORIZON_DAYS, cohort.revenue_micros, strict=True):
        exact[f"cohort_revenue_{days}"] = (revenue, MICROS)
        exact[f"ltv_{days}"] = ratio(revenue, customers * MICROS)
        exact[f"ltv_cac_{days}"] = ratio(revenue, spend) if customers else None
    return exact


def build_acquisition_report(
    request: ReportRequest,
    sums: Mapping[str, Mapping[str, Cohort]],
    *,
    currency: str,
    timezone: str,
) -> dict[str, Any]:
    """The report grouped by acquisition channel: `sums` maps "current" and each comparison to
    a Cohort per acquisition channel, over the whole months each period touches (named in the
    document's "cohorts"). Rows by spend (most first), then 365-day revenue, then name; the
    totals row sums the rows and its ratios come from the sums."""
    periods = ["current", *request.comparisons]
    digits = minor_unit(currency)
    empty = Cohort()
    channels = sorted({channel for period in periods for channel in sums.get(period, {})})
    current = sums.get("current", {})
    channels.sort(
        key=lambda name: (
            -current.get(name, empty).spend_micros,
            -current.get(name, empty).revenue_micros[-1],
        )
    )  # stable: names break ties in their sorted order
    totals = {period: empty for period in periods}
    rows = []
    for channel in channels:
        row_figures: list[Figures] = []
        for period in periods:
            cohort = sums.get(period, {}).get(channel, empty)
            totals[period] = totals[period] + cohort
            exact = acquisition_figures(cohort)
            row_figures.append(period_figures(exact, digits))
        rows.append(
            {"channel": channel} | figure_row(row_figures, periods[1:], ACQUISITION_FIGURES)
        )
    total_figures: list[Figures] = []
    for period in periods:
        exact = acquisition_figures(totals[period])
        total_figures.append(period_figures(exact, digits))
    every = {"current": request.period, **request.comparisons}
    return request.heading(currency, timezone) | {
        "requested_period": (request.requested or request.period).describe(),
        "cohorts": {name: describe_cohorts(period) for name, period in every.items()},
        "figures": list(ACQUISITION_FIGURES),
        "rows": rows,
        "totals": figure_row(total_figures, periods[1:], ACQUISITION_FIGURES),
    }
