"""Issue 13: the report grouped by acquisition channel, by hand: two cohort months read for a
period that touches them, a year earlier to compare with, totals whose ratios come from sums."""

from __future__ import annotations

from datetime import date

import pytest
from rich.console import Console

from adpulse.cli.report import report_table
from stream.customers import cohort_values
from stream.report import (
    ACQUISITION_FIGURES,
    Cohort,
    Period,
    ReportError,
    build_acquisition_report,
    cohort_months,
    month_cohorts,
    parse_request,
    report_csv,
    sum_cohorts,
)

M = 1_000_000
TODAY = date(2026, 3, 5)
NOW_MINUTE = 29_500_000


def month(spend: dict[str, int], ltv: dict[str, int]) -> dict[str, Cohort]:
    fields = {f"{channel}:s": str(dollars * M) for channel, dollars in spend.items()}
    # Other counters and campaign fields of the month bucket are not spend.
    fields |= {"paid_search:k": "999", "paid_search\tbrand:s": "7"}
    ltv_fields = {
        name: str(value if name.endswith(":u") else value * M) for name, value in ltv.items()
    }
    return month_cohorts(fields, cohort_values(ltv_fields))


JANUARY = month(
    {"paid_search": 300, "email": 50},
    {"paid_search:u": 3, "paid_search:30": 240, "paid_search:90": 300, "paid_search:365": 360}
    | {"email:u": 2, "email:30": 40, "email:90": 40, "email:365": 40},
)
FEBRUARY = month(
    {"paid_search": 100},
    {"paid_search:u": 1, "paid_search:30": 60, "paid_search:90": 60, "paid_search:365": 60}
    | {"organic:u": 1, "organic:30": 20, "organic:90": 20, "organic:365": 20},
)
A_YEAR_EARLIER = month(
    {"paid_search": 200},
    {"paid_search:u": 2, "paid_search:30": 100, "paid_search:90": 150, "paid_search:365": 200},
)


def values(row: dict[str, dict[str, object]], part: str = "value") -> dict[str, object]:
    return {name: row[name][part] for name in ACQUISITION_FIGURES}


def test_rows_by_acquisition_channel_by_hand() -> None:
    request = parse_request(
        {
            "from": "2026-01-15",
            "to": "2026-02-10",
            "group_by": "acquisition_channel",
            "compare": "previous_year",
        },
        TODAY,
        NOW_MINUTE,
    )
    # The period touches January and February: both whole cohorts are read.
    assert cohort_months(request.period) == [202601, 202602]
    assert cohort_months(request.comparisons["previous_year"]) == [202501, 202502]
    sums = {
        "current": sum_cohorts([JANUARY, FEBRUARY]),
        "previous_year": sum_cohorts([A_YEAR_EARLIER, {}]),
    }
    document = build_acquisition_report(request, sums, currency="USD", timezone="UTC")
    assert document["requested_period"] == {"from": "2026-01-15", "to": "2026-02-10"}
    assert document["period"] == {"from": "2026-01-01", "to": "2026-02-28"}
    assert document["cohorts"] == {
        "current": {"from": "2026-01", "to": "2026-02"},
        "previous_year": {"from": "2025-01", "to": "2025-02"},
    }
    assert [row["channel"] for row in document["rows"]] == ["paid_search", "email", "organic"]
    search, email, organic = document["rows"]
    # paid_search: 4 customers for $400; their net revenue $300 / $360 / $420.
    assert values(search) == {
        "new_customers": 4,
        "spend": 400.0,
        "cac": 100.0,
        "cohort_revenue_30": 300.0,
        "cohort_revenue_90": 360.0,
        "cohort_revenue_365": 420.0,
        "ltv_30": 75.0,
        "ltv_90": 90.0,
        "ltv_365": 105.0,
        "ltv_cac_30": 0.75,
        "ltv_cac_90": 0.9,
        "ltv_cac_365": 1.05,
    }
    assert values(email)["cac"] == 25.0
    assert values(email)["ltv_365"] == 20.0
    assert values(email)["ltv_cac_365"] == 0.8
    # No spend: the cost is unknown, not zero.
    assert (values(organic)["cac"], values(organic)["ltv_cac_30"]) == (None, None)
    assert values(organic)["ltv_30"] == 20.0
    # A year earlier: 2 customers for $200, $200 within a year.
    assert search["new_customers"]["previous_year"] == 2
    assert search["new_customers"]["previous_year_change"] == 1.0
    assert search["cac"]["previous_year_change"] == 0.0
    assert search["ltv_365"]["previous_year_change"] == 0.05
    assert email["new_customers"]["previous_year_change"] is None  # nothing to compare with
    # Totals: 7 customers, $450, $360 / $420 / $480: ratios of the sums.
    assert values(document["totals"]) == {
        "new_customers": 7,
        "spend": 450.0,
        "cac": 64.29,
        "cohort_revenue_30": 360.0,
        "cohort_revenue_90": 420.0,
        "cohort_revenue_365": 480.0,
        "ltv_30": 51.43,
        "ltv_90": 60.0,
        "ltv_365": 68.57,
        "ltv_cac_30": 0.8,
        "ltv_cac_90": 0.9333,
        "ltv_cac_365": 1.067,
    }
    assert document["totals"]["cac"]["previous_year_change"] == -0.3571  # 450/7 vs 100

    lines = report_csv(document).splitlines()
    assert lines[0].startswith("acquisition_channel,new_customers,new_customers_previous_year,")
    assert lines[1].startswith("paid_search,4,2,1.0,400.0,200.0,1.0,100.0,100.0,0.0,")
    assert lines[-1].startswith("total,7,2,2.5,450.0,")

    console = Console(width=80, record=True)
    console.print(report_table(document, 80))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for shown in ("Acquired via", "New cust.", "CAC", "64.29", "total"):
        assert shown in text
    assert "customers acquired 2026-01 to 2026-02 (whole months)" in text


def test_acquisition_channel_needs_whole_days() -> None:
    with pytest.raises(ReportError) as raised:
        parse_request({"window": "1h", "group_by": "acquisition_channel"}, TODAY, NOW_MINUTE)
    assert raised.value.parameter == "group_by"
    with pytest.raises(ReportError) as raised:
        parse_request({"group_by": "acquisition"}, TODAY, NOW_MINUTE)
    assert raised.value.parameter == "group_by"
    assert "acquisition_channel" in raised.value.reason


def test_a_period_is_widened_to_whole_months_and_compared_with_whole_months() -> None:
    params = {"window": "yesterday", "group_by": "acquisition_channel"}
    request = parse_request(params | {"compare": "previous_period,previous_year"}, TODAY, 0)
    assert request.requested == Period(date(2026, 3, 4), date(2026, 3, 4))
    assert request.period == Period(date(2026, 3, 1), date(2026, 3, 31))
    assert request.comparisons == {
        "previous_period": Period(date(2026, 2, 1), date(2026, 2, 28)),
        "previous_year": Period(date(2025, 3, 1), date(2025, 3, 31)),
    }
    # Other groupings keep the period as asked.
    assert parse_request({"window": "yesterday"}, TODAY, 0).period.first == date(2026, 3, 4)


def test_a_period_within_one_month_reads_that_cohort() -> None:
    assert cohort_months(Period(date(2025, 12, 3), date(2025, 12, 3))) == [202512]
    assert cohort_months(Period(date(2025, 11, 30), date(2026, 1, 1))) == [202511, 202512, 202601]
