"""What `adpulse report` shows of a snapshot: rows, changes, the rich table and the JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rich.console import Console

from adpulse.cli.report import (
    NO_VALUE,
    change_text,
    money,
    report_rows,
    report_table,
    snapshot_document,
)
from stream.kpi import (
    WINDOWS,
    ChannelSnapshot,
    Comparison,
    Counters,
    Snapshot,
    WindowFigures,
    kpis,
)

M = 1_000_000
TAKEN_AT = datetime(2026, 11, 23, 21, 53, tzinfo=UTC)


def figures(counters: Counters) -> WindowFigures:
    return WindowFigures(counters, kpis(counters))


def channel(
    name: str, now: Counters, day_earlier: Counters | None = None, totals: Counters | None = None
) -> ChannelSnapshot:
    comparison = Comparison(figures(now), figures(day_earlier or Counters()), figures(Counters()))
    return ChannelSnapshot(name, totals or now, {window: comparison for window in WINDOWS})


SEARCH_NOW = Counters(clicks=1120, conversions=40, revenue_micros=3_400 * M, spend_micros=1_344 * M)
SEARCH_BEFORE = Counters(
    clicks=1000, conversions=50, revenue_micros=4_000 * M, spend_micros=1_200 * M
)
INFLUENCER_NOW = Counters(
    redemptions=12, conversions=7, revenue_micros=462_500_000, spend_micros=48 * M
)

SNAPSHOT = Snapshot(
    TAKEN_AT,
    {
        "influencer": channel("influencer", INFLUENCER_NOW),
        "paid_search": channel("paid_search", SEARCH_NOW, SEARCH_BEFORE),
    },
)


@pytest.mark.parametrize(
    ("current", "earlier", "text"),
    [
        (112, 100, "+12%"),
        (88, 100, "-12%"),
        (100, 100, "0%"),
        (Decimal("0.5"), Decimal("0.25"), "+100%"),
        (0, 10, "-100%"),
        (5, 0, NO_VALUE),
        (None, 4, NO_VALUE),
        (4, None, NO_VALUE),
    ],
)
def test_change_against_a_day_earlier(
    current: Decimal | int | None, earlier: Decimal | int | None, text: str
) -> None:
    assert change_text(current, earlier) == text


@pytest.mark.parametrize(
    ("micros", "text"),
    [(0, "0.00"), (12_500_000, "12.50"), (1, "0.000001"), (123_456_789, "123.456789")],
)
def test_money_is_exact_decimal_text(micros: int, text: str) -> None:
    assert money(micros) == text


def test_rows_hold_each_kpi_with_its_change() -> None:
    rows = {row.channel: row.cells for row in report_rows(SNAPSHOT, "1h")}
    assert list(rows) == ["influencer", "paid_search", "total"]
    search = rows["paid_search"]
    assert (search["clicks"].value, search["clicks"].change) == ("1,120", "+12%")
    assert (search["conversions"].value, search["conversions"].change) == ("40", "-20%")
    assert (search["spend"].value, search["spend"].change) == ("1,344.00", "+12%")
    assert (search["revenue"].value, search["revenue"].change) == ("3,400.00", "-15%")
    assert (search["cpa"].value, search["cpa"].change) == ("33.60", "+40%")
    assert search["cpa"].direction == -1  # a dearer acquisition is worse
    assert search["clicks"].direction == 1
    assert search["spend"].direction == 0
    assert (search["conversion_rate"].value, search["roas"].value) == ("3.57%", "2.53x")
    assert search["aov"].value == "85.00"

    influencer = rows["influencer"]
    assert influencer["clicks"].value == "0"
    assert influencer["conversion_rate"].value == NO_VALUE  # no clicks: no rate
    assert influencer["cpa"].value == "6.86"
    assert all(cell.change == NO_VALUE for cell in influencer.values())

    total = rows["total"]
    assert total["conversions"].value == "47"
    assert total["revenue"].value == "3,862.50"


def test_an_unknown_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        report_rows(SNAPSHOT, "2h")


def test_the_table_shows_every_channel_and_the_total() -> None:
    console = Console(record=True, width=220, color_system=None)
    console.print(report_table(SNAPSHOT, "5m", "USD"))
    text = console.export_text()
    for name in ("influencer", "paid_search", "total", "CPA", "ROAS", "last 5m", "(USD)"):
        assert name in text
    assert "33.60" in text
    assert "+40%" in text


def test_the_json_document_holds_every_channel_window_and_comparison() -> None:
    document = snapshot_document(SNAPSHOT)
    assert json.loads(json.dumps(document)) == document
    assert document["taken_at"] == "2026-11-23T21:53:00Z"
    assert set(document["channels"]) == {"influencer", "paid_search"}
    search = document["channels"]["paid_search"]
    assert search["totals"] == {
        "clicks": 1120,
        "redemptions": 0,
        "conversions": 40,
        "revenue_micros": 3_400 * M,
        "spend_micros": 1_344 * M,
        "revenue": "3400.00",
        "spend": "1344.00",
    }
    assert set(search["windows"]) == {"5m", "1h", "24h"}
    one_hour = search["windows"]["1h"]
    assert set(one_hour) == {"current", "day_earlier", "week_earlier"}
    assert one_hour["current"]["kpis"]["cpa"] == "33.6"
    assert one_hour["current"]["kpis"]["roas"] == f"{kpis(SEARCH_NOW).roas:f}"
    assert one_hour["day_earlier"]["counters"]["clicks"] == 1000
    assert one_hour["week_earlier"]["kpis"] == {
        "cpa": None,
        "cpc": None,
        "conversion_rate": None,
        "roas": None,
        "romi": None,
        "aov": None,
    }
    assert one_hour["current"]["hourly"] is False
