"""The period report's arithmetic (`stream.report`) and local days (`stream.days`), by tables."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from stream.days import MINUTE_CACHE_ENTRIES, LocalDays
from stream.kpi import Counters
from stream.report import (
    Period,
    ReportError,
    build_report,
    day_buckets,
    parse_request,
    report_csv,
)

TODAY = date(2026, 3, 18)
NOW_MINUTE = int(datetime(2026, 3, 18, 15, 0, tzinfo=UTC).timestamp()) // 60
DOLLAR = 1_000_000


@pytest.mark.parametrize(
    ("params", "period", "compared"),
    [
        ({"window": "today"}, ("2026-03-18", "2026-03-18"), {}),
        ({"window": "yesterday"}, ("2026-03-17", "2026-03-17"), {}),
        (
            {"window": "7d", "compare": "previous_period"},
            ("2026-03-12", "2026-03-18"),
            {"previous_period": ("2026-03-05", "2026-03-11")},
        ),
        ({"window": "30d"}, ("2026-02-17", "2026-03-18"), {}),
        (
            {"window": "mtd", "compare": "previous_period,previous_year"},
            ("2026-03-01", "2026-03-18"),
            {
                "previous_period": ("2026-02-01", "2026-02-18"),
                "previous_year": ("2025-03-01", "2025-03-18"),
            },
        ),
        (
            {"window": "month", "compare": "previous_period,previous_year"},
            ("2026-02-01", "2026-02-28"),
            {
                "previous_period": ("2026-01-01", "2026-01-31"),
                "previous_year": ("2025-02-01", "2025-02-28"),
            },
        ),
        ({"window": "ytd"}, ("2026-01-01", "2026-03-18"), {}),
        (
            {"from": "2026-01-01", "to": "2026-02-28", "compare": "previous_period"},
            ("2026-01-01", "2026-02-28"),
            {"previous_period": ("2025-11-01", "2025-12-31")},
        ),
        (
            {"from": "2024-02-29", "to": "2024-02-29", "compare": "previous_year"},
            ("2024-02-29", "2024-02-29"),
            {"previous_year": ("2023-02-28", "2023-02-28")},
        ),
        ({}, ("2026-03-18", "2026-03-18"), {}),
    ],
)
def test_periods(
    params: dict[str, str], period: tuple[str, str], compared: dict[str, tuple[str, str]]
) -> None:
    request = parse_request(params, TODAY, NOW_MINUTE)
    assert (request.period.first.isoformat(), request.period.last.isoformat()) == period
    assert {
        name: (p.first.isoformat(), p.last.isoformat()) for name, p in request.comparisons.items()
    } == compared


def test_minute_windows_compare_with_the_minutes_before() -> None:
    request = parse_request({"window": "1h", "compare": "previous_period"}, TODAY, NOW_MINUTE)
    assert request.period.minutes == (NOW_MINUTE - 59, NOW_MINUTE)
    assert request.comparisons["previous_period"].minutes == (NOW_MINUTE - 119, NOW_MINUTE - 60)


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"window": "week"}, "window"),
        ({"from": "2026-01-01"}, "to"),
        ({"to": "2026-01-01"}, "from"),
        ({"from": "2026-13-01", "to": "2026-01-02"}, "from"),
        ({"from": "2026-01-02", "to": "2026-01-01"}, "to"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "to"),
        ({"window": "today", "from": "2026-01-01", "to": "2026-01-01"}, "window"),
        ({"group_by": "country"}, "group_by"),
        ({"window": "5m", "group_by": "campaign"}, "group_by"),
        ({"compare": "last_week"}, "compare"),
        ({"window": "24h", "compare": "previous_year"}, "compare"),
        ({"format": "xml"}, "format"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_parameters_are_named(params: dict[str, str], parameter: str) -> None:
    with pytest.raises(ReportError) as raised:
        parse_request(params, TODAY, NOW_MINUTE)
    assert raised.value.parameter == parameter


def test_whole_months_are_read_from_month_buckets() -> None:
    period = Period(date(2025, 12, 30), date(2026, 3, 2))
    assert day_buckets(period) == [
        ("d", 20251230, 1),
        ("d", 20251231, 1),
        ("mo", 202601, 1),
        ("mo", 202602, 1),
        ("d", 20260301, 1),
        ("d", 20260302, 1),
    ]


def test_a_month_mostly_inside_is_read_less_its_days_outside() -> None:
    period = Period(date(2026, 1, 3), date(2026, 1, 31))
    assert day_buckets(period) == [("mo", 202601, 1), ("d", 20260101, -1), ("d", 20260102, -1)]
    # Days no longer kept cannot be taken off: the days inside are read instead.
    assert len(day_buckets(period, oldest=date(2026, 2, 1))) == 29


Sums = dict[str, dict[tuple[str, str | None], Counters]]


def _report(sums: Sums, **params: str) -> dict[str, Any]:
    request = parse_request(params, TODAY, NOW_MINUTE)
    return build_report(request, sums, currency="USD", timezone="UTC")


def test_rows_totals_and_changes() -> None:
    sums: Sums = {
        "current": {
            ("search", None): Counters(200, 0, 4, 300 * DOLLAR, 100 * DOLLAR),
            ("social", None): Counters(100, 0, 1, 50 * DOLLAR, 150 * DOLLAR),
            # Coupon sales without clicks: counted in totals, not in the total conversion rate.
            ("podcast", None): Counters(0, 3, 3, 90 * DOLLAR, 0),
        },
        "previous_period": {("search", None): Counters(100, 0, 2, 100 * DOLLAR, 80 * DOLLAR)},
    }
    document = _report(sums, window="month", compare="previous_period")
    assert document["currency"] == "USD"
    assert [row["channel"] for row in document["rows"]] == ["social", "search", "podcast"]
    search = document["rows"][1]
    assert search["cpa"] == {
        "value": 25.0,
        "previous_period": 40.0,
        "previous_period_change": -0.375,
    }
    assert search["clicks"]["previous_period_change"] == 1.0
    assert search["roas"]["value"] == 3.0
    assert search["romi"]["value"] == 2.0
    assert search["aov"]["value"] == 75.0
    podcast = document["rows"][2]
    assert podcast["cpa"]["value"] is None  # no conversions' cost without spend: missing, not 0
    assert podcast["cpa"]["previous_period"] is None
    assert podcast["conversion_rate"]["value"] is None
    totals = document["totals"]
    assert totals["clicks"]["value"] == 300
    assert totals["conversions"]["value"] == 8
    assert totals["spend"]["value"] == 250.0
    assert totals["profit"]["value"] == 190.0
    assert totals["cpa"]["value"] == 31.25
    assert totals["conversion_rate"]["value"] == pytest.approx(5 / 300, rel=1e-3)
    assert totals["conversion_rate"]["value"] == 0.01667  # 4 significant digits


def test_money_rounds_to_the_minor_unit_and_ratios_to_four_digits() -> None:
    sums: Sums = {"current": {("search", None): Counters(3, 0, 3, 10 * DOLLAR, 10 * DOLLAR)}}
    request = parse_request({}, TODAY, NOW_MINUTE)
    yen = build_report(request, sums, currency="JPY", timezone="UTC")
    assert yen["rows"][0]["cpa"]["value"] == 3.0
    dollars = build_report(request, sums, currency="USD", timezone="UTC")
    assert dollars["rows"][0]["cpa"]["value"] == 3.33
    assert dollars["rows"][0]["conversion_rate"]["value"] == 1.0


def test_campaign_rows_and_csv() -> None:
    sums: Sums = {
        "current": {
            ("search", "brand"): Counters(10, 0, 1, 20 * DOLLAR, 5 * DOLLAR),
            ("search", ""): Counters(5, 0, 0, 0, 1 * DOLLAR),
        }
    }
    document = _report(sums, window="today", group_by="campaign")
    assert [(row["channel"], row["campaign"]) for row in document["rows"]] == [
        ("search", "brand"),
        ("search", None),
    ]
    lines = report_csv(document).splitlines()
    assert lines[0].startswith("channel,campaign,clicks,redemptions,conversions,revenue,spend")
    assert lines[1].startswith("search,brand,10,0,1,20.0,5.0")
    assert lines[-1].startswith("total,,15,")


@pytest.mark.parametrize(
    ("zone", "moment", "day"),
    [
        ("America/New_York", "2026-03-10T03:30:00+00:00", 20260309),
        ("America/New_York", "2026-03-10T04:30:00+00:00", 20260310),
        ("UTC", "2026-03-10T03:30:00+00:00", 20260310),
        ("Asia/Kolkata", "2026-03-09T18:30:00+00:00", 20260310),
    ],
)
def test_the_day_of_a_minute_is_its_local_date(zone: str, moment: str, day: int) -> None:
    minute = int(datetime.fromisoformat(moment).timestamp()) // 60
    assert LocalDays(ZoneInfo(zone)).of_minute(minute)[0] == day


def test_the_minute_cache_stays_bounded_and_right_after_it_is_cleared() -> None:
    # A long-running worker sees a new minute every minute, and late events older ones.
    days = LocalDays(ZoneInfo("Asia/Kolkata"))
    first = int(datetime(2026, 3, 9, 18, 29, tzinfo=UTC).timestamp()) // 60
    for minute in range(first, first + 3 * MINUTE_CACHE_ENTRIES):
        days.of_minute(minute)
        assert len(days._minutes) <= MINUTE_CACHE_ENTRIES
    fresh = LocalDays(ZoneInfo("Asia/Kolkata"))
    for minute in (first, first + 1, first + 3 * MINUTE_CACHE_ENTRIES - 1):
        assert days.of_minute(minute) == fresh.of_minute(minute)
    assert days.of_minute(first)[0] == 20260309
    assert days.of_minute(first + 1)[0] == 20260310


@pytest.mark.parametrize(("day", "hours"), [(date(2026, 3, 8), 23), (date(2026, 11, 1), 25)])
def test_dst_days_have_23_or_25_hours(day: date, hours: int) -> None:
    days = LocalDays(ZoneInfo("America/New_York"))
    spans = list(days.spans(days.start(day), days.start(date(day.year, day.month, day.day + 1))))
    assert len(spans) == 1
    assert spans[0][2] - spans[0][1] == hours * 3600


@pytest.mark.parametrize(
    ("numerator", "denominator", "rounded"),
    [
        (1, 3, 0.3333), (2, 3, 0.6667), (-2, 3, -0.6667), (40001, 20000, 2.0),
        (40030, 20000, 2.002), (40010, 20000, 2.0), (12345678, 1, 12350000.0), (1, 8, 0.125), (5, 300, 0.01667),
        (99995, 100000, 1.0), (99985, 100000, 0.9998), (999949, 1000000, 0.9999),
    ],
)  # fmt: skip
def test_four_significant_digits_exactly(numerator: int, denominator: int, rounded: float) -> None:
    # Ties go to even, on the exact fraction, never on a binary float.
    from stream.report_figures import _significant

    assert _significant((numerator, denominator)) == rounded


def test_every_counter_field_is_summed_into_its_own_figure() -> None:
    """`sum_buckets` places each counter letter (stream.keys) at its `Counters` field."""
    from stream.keys import COUNTER_FIELDS
    from stream.kpi import _FIELD_NAMES
    from stream.report import sum_buckets

    value = {letter: n + 1 for n, letter in enumerate(COUNTER_FIELDS)}
    fetched = {"d:1": {f"search:{letter}": str(n) for letter, n in value.items()}}
    (counters,) = sum_buckets(fetched, [("d:1", 1)]).values()
    assert counters == Counters(**{_FIELD_NAMES[letter]: n for letter, n in value.items()})
    document = build_report(
        parse_request({"window": "today"}, TODAY, NOW_MINUTE),
        {"current": {("search", None): counters}},
        currency="USD",
        timezone="UTC",
    )
    (row,) = document["rows"]
    leads, bots, clicks, sales = value["l"], value["b"], value["k"], value["c"]
    assert (row["leads"]["value"], row["bot_clicks"]["value"]) == (leads, bots)
    assert row["cpl"]["value"] == 0.0  # a few micros of spend per lead, in dollars
    assert row["lead_rate"]["value"] == round(leads / clicks, 4)
    assert row["lead_to_sale_rate"]["value"] == pytest.approx(sales / leads, rel=1e-3)
    assert row["bot_share"]["value"] == pytest.approx(bots / (clicks + bots), rel=1e-3)
