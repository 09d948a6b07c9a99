"""The period report: which days (or minutes) a request covers, and its rows, totals and changes.

Pure: `parse_request` turns query parameters into a `ReportRequest` (or `ReportError` naming the
parameter), `day_buckets` says which day and month buckets hold a period, the store sums them
into `Counters` per row, and `build_report` makes the JSON-ready document the read API serves
and `adpulse report --json` prints (`report_csv` its CSV).

Periods are local dates of the reporting time zone, inclusive; the windows and what each
comparison compares with are described in `stream.report_periods`.

Grouped by acquisition channel (`build_acquisition_report`), rows are monthly customer cohorts
(`stream.customers`): the period is widened to the whole months it touches (customers are kept
per acquisition month), and compared with whole months.

Money is rounded to the currency's minor unit, ratios to 4 significant digits; a figure whose
denominator is zero is None (null). A change is (value - compared) / compared.

By concern: `stream.report_periods` (the request, windows, comparisons and a period's buckets),
`stream.report_buckets` (summing the buckets read), `stream.report_figures` (figures, rounding,
changes), `stream.report_cohorts` (by acquisition channel); here the document and its CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

from adpulse.core.currencies import minor_unit
from stream.kpi import Counters
from stream.report_buckets import RowKey, row_key, sum_buckets
from stream.report_cohorts import (
    ACQUISITION_FIGURES,
    Cohort,
    acquisition_figures,
    build_acquisition_report,
    cohort_months,
    describe_cohorts,
    month_cohorts,
    sum_cohorts,
)
from stream.report_figures import (
    FIGURES,
    LOWER_IS_BETTER,
    MONEY,
    NEITHER_BETTER,
    Exact,
    Figures,
    figure_row,
    figures,
    period_figures,
)
from stream.report_periods import (
    COMPARISONS,
    DAY_WINDOWS,
    FORMATS,
    GROUPS,
    MAX_DAYS,
    MINUTE_WINDOWS,
    WINDOWS,
    Period,
    ReportError,
    ReportRequest,
    day_buckets,
    minute_buckets,
    parse_request,
    previous_period,
    previous_year,
    window_period,
)

# Every name the report's readers import from here, wherever it is declared.
__all__ = [
    "ACQUISITION_FIGURES",
    "COMPARISONS",
    "DAY_WINDOWS",
    "FIGURES",
    "FORMATS",
    "GROUPS",
    "LOWER_IS_BETTER",
    "MAX_DAYS",
    "MINUTE_WINDOWS",
    "MONEY",
    "NEITHER_BETTER",
    "WINDOWS",
    "Cohort",
    "Exact",
    "Figures",
    "Period",
    "ReportError",
    "ReportRequest",
    "RowKey",
    "acquisition_figures",
    "build_acquisition_report",
    "build_report",
    "cohort_months",
    "day_buckets",
    "describe_cohorts",
    "figures",
    "minute_buckets",
    "month_cohorts",
    "parse_request",
    "previous_period",
    "previous_year",
    "report_csv",
    "row_key",
    "sum_buckets",
    "sum_cohorts",
    "window_period",
]


def build_report(
    request: ReportRequest,
    sums: Mapping[str, Mapping[RowKey, Counters]],
    *,
    currency: str,
    timezone: str,
) -> dict[str, Any]:
    """The report document: `sums` maps "current" and each comparison to Counters per row.

    Rows are sorted by spend (most first), then revenue, then name; the totals row sums the
    rows, its ratios come from the sums, and its conversion rate counts the conversions of rows
    with clicks only.
    """
    periods = ["current", *request.comparisons]
    empty = Counters()
    keys = sorted({key for period in periods for key in sums.get(period, {})}, key=_name_order)
    digits = minor_unit(currency)
    rows: list[tuple[tuple[int, int], dict[str, Any]]] = []
    totals = {period: empty for period in periods}
    with_clicks = dict.fromkeys(periods, 0)
    by_period = [sums.get(period, {}) for period in periods]
    # Counters -> its figures, by identity: a period compared twice (the previous period of a
    # year is the previous year) and the empty Counters of missing rows are computed once.
    computed: dict[int, Figures] = {}
    for key in keys:
        row_figures: list[Figures] = []
        for period, of_period in zip(periods, by_period, strict=True):
            counters = of_period.get(key, empty)
            done = computed.get(id(counters))
            if done is None:
                exact = figures(counters)
                done = computed[id(counters)] = period_figures(exact, digits)
            row_figures.append(done)
            totals[period] = totals[period] + counters
            if counters.clicks:
                with_clicks[period] += counters.conversions
        channel, campaign = key
        row: dict[str, Any] = {"channel": channel}
        if request.group_by == "campaign":
            row["campaign"] = campaign or None
        current = sums.get("current", {}).get(key, empty)
        rows.append(
            (
                (-current.spend_micros, -current.revenue_micros),
                row | figure_row(row_figures, periods[1:]),
            )
        )
    rows.sort(key=lambda item: item[0])  # stable: names break ties in their sorted order
    total_exact = [figures(totals[period], with_clicks[period]) for period in periods]
    document: dict[str, Any] = request.heading(currency, timezone) | {
        "figures": list(FIGURES),
        "rows": [row for _, row in rows],
        "totals": figure_row([period_figures(exact, digits) for exact in total_exact], periods[1:]),
    }
    return document


def _name_order(key: RowKey) -> tuple[str, str]:
    return key[0], key[1] or ""


def report_csv(document: Mapping[str, Any]) -> str:
    """The report as CSV: one line per row and a last "total" line; each figure's compared
    values and changes in columns of their own."""
    comparisons = list(document["compare"])
    by_campaign = document["group_by"] == "campaign"
    first = "acquisition_channel" if document["group_by"] == "acquisition_channel" else "channel"
    header = [first, *(["campaign"] if by_campaign else [])]
    columns: list[tuple[str, str]] = []
    for name in document["figures"]:
        columns.append((name, "value"))
        for comparison in comparisons:
            columns += ((name, comparison), (name, f"{comparison}_change"))
    header += [name if part == "value" else f"{name}_{part}" for name, part in columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    lines: Iterable[tuple[list[str], Mapping[str, Any]]] = [
        ([row["channel"], *([row.get("campaign") or ""] if by_campaign else [])], row)
        for row in document["rows"]
    ]
    total = (["total", *([""] if by_campaign else [])], document["totals"])
    for names, row in [*lines, total]:
        writer.writerow([*names, *(_csv_value(row[name][part]) for name, part in columns)])
    return out.getvalue()


def _csv_value(value: int | float | None) -> str:
    return "" if value is None else str(value)
