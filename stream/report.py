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

Money is rounded to the currency's minor unit, ratios to 4 significant digits; a figure whose
denominator is zero is None (null). A change is (value - compared) / compared.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Final

from adpulse.core.currencies import minor_unit
from stream.days import day_number, month_number, next_month
from stream.keys import DAY_RETENTION
from stream.kpi import MICROS, Counters, window_buckets

MINUTE_WINDOWS: Final = {"5m": 5, "1h": 60, "24h": 1440}
DAY_WINDOWS: Final = ("today", "yesterday", "7d", "30d", "mtd", "month", "ytd")
WINDOWS: Final = (*MINUTE_WINDOWS, *DAY_WINDOWS)
COMPARISONS: Final = ("previous_period", "previous_year")
GROUPS: Final = ("channel", "campaign")
FORMATS: Final = ("json", "csv")
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
    # The funnel (issue 12): clicks -> leads -> sales, and the clicks taken as a bot's.
    "leads",
    "cpl",
    "lead_rate",
    "lead_to_sale_rate",
    "bot_clicks",
    "bot_share",
)
MONEY: Final = frozenset({"revenue", "spend", "profit", "cpa", "cpc", "aov", "cpl"})
LOWER_IS_BETTER: Final = frozenset({"cpa", "cpc", "cpl", "bot_clicks", "bot_share"})
"""Figures whose fall is good news (the report colours changes by it)."""
NEITHER_BETTER: Final = frozenset({"spend"})
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
    return ReportRequest(period, window, group_by, comparisons, output)


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


_COUNTER_INDEX: Final = {"k": 0, "r": 1, "c": 2, "v": 3, "s": 4, "l": 5, "b": 6}
"""A counter's position among `Counters`' fields."""


def sum_buckets(
    fetched: Mapping[str, Mapping[str, str]], plan: Sequence[tuple[str, int]]
) -> dict[RowKey, Counters]:
    """The signed sum of bucket hashes (field ``{row}:{counter}`` -> integer text) per row."""
    sums: dict[str, list[int]] = {}
    # Buckets share their field names: each name is split once.
    slots: dict[str, tuple[list[int], int] | None] = {}
    for key, sign in plan:
        for name, value in fetched.get(key, {}).items():
            slot = slots.get(name, _UNSEEN)
            if slot is _UNSEEN:
                base, _, counter = name.rpartition(":")
                position = _COUNTER_INDEX.get(counter)
                slot = None
                if position is not None and base:
                    slot = (sums.setdefault(base, [0] * len(_COUNTER_INDEX)), position)
                slots[name] = slot
            if slot is not None:
                slot[0][slot[1]] += sign * int(value)
    rows: dict[RowKey, Counters] = {}
    for base, values in sums.items():
        row = row_key(base)
        if row is not None and any(values):
            rows[row] = Counters(*values)
    return rows


_UNSEEN: Final[Any] = object()


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
    magnitude = abs(numerator)
    # exponent: 10**exponent <= |value| < 10**(exponent + 1)
    exponent = len(str(magnitude)) - len(str(denominator))
    if magnitude * 10 ** max(0, -exponent) < denominator * 10 ** max(0, exponent):
        exponent -= 1
    shift = digits - 1 - exponent
    scaled = _round_half_even(magnitude * 10 ** max(0, shift), denominator * 10 ** max(0, -shift))
    signed = scaled if numerator > 0 else -scaled
    return float(Decimal(signed).scaleb(-shift))


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
        units = _round_half_even(numerator * 10**digits, denominator)
        return float(Decimal(units).scaleb(-digits))
    return _significant(value)


def _exact(value: int | Exact) -> Exact:
    return (value, 1) if isinstance(value, int) else value


def _change(value: int | Exact | None, compared: int | Exact | None) -> float | None:
    if value is None or compared is None:
        return None
    (n1, d1), (n2, d2) = _exact(value), _exact(compared)
    if n2 == 0:
        return None
    # (n1/d1 - n2/d2) / |n2/d2|
    return _significant(((n1 * d2 - n2 * d1), abs(n2) * d1))


def _row(
    exact: Mapping[str, Mapping[str, int | Exact | None]], comparisons: Sequence[str], digits: int
) -> dict[str, Any]:
    row: dict[str, Any] = {}
    current = exact["current"]
    for name in FIGURES:
        entry: dict[str, Any] = {"value": _number(name, current[name], digits)}
        for comparison in comparisons:
            compared = exact[comparison][name]
            entry[comparison] = _number(name, compared, digits)
            entry[f"{comparison}_change"] = _change(current[name], compared)
        row[name] = entry
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
    for key in keys:
        exact: dict[str, dict[str, int | Exact | None]] = {}
        for period in periods:
            counters = sums.get(period, {}).get(key, empty)
            exact[period] = figures(counters)
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
                row | _row(exact, periods[1:], digits),
            )
        )
    rows.sort(key=lambda item: item[0])  # stable: names break ties in their sorted order
    total_exact = {period: figures(totals[period], with_clicks[period]) for period in periods}
    document: dict[str, Any] = {
        "currency": currency,
        "timezone": timezone,
        "group_by": request.group_by,
        "window": request.window,
        "period": request.period.describe(),
        "compare": {name: period.describe() for name, period in request.comparisons.items()},
        "figures": list(FIGURES),
        "rows": [row for _, row in rows],
        "totals": _row(total_exact, periods[1:], digits),
    }
    return document


def _name_order(key: RowKey) -> tuple[str, str]:
    return key[0], key[1] or ""


def report_csv(document: Mapping[str, Any]) -> str:
    """The report as CSV: one line per row and a last "total" line; each figure's compared
    values and changes in columns of their own."""
    comparisons = list(document["compare"])
    by_campaign = document["group_by"] == "campaign"
    header = ["channel", *(["campaign"] if by_campaign else [])]
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
