"""What `adpulse report` shows of a report document (`stream.report.build_report`). Pure.

The document is the read API's; this module only lays it out: `report_table(document, width)`
picks the columns that fit `width` (most important first: spend, revenue, conversions, CPA,
ROAS, ...), never wraps a cell, and says which columns it left out. Each cell is the value and,
under it, its change against each comparison, green when better and red when worse (CPA and
CPC down is better; spend is neither). A missing value is "—".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from stream.report import LOWER_IS_BETTER, NEITHER_BETTER

NO_VALUE: Final = "—"
TOTAL: Final = "total"
NAME_WIDTH: Final = 24
"""Longest row name shown; longer names are cut with "…"."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    heading: str
    kind: str
    """count, money, percent or times: how a value is written."""

    @property
    def better(self) -> int:
        """1 when higher is better, -1 when lower is, 0 neither (`stream.report` says which)."""
        if self.name in NEITHER_BETTER:
            return 0
        return -1 if self.name in LOWER_IS_BETTER else 1


# In the order they are given room: what a marketer steers by first.
COLUMNS: Final = (
    Column("spend", "Spend", "money"),
    Column("revenue", "Revenue", "money"),
    Column("conversions", "Conv.", "count"),
    Column("cpa", "CPA", "money"),
    Column("roas", "ROAS", "times"),
    Column("clicks", "Clicks", "count"),
    Column("leads", "Leads", "count"),
    Column("cpl", "CPL", "money"),
    Column("conversion_rate", "CR", "percent"),
    Column("bot_share", "Bots", "percent"),
    Column("profit", "Profit", "money"),
    Column("aov", "AOV", "money"),
    Column("lead_rate", "Lead/click", "percent"),
    Column("lead_to_sale_rate", "Sale/lead", "percent"),
    Column("cpc", "CPC", "money"),
    Column("romi", "ROMI", "percent"),
    Column("redemptions", "Redeem.", "count"),
    Column("gross_revenue", "Gross rev.", "money"),
    Column("gross_roas", "Gross ROAS", "times"),
    Column("refunded_revenue", "Refunds", "money"),
    Column("gross_conversions", "Gross conv.", "count"),
    Column("pending_orders", "Pending", "count"),
    Column("declined_orders", "Declined", "count"),
    Column("refunded_orders", "Refunded", "count"),
    Column("new_customers", "New cust.", "count"),
    Column("cac", "CAC", "money"),
    Column("repeat_sales", "Repeat", "count"),
    Column("repeat_revenue", "Repeat rev.", "money"),
    Column("bot_clicks", "Bot clicks", "count"),
    # Grouped by acquisition channel (`stream.report.ACQUISITION_FIGURES`), these only.
    Column("ltv_cac_365", "LTV/CAC 365", "times"),
    Column("ltv_365", "LTV 365", "money"),
    Column("ltv_90", "LTV 90", "money"),
    Column("ltv_30", "LTV 30", "money"),
    Column("ltv_cac_90", "LTV/CAC 90", "times"),
    Column("ltv_cac_30", "LTV/CAC 30", "times"),
    Column("cohort_revenue_365", "Rev. 365", "money"),
    Column("cohort_revenue_90", "Rev. 90", "money"),
    Column("cohort_revenue_30", "Rev. 30", "money"),
)


_BY_NAME: Final = {column.name: column for column in COLUMNS}


def money(amount_micros: int) -> str:
    """Exact decimal text of micros, at least two decimals: 12_500_000 -> "12.50"."""
    text = f"{Decimal(amount_micros) / 1_000_000:f}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def value_text(value: float | int | None, kind: str, digits: int = 2) -> str:
    """A figure as the table writes it; "—" for a missing value.

    >>> value_text(1234.5, "money"), value_text(0.04951, "percent"), value_text(None, "times")
    ('1,234.50', '4.95%', '—')
    """
    if value is None:
        return NO_VALUE
    if kind == "count":
        return f"{int(value):,}"
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if kind == "money":
        return f"{number.quantize(Decimal(1).scaleb(-digits), ROUND_HALF_EVEN):,}"
    if kind == "percent":
        return f"{(number * 100).quantize(Decimal('0.01'), ROUND_HALF_EVEN)}%"
    return f"{number.quantize(Decimal('0.01'), ROUND_HALF_EVEN)}x"


def change_text(change: float | None) -> str:
    """A relative change as a whole percent: "+12%"; "—" without a base.

    >>> change_text(0.12), change_text(None), change_text(-0.004)
    ('+12%', '—', '0%')
    """
    if change is None:
        return NO_VALUE
    percent = (Decimal(repr(change)) * 100).quantize(Decimal(1), ROUND_HALF_EVEN)
    return f"{percent:+}%" if percent else "0%"


def _style(change: float | None, better: int) -> str:
    if change is None or not better or not change:
        return "dim"
    return "green" if (change > 0) == (better > 0) else "red"


def row_name(row: Mapping[str, Any], by_campaign: bool) -> str:
    name = str(row["channel"])
    if by_campaign:
        name = f"{name} / {row.get('campaign') or NO_VALUE}"
    return name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 1] + "…"


def _cell(
    figure: Mapping[str, Any], column: Column, comparisons: Sequence[str], digits: int
) -> Text:
    text = Text(value_text(figure["value"], column.kind, digits))
    for comparison in comparisons:
        change = figure.get(f"{comparison}_change")
        text.append(f"\n{change_text(change)}", style=_style(change, column.better))
    return text


def report_table(document: Mapping[str, Any], width: int, digits: int = 2) -> Table:
    """The report as a rich table no wider than `width`, every cell on its lines unwrapped."""
    comparisons = list(document["compare"])
    by_campaign = document["group_by"] == "campaign"
    by_acquisition = document["group_by"] == "acquisition_channel"
    rows = [*document["rows"], {"channel": TOTAL, **document["totals"]}]
    shown = set(document["figures"])
    # By acquisition channel, what a marketer steers by first: customers, spend, CAC, LTV/CAC.
    order = (
        ["new_customers", "spend", "cac"]
        if by_acquisition
        else [column.name for column in COLUMNS if column.name in shown]
    )
    order += [
        column.name for column in COLUMNS if column.name in shown and column.name not in order
    ]
    columns = [_BY_NAME[name] for name in order]
    names = [row_name(row, by_campaign) for row in rows[:-1]] + [TOTAL]
    cells = {
        column.name: [_cell(row[column.name], column, comparisons, digits) for row in rows]
        for column in columns
    }
    heading = "Channel / campaign" if by_campaign else "Channel"
    if by_acquisition:
        heading = "Acquired via"
    # Columns in order of importance while the table, laid out unconstrained, still fits.
    chosen: list[Column] = []
    for column in columns:
        trial = _table(names, cells, [*chosen, column], heading, None)
        if _natural_width(trial) <= width:
            chosen.append(column)
    period = document["period"]
    title = f"adpulse {document['window'] or ''} {period['from']} to {period['to']}".replace(
        "  ", " "
    )
    title += f", {document['currency']}, {document['timezone']}"
    notes = []
    if comparisons:
        notes.append("under each value: change against " + ", then ".join(
            "the previous period" if name == "previous_period" else "a year earlier"
            for name in comparisons
        ))  # fmt: skip
    if by_acquisition:
        cohorts = document["cohorts"]["current"]
        notes.append(
            f"customers acquired {cohorts['from']} to {cohorts['to']} (whole months), "
            "LTV and revenue at 30/90/365 days"
        )
    left_out = [column.heading for column in columns if column not in chosen]
    if left_out:
        notes.append(f"left out at this width: {', '.join(left_out)}")
    return _table(names, cells, chosen, heading, title, "\n".join(notes) or None)


def _natural_width(table: Table) -> int:
    console = Console(width=10_000)
    return Measurement.get(console, console.options, table).maximum


def _table(
    names: Sequence[str],
    cells: Mapping[str, Sequence[Text]],
    chosen: Sequence[Column],
    heading: str,
    title: str | None,
    caption: str | None = None,
) -> Table:
    table = Table(
        title=title,
        caption=caption,
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column(heading, no_wrap=True)
    for column in chosen:
        table.add_column(column.heading, justify="right", no_wrap=True)
    for index, name in enumerate(names):
        is_total = index == len(names) - 1
        table.add_row(
            Text(name, style="bold" if is_total else ""),
            *(cells[column.name][index] for column in chosen),
            end_section=index == len(names) - 2,
        )
    return table
