"""The period report: which days (or minutes) a request covers, and its rows, totals and changes.

Pure: `parse_request` turns query parameters into a `ReportRequest` (or `ReportError` naming the
parameter), `day_buckets` says which day and month buckets hold a period, the store sums them
into `Counters` per row, and `build_report` makes the JSON-ready document the read API serves
and `adpulse report --json` prints (`report_csv` its CSV).

Periods are local dates of the reporting time zone, inclusive. Windows: ``5m``, ``1h``, ``24h``
(the last minutes, from minute and hour buckets, by channel only); ``today``, ``yesterday``,
``7d`` and ``30d`` (the last 7 or 30 days, today included), ``mtd`` (this month so far),
``month`` (the last whole month), ``ytd`` (this year so far). ``previous_period`` is the period
of the same length just before; for whole calendar months, the months before; for ``mtd``, the
same days of the month before. ``previous_year``: the same dates a year earlier (29 February
becomes the 28th).

Grouped by acquisition channel (`build_acquisition_report`), rows are monthly customer cohorts
(`stream.customers`): the period is widened to the whole months it touches (customers are kept
per acquisition month), and compared with whole months.

Money is rounded to the currency's minor unit, ratios to 4 significant digits; a figure whose
denominator is zero is None (null). A change is (value - compared) / compared.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import chain, repeat
from math import floor, log10
from operator import add, sub
from typing import Any, Final

from adpulse.core.currencies import minor_unit
from stream.customers import HORIZON_DAYS, CohortValue
from stream.days import day_number, month_number, next_month
from stream.keys import DAY_RETENTION
from stream.kpi import COUNTER_POSITIONS, MICROS, Counters, window_buckets

MINUTE_WINDOWS: Final = {"5m": 5, "1h": 60, "24h": 1440}
DAY_WINDOWS: Final = ("today", "yesterday", "7d", "30d", "mtd", "month", "ytd")
WINDOWS: Final = (*MINUTE_WINDOWS, *DAY_WINDOWS)
COMPARISONS: Final = ("previous_period", "previous_year")
GROUPS: Final = ("channel", "campaign", "acquisition_channel")
FORMATS: Final = ("json", "csv")
ACQUISITION_FIGURES: Final = (
    "new_customers",
    "spend",
    "cac",
    *(f"cohort_revenue_{days}" for days in HORIZON_DAYS),
    *(f"ltv_{days}" for days in HORIZON_DAYS),
    *(f"ltv_cac_{days}" for days in HORIZON_DAYS),
)
"""The figures of a row grouped by acquisition channel (`build_acquisition_report`)."""
MAX_DAYS: Final = DAY_RETENTION.days
"""The longest period: what the day buckets keep."""

FIGURES: Final = (
    "clicks",
    "redemptions",
    "conversions",
    "revenue",
    "spend",
    "profit",
    "cpa",
    "cpc",
    "conversion_rate",
    "roas",
    "romi",
    "aov",
    # Orders (`stream.orders`): conversions, revenue and the KPIs above are net; gross beside.
    "gross_conversions",
    "gross_revenue",
    "gross_roas",
    "pending_orders",
    "declined_orders",
    "refunded_orders",
    "refunded_revenue",
    # Customers (`stream.customers`): CAC = spend / new customers.
    "new_customers",
    "cac",
    "repeat_sales",
    "repeat_revenue",
    # The funnel: clicks -> leads -> sales, and the clicks taken as a bot's.
    "leads",
    "cpl",
    "lead_rate",
    "lead_to_sale_rate",
    "bot_clicks",
    "bot_share",
)
MONEY: Final = frozenset(
    {"revenue", "spend", "profit", "cpa", "cpc", "aov", "gross_revenue", "refunded_revenue"}
    | {"cac", "repeat_revenue", "cpl"}
    | {f"{kind}_{days}" for kind in ("cohort_revenue", "ltv") for days in HORIZON_DAYS}
)
LOWER_IS_BETTER: Final = frozenset(
    {"cpa", "cpc", "declined_orders", "refunded_orders", "refunded_revenue", "cac"}
    | {"cpl", "bot_clicks", "bot_share"}
)
"""Figures whose fall is good news (the report colours changes by it)."""
NEITHER_BETTER: Final = frozenset({"spend", "pending_orders"})
"""Figures whose change is neither good nor bad news by itself."""

RowKey = tuple[str, str | None]
"""(channel, campaign); campaign None when grouped by channel."""


class ReportError(ValueError):
    """A bad request parameter: `parameter` names it, `reason` says what is accepted."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Period:
    """Local dates `first` to `last` inclusive; for a minute window also its minutes (Unix
    minutes, inclusive), which are what is read."""

    first: date
    last: date
    minutes: tuple[int, int] | None = None

    def describe(self) -> dict[str, str]:
        return {"from": self.first.isoformat(), "to": self.last.isoformat()}


@dataclass(frozen=True, slots=True)
class ReportRequest:
    period: Period
    window: str | None
    group_by: str
    comparisons: Mapping[str, Period]
    format: str = "json"
    requested: Period | None = None
    """The period asked for, when `period` was widened to whole months (by acquisition
    channel)."""


def _date(parameter: str, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ReportError(parameter, f"{text!r} is not a date YYYY-MM-DD") from None


def _year_earlier(day: date) -> date:
    if day.month == 2 and day.day == 29:
        return date(day.year - 1, 2, 28)
    return day.replace(year=day.year - 1)


def _month_end(day: date) -> date:
    return next_month(day.replace(day=1)) - timedelta(days=1)


def _whole_months(first: date, last: date) -> int:
    """How many calendar months [first, last] is, or 0 when it is not whole months."""
    if first.day != 1 or last != _month_end(last):
        return 0
    return (last.year - first.year) * 12 + last.month - first.month + 1


def _months_before(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def window_period(window: str, today: date, now_minute: int) -> Period:
    """The period of a named window ending now (`today` is the local date now)."""
    length = MINUTE_WINDOWS.get(window)
    if length is not None:
        return Period(today, today, (now_minute - length + 1, now_minute))
    if window == "today":
        return Period(today, today)
    if window == "yesterday":
        return Period(today - timedelta(days=1), today - timedelta(days=1))
    if window in ("7d", "30d"):
        return Period(today - timedelta(days=int(window[:-1]) - 1), today)
    if window == "mtd":
        return Period(today.replace(day=1), today)
    if window == "month":
        first = _months_before(today.replace(day=1), 1)
        return Period(first, _month_end(first))
    if window == "ytd":
        return Period(date(today.year, 1, 1), today)
    raise ReportError("window", f"{window!r} is not one of {', '.join(WINDOWS)}")


def previous_period(period: Period, window: str | None) -> Period:
    if period.minutes is not None:
        start, end = period.minutes
        length = end - start + 1
        return Period(period.first, period.last, (start - length, end - length))
    months = _whole_months(period.first, period.last)
    if months:
        first = _months_before(period.first, months)
        return Period(first, _month_end(_months_before(period.first, 1)))
    if window == "mtd":
        first = _months_before(period.first, 1)
        return Period(first, min(first.replace(day=period.last.day), _month_end(first)))
    days = (period.last - period.first).days + 1
    return Period(period.first - timedelta(days=days), period.first - timedelta(days=1))


def previous_year(period: Period) -> Period:
    return Period(_year_earlier(period.first), _year_earlier(period.last))


def parse_request(params: Mapping[str, str], today: date, now_minute: int) -> ReportRequest:
    """The request of query parameters `from`/`to` or `window`, `group_by`, `compare`, `format`.

    ReportError names the first bad parameter.
    """
    known = {"from", "to", "window", "group_by", "compare", "format"}
    for name in params:
        if name not in known:
            raise ReportError(name, f"unknown parameter; known: {', '.join(sorted(known))}")
    window = params.get("window")
    if window is not None and ("from" in params or "to" in params):
        raise ReportError("window", "give either window or from/to, not both")
    if window is not None:
        period = window_period(window, today, now_minute)
    elif "from" in params or "to" in params:
        if "from" not in params or "to" not in params:
            raise ReportError("from" if "from" not in params else "to", "from and to go together")
        first, last = _date("from", params["from"]), _date("to", params["to"])
        if last < first:
            raise ReportError("to", "must not be before from")
        if (last - first).days + 1 > MAX_DAYS:
            raise ReportError("to", f"a period is at most {MAX_DAYS} days")
        period = Period(first, last)
    else:
        window = "today"
        period = window_period(window, today, now_minute)
    group_by = params.get("group_by", "channel")
    if group_by not in GROUPS:
        raise ReportError("group_by", f"{group_by!r} is not one of {', '.join(GROUPS)}")
    if group_by == "campaign" and period.minutes is not None:
        raise ReportError("group_by", "campaigns are kept per day: use a window of whole days")
    if group_by == "acquisition_channel" and period.minutes is not None:
        raise ReportError(
            "group_by", "customers are kept in monthly cohorts: use a window of whole days"
        )
    requested = period
    if group_by == "acquisition_channel":
        # Customers are kept per acquisition month: the period is read as the whole months it
        # touches, and compared with whole months (a day against the day before would read
        # the same cohort twice).
        period = Period(period.first.replace(day=1), _month_end(period.last))
    names = [name for name in params.get("compare", "").split(",") if name]
    comparisons: dict[str, Period] = {}
    for name in names:
        if name not in COMPARISONS:
            raise ReportError("compare", f"{name!r} is not one of {', '.join(COMPARISONS)}")
        if name == "previous_year" and period.minutes is not None:
            raise ReportError("compare", "previous_year needs a window of whole days")
        comparisons[name] = (
            previous_period(period, window) if name == "previous_period" else previous_year(period)
        )
    output = params.get("format", "json")
    if output not in FORMATS:
        raise ReportError("format", f"{output!r} is not one of {', '.join(FORMATS)}")
    return ReportRequest(period, window, group_by, comparisons, output, requested)


def day_buckets(period: Period, oldest: date | None = None) -> list[tuple[str, int, int]]:
    """("mo", YYYYMM, sign) and ("d", YYYYMMDD, sign) buckets whose signed sum is the period:
    the fewest reads, since a month holds exactly the sum of its days. A month mostly inside
    the period is read as the month less its days outside (sign -1), when those days are
    still kept (not before `oldest`, the first day whose month may be read so).
    """
    buckets: list[tuple[str, int, int]] = []
    month = period.first.replace(day=1)
    while month <= period.last:
        end = _month_end(month)
        first, last = max(month, period.first), min(end, period.last)
        inside = (last - first).days + 1
        outside = (end - month).days + 1 - inside
        if outside == 0:
            buckets.append(("mo", month_number(month), 1))
        elif 1 + outside < inside and (oldest is None or month >= oldest):
            buckets.append(("mo", month_number(month), 1))
            day = month
            while day <= end:
                if not first <= day <= last:
                    buckets.append(("d", day_number(day), -1))
                day += timedelta(days=1)
        else:
            buckets += [("d", day_number(first + timedelta(days=n)), 1) for n in range(inside)]
        month = end + timedelta(days=1)
    return buckets


def minute_buckets(period: Period, oldest_minute: int) -> list[tuple[str, int]]:
    """("m", minute) and ("h", hour) buckets of a minute window (see `kpi.window_buckets`)."""
    if period.minutes is None:
        raise ValueError("not a minute window")
    first, last = period.minutes
    buckets, _ = window_buckets(last, last - first + 1, oldest_minute)
    return buckets


def row_key(name: str) -> RowKey | None:
    """The row of a bucket field without its counter: ``channel`` or ``channel\\tcampaign``."""
    channel, tab, campaign = name.partition("\t")
    return (channel, campaign if tab else None) if channel else None


_COUNTER_INDEX: Final = COUNTER_POSITIONS


def sum_buckets(
    fetched: Mapping[str, Mapping[str, str]], plan: Sequence[tuple[str, int]]
) -> dict[RowKey, Counters]:
    """The signed sum of bucket hashes (field ``{row}:{counter}`` -> integer text) per row."""
    present = [(fields, sign) for key, sign in plan if (fields := fetched.get(key))]
    # A year by campaign is some 20 buckets of thousands of fields each: every bucket is read
    # along one list of all their names, and summed, with map() (C loops, exact integers);
    # each name is split into row and counter once, at the end.
    names = list(dict.fromkeys(chain.from_iterable(fields for fields, _ in present)))
    totals: list[int] = [0] * len(names)
    for fields, sign in present:
        values = map(int, map(fields.get, names, repeat("0")))
        totals = list(map(add if sign > 0 else sub, totals, values))
    width = len(_COUNTER_INDEX)
    sums: dict[str, list[int]] = {}
    for name, total in zip(names, totals, strict=True):
        if not total:
            continue
        base, _, counter = name.rpartition(":")
        position = _COUNTER_INDEX.get(counter)
        if position is None or not base:
            continue
        values_of_row = sums.get(base)
        if values_of_row is None:
            values_of_row = sums[base] = [0] * width
        values_of_row[position] = total
    rows: dict[RowKey, Counters] = {}
    for base, values_of_row in sums.items():
        row = row_key(base)
        if row is not None:
            rows[row] = Counters(*values_of_row)
    return rows


# --- figures -------------------------------------------------------------------------------


Exact = tuple[int, int]
"""A figure as an exact fraction (numerator, positive denominator); money in currency units."""


def _round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0) to the nearest integer, ties to even."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


def _significant(value: Exact, digits: int = 4) -> float:
    """An exact fraction to `digits` significant digits, ties to even, as a float."""
    numerator, denominator = value
    if numerator == 0:
        return 0.0
    # The float quotient rounds as the fraction does unless the fraction lies within the
    # float's error of a tie (then the exact way below decides): a report has tens of
    # thousands of ratios, and the exact way costs ten times as much.
    quotient = abs(numerator / denominator)
    if _SMALLEST < quotient < _LARGEST:
        shift = digits - 1 - floor(log10(quotient))
        scaled = quotient * 10.0**shift if shift >= 0 else quotient / 10.0**-shift
        whole = floor(scaled)
        if 10 ** (digits - 1) <= whole < 10**digits and abs(scaled - whole - 0.5) > 1e-6:
            rounded = whole + 1 if scaled - whole > 0.5 else whole
            signed = rounded if numerator > 0 else -rounded
            return signed / 10**shift if shift >= 0 else float(signed * 10**-shift)
    return _significant_exact(value, digits)


def _significant_exact(value: Exact, digits: int = 4) -> float:
    """`_significant` in integers only."""
    numerator, denominator = value
    if numerator == 0:
        return 0.0
    magnitude = abs(numerator)
    # exponent: 10**exponent <= |value| < 10**(exponent + 1)
    exponent = len(str(magnitude)) - len(str(denominator))
    if magnitude * 10 ** max(0, -exponent) < denominator * 10 ** max(0, exponent):
        exponent -= 1
    shift = digits - 1 - exponent
    scaled = _round_half_even(magnitude * 10 ** max(0, shift), denominator * 10 ** max(0, -shift))
    signed = scaled if numerator > 0 else -scaled
    # int / int is correctly rounded, as float(Decimal) is: the same float, without a Decimal.
    return signed / 10**shift if shift >= 0 else float(signed * 10**-shift)


_SMALLEST: Final = 1e-200
_LARGEST: Final = 1e200


def _ratio(numerator: int, denominator: int) -> Exact | None:
    return None if denominator == 0 else (numerator, denominator)


def figures(
    counters: Counters, conversions_with_clicks: int | None = None
) -> dict[str, int | Exact | None]:
    """Every figure of `counters`: counts as int, the rest exact (money in currency units).

    `conversions_with_clicks`: for a totals row, the conversions of its rows that have clicks,
    over which the conversion rate is computed.
    """
    spend, revenue = counters.spend_micros, counters.revenue_micros
    converted = counters.conversions if conversions_with_clicks is None else conversions_with_clicks
    return {
        "clicks": counters.clicks,
        "redemptions": counters.redemptions,
        "conversions": counters.conversions,
        "revenue": (revenue, MICROS),
        "spend": (spend, MICROS),
        "profit": (revenue - spend, MICROS),
        # Without spend the cost is unknown, not zero: CPA and CPC are missing then.
        "cpa": _ratio(spend, counters.conversions * MICROS) if spend else None,
        "cpc": _ratio(spend, counters.clicks * MICROS) if spend else None,
        "conversion_rate": _ratio(converted, counters.clicks),
        "roas": _ratio(revenue, spend),
        "romi": _ratio(revenue - spend, spend),
        "aov": _ratio(revenue, counters.conversions * MICROS),
        "gross_conversions": counters.gross_conversions,
        "gross_revenue": (counters.gross_revenue_micros, MICROS),
        "gross_roas": _ratio(counters.gross_revenue_micros, spend),
        "pending_orders": counters.pending,
        "declined_orders": counters.declined,
        "refunded_orders": counters.refunded,
        "refunded_revenue": (counters.refunded_micros, MICROS),
        "new_customers": counters.new_customers,
        "cac": _ratio(spend, counters.new_customers * MICROS) if spend else None,
        "repeat_sales": counters.repeat_sales,
        "repeat_revenue": (counters.repeat_revenue_micros, MICROS),
        "leads": counters.leads,
        "cpl": _ratio(spend, counters.leads * MICROS) if spend else None,
        "lead_rate": _ratio(counters.leads, counters.clicks),
        "lead_to_sale_rate": _ratio(counters.conversions, counters.leads),
        "bot_clicks": counters.bot_clicks,
        "bot_share": _ratio(counters.bot_clicks, counters.clicks + counters.bot_clicks),
    }


def _number(name: str, value: int | Exact | None, digits: int) -> int | float | None:
    if value is None or isinstance(value, int):
        return value
    if name in MONEY:
        numerator, denominator = value
        if denominator == MICROS and digits <= 6:
            units = _round_half_even(numerator, 10 ** (6 - digits))
        else:
            units = _round_half_even(numerator * 10**digits, denominator)
        # Correctly rounded, as float(Decimal(units).scaleb(-digits)) is.
        shown: float = units / 10**digits
        return shown
    return _significant(value)


def _change(value: int | Exact | None, compared: int | Exact | None) -> float | None:
    if value is None or compared is None:
        return None
    n1, d1 = (value, 1) if isinstance(value, int) else value
    n2, d2 = (compared, 1) if isinstance(compared, int) else compared
    if n2 == 0:
        return None
    if d1 == d2:
        return _significant((n1 - n2, abs(n2)))
    # (n1/d1 - n2/d2) / |n2/d2|
    return _significant(((n1 * d2 - n2 * d1), abs(n2) * d1))


def _numbers(exact: Mapping[str, int | Exact | None], digits: int) -> dict[str, Any]:
    return {name: _number(name, value, digits) for name, value in exact.items()}


Figures = tuple[Mapping[str, int | Exact | None], Mapping[str, int | float | None]]
"""One period's figures of a row: exact, and as shown."""


def _row(
    periods: Sequence[Figures], comparisons: Sequence[str], names: Sequence[str] = FIGURES
) -> dict[str, Any]:
    """A row's figures: `periods` are the current period's, then each comparison's."""
    (current, shown), *others = periods
    row: dict[str, dict[str, Any]] = {name: {"value": shown[name]} for name in names}
    # A comparison with the very figures of an earlier one (the previous period of a year is
    # the previous year) copies its values and changes.
    done: dict[int, str] = {}
    for comparison, (exact, numbers) in zip(comparisons, others, strict=True):
        change = f"{comparison}_change"
        same = done.setdefault(id(exact), comparison)
        if same != comparison:
            same_change = f"{same}_change"
            for entry in row.values():
                entry[comparison] = entry[same]
                entry[change] = entry[same_change]
            continue
        for name, entry in row.items():
            entry[comparison] = numbers[name]
            entry[change] = _change(current[name], exact[name])
    return row


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
                done = computed[id(counters)] = (exact, _numbers(exact, digits))
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
                row | _row(row_figures, periods[1:]),
            )
        )
    rows.sort(key=lambda item: item[0])  # stable: names break ties in their sorted order
    total_exact = [figures(totals[period], with_clicks[period]) for period in periods]
    document: dict[str, Any] = {
        "currency": currency,
        "timezone": timezone,
        "group_by": request.group_by,
        "window": request.window,
        "period": request.period.describe(),
        "compare": {name: period.describe() for name, period in request.comparisons.items()},
        "figures": list(FIGURES),
        "rows": [row for _, row in rows],
        "totals": _row([(exact, _numbers(exact, digits)) for exact in total_exact], periods[1:]),
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


# --- by acquisition channel ----------------------------------------------------------------


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
        "cac": _ratio(spend, customers * MICROS) if spend else None,
    }
    for days, revenue in zip(HORIZON_DAYS, cohort.revenue_micros, strict=True):
        exact[f"cohort_revenue_{days}"] = (revenue, MICROS)
        exact[f"ltv_{days}"] = _ratio(revenue, customers * MICROS)
        exact[f"ltv_cac_{days}"] = _ratio(revenue, spend) if customers else None
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
            row_figures.append((exact, _numbers(exact, digits)))
        rows.append({"channel": channel} | _row(row_figures, periods[1:], ACQUISITION_FIGURES))
    total_figures: list[Figures] = []
    for period in periods:
        exact = acquisition_figures(totals[period])
        total_figures.append((exact, _numbers(exact, digits)))
    every = {"current": request.period, **request.comparisons}
    return {
        "currency": currency,
        "timezone": timezone,
        "group_by": request.group_by,
        "window": request.window,
        "period": request.period.describe(),
        "compare": {name: period.describe() for name, period in request.comparisons.items()},
        "requested_period": (request.requested or request.period).describe(),
        "cohorts": {name: describe_cohorts(period) for name, period in every.items()},
        "figures": list(ACQUISITION_FIGURES),
        "rows": rows,
        "totals": _row(total_figures, periods[1:], ACQUISITION_FIGURES),
    }
