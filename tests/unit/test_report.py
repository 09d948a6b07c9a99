"""What `adpulse report` shows of a report document: the table at 80 and 160 columns."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from typing import Any

import pytest
from rich.console import Console

from adpulse.cli.report import COLUMNS, NO_VALUE, change_text, money, report_table, value_text
from stream.kpi import Counters
from stream.report import FIGURES, build_report, parse_request

ORDER_FIGURES = frozenset(FIGURES[FIGURES.index("gross_conversions") :])

M = 1_000_000


def document(group_by: str = "channel") -> dict[str, Any]:
    minute = int(datetime(2026, 3, 18, 15, tzinfo=UTC).timestamp()) // 60
    request = parse_request(
        {"window": "month", "compare": "previous_period,previous_year", "group_by": group_by},
        date(2026, 3, 18),
        minute,
    )
    campaign = "spring-sale-retargeting-lookalike" if group_by == "campaign" else None
    sums: dict[str, dict[tuple[str, str | None], Counters]] = {
        "current": {
            ("paid_search", campaign): Counters(123_456, 0, 4_321, 987_654_321_000, 123_456_780_000),
            ("email", None): Counters(5_000, 12, 248, 12_345_670_000, 0),
            ("influencer_partnerships", None): Counters(0, 40, 40, 4_000 * M, 1_500 * M),
        },
        "previous_period": {("paid_search", campaign): Counters(100_000, 0, 4_000, 900_000 * M, 100_000 * M)},
        "previous_year": {("email", None): Counters(4_000, 0, 200, 10_000 * M, 0)},
    }  # fmt: skip
    return build_report(request, sums, currency="USD", timezone="Europe/Berlin")


def render(doc: dict[str, Any], width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(report_table(doc, width))
    return [line.rstrip() for line in console.export_text().splitlines()]


@pytest.mark.parametrize("width", [80, 240])
@pytest.mark.parametrize("group_by", ["channel", "campaign"])
def test_the_table_fits_without_a_wrapped_cell_and_shows_totals(width: int, group_by: str) -> None:
    doc = document(group_by)
    lines = render(doc, width)
    assert all(len(line) <= width for line in lines)
    starts = [
        n
        for n, line in enumerate(lines)
        if line.lstrip().startswith(("paid_search", "email", "influencer", "total"))
    ]
    # Every row: its name line, then one line per comparison, nothing wrapped in between.
    assert len(starts) == 4
    assert all(later - earlier in (3, 4) for earlier, later in itertools.pairwise(starts))
    total = lines[starts[-1]]
    assert total.lstrip().startswith("total")
    assert value_text(doc["totals"]["spend"]["value"], "money") in total
    assert value_text(doc["totals"]["revenue"]["value"], "money") in total
    if width == 80:
        assert "left out at this width" in "\n".join(lines)
    else:
        # Every column but the orders' (gross, refunds, statuses) fits at 160.
        left_out = [line for line in lines if "left out at this width" in line]
        orders = {column.heading for column in COLUMNS if column.name in ORDER_FIGURES}
        for line in left_out:
            assert set(line.partition(": ")[2].strip().split(", ")) <= orders


def test_sorted_by_spend_and_missing_values_are_dashes() -> None:
    lines = render(document(), 160)
    names = [
        line.split()[0]
        for line in lines
        if line.lstrip().startswith(("paid_search", "email", "influencer"))
    ]
    assert names == ["paid_search", "influencer_partnerships", "email"]
    email = next(line for line in lines if line.lstrip().startswith("email"))
    assert NO_VALUE in email  # CPA without spend is missing, not 0.00
    assert "0.00 " not in email.split("email", 1)[1][:30]


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [(1234.5, "money", "1,234.50"), (0.04951, "percent", "4.95%"), (2.001, "times", "2.00x"),
     (None, "count", NO_VALUE), (123456, "count", "123,456")],
)  # fmt: skip
def test_values(value: float | None, kind: str, text: str) -> None:
    assert value_text(value, kind) == text


def test_changes_and_money() -> None:
    assert (change_text(0.12), change_text(None), change_text(-0.5)) == ("+12%", NO_VALUE, "-50%")
    assert money(12_500_000) == "12.50"


def test_every_figure_of_the_report_has_a_column() -> None:
    from adpulse.cli.report import COLUMNS
    from stream.report import ACQUISITION_FIGURES, FIGURES

    assert sorted(column.name for column in COLUMNS) == sorted({*FIGURES, *ACQUISITION_FIGURES})
