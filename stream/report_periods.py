"""Which days (or minutes) a period report covers: its request, windows and comparisons, and
the day, month, minute and hour buckets that hold a period (`stream.report` builds the rows).

Periods are local dates of the reporting time zone, inclusive. Windows: ``5m``, ``1h``, ``24h``
(the last minutes, from minute and hour buckets, by channel only); ``today``, ``yesterday``,
``7d`` and ``30d`` (the last 7 or 30 days, today included), ``mtd`` (this month so far),
``month`` (the last whole month), ``ytd`` (this year so far). ``previous_period`` is the period
of the same length just before; for whole calendar months, the months before; for ``mtd``, the
same days of the month before. ``previous_year``: the same dates a year earlier (29 February
becomes the 28th).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

from stream.days import day_number, month_number, next_month
from stream.keys import DAY_RETENTION
from stream.kpi import window_buckets

MINUTE_WINDOWS: Final = {"5m": 5, "1h": 60, "24h": 1440}
DAY_WINDOWS: Final = ("today", "yesterday", "7d", "30d", "mtd", "month", "ytd")
WINDOWS: Final = (*MINUTE_WINDOWS, *DAY_WINDOWS)
COMPARISONS: Final = ("previous_period", "previous_year")
GROUPS: Final = ("channel", "campaign", "acquisition_channel")
FORMATS: Final = ("json", "csv")
MAX_DAYS: Final = DAY_RETENTION.days
"""The longest period: what the day buckets keep."""


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

    def heading(self, currency: str, timezone: str) -> dict[str, Any]:
        """What a report document says first, whichever its grouping: its money, time zone,
        grouping, window and periods."""
        return {
            "currency": currency,
            "timezone": timezone,
            "group_by": self.group_by,
            "window": self.window,
            "period": self.period.describe(),
            "compare": {name: period.describe() for name, period in self.comparisons.items()},
        }


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
