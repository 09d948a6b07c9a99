"""History and cost files (`stream.imports`): columns, line numbers, the exports' layouts."""

from __future__ import annotations

from datetime import date

import pytest

from stream.imports import CostRow, ImportFileError, parse_costs, parse_history

HISTORY = """date,channel,campaign,clicks,conversions,revenue,spend
2025-02-03,Paid Search,brand,10,1,80.00,50.00
2025-02-04,email,,"1,200",0,0,0
"""


def test_history_rows_and_a_bad_line_named() -> None:
    parsed = parse_history(HISTORY.splitlines(keepends=True))
    assert [(row.day, row.channel, row.campaign, row.clicks) for row in parsed.rows] == [
        (date(2025, 2, 3), "paid_search", "brand", 10),
        (date(2025, 2, 4), "email", "", 1200),
    ]
    assert parsed.rows[0].revenue_micros == 80_000_000
    bad = HISTORY + "2025-02-05,email,,3,1,12.5x,0\n"
    with pytest.raises(ImportFileError) as raised:
        parse_history(bad.splitlines(keepends=True))
    assert raised.value.line == 4
    assert "revenue" in raised.value.reason
    skipped = parse_history(bad.splitlines(keepends=True), skip_bad=True)
    assert (len(skipped.rows), [error.line for error in skipped.skipped]) == (2, [4])


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("date,channel,clicks\n", 1, "lacks campaign"),
        (HISTORY + "2025-02-03,paid_search,brand,1,0,0,0\n", 4, "twice"),
        (HISTORY + "2025-02-30,email,,1,0,0,0\n", 4, "date"),
        (HISTORY + "2025-02-06,email,,1,0,0\n", 4, "cells"),
    ],
)
def test_bad_history_files(text: str, line: int, reason: str) -> None:
    with pytest.raises(ImportFileError) as raised:
        parse_history(text.splitlines(keepends=True))
    assert raised.value.line == line
    assert reason in raised.value.reason


GOOGLE_ADS = """Campaign report
"February 1, 2026 - February 28, 2026"
Day,Campaign,Campaign state,Currency code,Cost,Clicks
2026-02-01,Brand,Enabled,USD,"1,234.56",10
2026-02-01,Brand,Enabled,USD,0.44,1
2026-02-02,Generic,Enabled,USD,3.00,2
Total: Account,,,USD,"1,238.00",13
"""

META = """Reporting starts,Reporting ends,Campaign name,Amount spent (EUR),Impressions
2026-02-01,2026-02-01,Spring,12.30,1000
2026-02-02,2026-02-02,Spring,7.70,800
"""


def test_google_ads_daily_costs_summed_per_campaign() -> None:
    parsed = parse_costs(GOOGLE_ADS.splitlines(keepends=True), "google-ads", currency="USD")
    assert parsed.rows == [
        CostRow(date(2026, 2, 1), "paid_search", "Brand", 1_235_000_000),
        CostRow(date(2026, 2, 2), "paid_search", "Generic", 3_000_000),
    ]


def test_meta_costs_and_their_currency() -> None:
    parsed = parse_costs(META.splitlines(keepends=True), "meta", currency="EUR")
    assert [(row.day, row.channel, row.cost_micros) for row in parsed.rows] == [
        (date(2026, 2, 1), "paid_social", 12_300_000),
        (date(2026, 2, 2), "paid_social", 7_700_000),
    ]
    with pytest.raises(ImportFileError) as raised:
        parse_costs(META.splitlines(keepends=True), "meta", currency="USD")
    assert (raised.value.line, "EUR" in raised.value.reason) == (2, True)
    weekly = META.replace("2026-02-01,2026-02-01", "2026-02-01,2026-02-07")
    with pytest.raises(ImportFileError, match="not a daily row"):
        parse_costs(weekly.splitlines(keepends=True), "meta", currency="EUR")


def test_plain_cost_csv_names_the_channel_per_row() -> None:
    text = "date,channel,campaign,cost\n2026-02-01,Email,news,1.50\n"
    parsed = parse_costs(text.splitlines(keepends=True), "csv", currency="USD")
    assert parsed.rows == [CostRow(date(2026, 2, 1), "email", "news", 1_500_000)]
    with pytest.raises(ImportFileError) as raised:
        parse_costs(["day,spent\n"], "csv", currency="USD")
    assert "no header row" in raised.value.reason


def test_history_leads_are_imported_with_the_other_figures() -> None:
    text = "date,channel,campaign,clicks,conversions,revenue,spend,leads\n"
    text += "2025-02-03,email,,10,1,5,20,4\n2025-02-04,email,,3,0,0,0,\n"
    rows = parse_history(text.splitlines(keepends=True)).rows
    assert [row.leads for row in rows] == [4, 0]
    # The figures the import script writes, in its counters' order k,r,c,v,s,l.
    assert rows[0].encode() == "10,0,1,5000000,20000000,4"


def test_history_rows_are_admitted_by_the_apply_batch_script_s_own_caps() -> None:
    """The channel and campaign caps are written once: the history import's script carries the
    apply-batch script's admission part, with no `admit` of its own."""
    from stream.imports import IMPORT_HISTORY
    from stream.lua import APPLY_BATCH, assemble

    admission = assemble(("admission",))
    assert "local function admit_campaign(" in admission
    assert admission in IMPORT_HISTORY
    assert admission.strip() in APPLY_BATCH
    assert IMPORT_HISTORY.count("local function admit(") == 1
    assert IMPORT_HISTORY.count("local function admit_campaign(") == 1
