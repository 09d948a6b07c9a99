"""What `adpulse report` shows of a KPI snapshot: table rows and the JSON document. Pure.

`report_rows(snapshot, "1h")` gives one `ReportRow` per channel and a total, each cell a value
and its change against the same window a day earlier; `report_table` lays them out with rich;
`snapshot_document` is the `--json` form of the whole snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

from rich import box
from rich.table import Table
from rich.text import Text

from stream.kpi import MICROS, OFFSETS, WINDOWS, Counters, Kpis, Snapshot, WindowFigures, kpis

NO_VALUE: Final = "—"
TOTAL: Final = "total"
KPI_NAMES: Final = ("cpa", "cpc", "conversion_rate", "roas", "romi", "aov")


def money(amount_micros: int) -> str:
    """Exact decimal text of micros, at least two decimals: 12_500_000 -> "12.50"."""
    text = f"{Decimal(amount_micros) / MICROS:f}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def decimal_text(value: Decimal | None) -> str | None:
    """A KPI as plain decimal text (never exponent notation), None stays None."""
    return None if value is None else f"{value:f}"


def counters_document(counters: Counters) -> dict[str, Any]:
    return {
        "clicks": counters.clicks,
        "redemptions": counters.redemptions,
        "conversions": counters.conversions,
        "revenue_micros": counters.revenue_micros,
        "spend_micros": counters.spend_micros,
        "revenue": money(counters.revenue_micros),
        "spend": money(counters.spend_micros),
    }


def kpis_document(figures: Kpis) -> dict[str, str | None]:
    return {name: decimal_text(getattr(figures, name)) for name in KPI_NAMES}


def window_document(figures: WindowFigures) -> dict[str, Any]:
    return {
        "counters": counters_document(figures.counters),
        "kpis": kpis_document(figures.kpis),
        "hourly": figures.hourly,
    }


def snapshot_document(snapshot: Snapshot) -> dict[str, Any]:
    """Every channel: lifetime totals, and each window now, a day and a week earlier.

    Counts and micros are integers; money also as exact decimal text; KPIs as decimal text,
    null when their denominator is zero.
    """
    return {
        "taken_at": snapshot.taken_at.isoformat().replace("+00:00", "Z"),
        "windows": list(WINDOWS),
        "comparisons": list(OFFSETS),
        "channels": {
            name: {
                "totals": counters_document(channel.totals),
                "windows": {
                    window: {
                        comparison: window_document(getattr(figures, comparison))
                        for comparison in OFFSETS
                    }
                    for window, figures in channel.windows.items()
                },
            }
            for name, channel in snapshot.channels.items()
        },
    }


# The table


@dataclass(frozen=True, slots=True)
class Cell:
    value: str
    change: str
    """Against the same window a day earlier: "+12%", "-3%", "0%", or "—" without a base."""
    direction: int
    """1 better, -1 worse, 0 neither or unknown: decides the colour."""


@dataclass(frozen=True, slots=True)
class ReportRow:
    channel: str
    cells: Mapping[str, Cell]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    heading: str
    value: Callable[[Counters, Kpis], Decimal | int | None]
    text: Callable[[Decimal | int], str]
    higher_is_better: bool | None


def _count(value: Decimal | int) -> str:
    return f"{value:,}"


def _amount(value: Decimal | int) -> str:
    return f"{Decimal(value).quantize(Decimal('0.01'), ROUND_HALF_EVEN):,}"


def _micros_amount(value: Decimal | int) -> str:
    return _amount(Decimal(value) / MICROS)


def _percent(value: Decimal | int) -> str:
    return f"{(Decimal(value) * 100).quantize(Decimal('0.01'), ROUND_HALF_EVEN)}%"


def _times(value: Decimal | int) -> str:
    return f"{Decimal(value).quantize(Decimal('0.01'), ROUND_HALF_EVEN)}x"


COLUMNS: Final = (
    Column("clicks", "Clicks", lambda c, k: c.clicks, _count, True),
    Column("conversions", "Conversions", lambda c, k: c.conversions, _count, True),
    Column("spend", "Spend", lambda c, k: c.spend_micros, _micros_amount, None),
    Column("revenue", "Revenue", lambda c, k: c.revenue_micros, _micros_amount, True),
    Column("cpa", "CPA", lambda c, k: k.cpa, _amount, False),
    Column("conversion_rate", "Conv. rate", lambda c, k: k.conversion_rate, _percent, True),
    Column("roas", "ROAS", lambda c, k: k.roas, _times, True),
    Column("aov", "AOV", lambda c, k: k.aov, _amount, True),
)


def change_text(current: Decimal | int | None, earlier: Decimal | int | None) -> str:
    """The relative change, rounded to a whole percent: "+12%"; "—" without an earlier value.

    >>> change_text(112, 100), change_text(5, 0), change_text(None, 3)
    ('+12%', '—', '—')
    """
    if current is None or earlier is None or earlier == 0:
        return NO_VALUE
    percent = ((Decimal(current) - Decimal(earlier)) * 100 / Decimal(earlier)).quantize(
        Decimal(1), ROUND_HALF_EVEN
    )
    return f"{percent:+}%" if percent else "0%"


def _cell(column: Column, now: Counters, earlier: Counters) -> Cell:
    current = column.value(now, kpis(now))
    before = column.value(earlier, kpis(earlier))
    direction = 0
    better = column.higher_is_better
    if better is not None and current is not None and before and current != before:
        direction = 1 if (current > before) == better else -1
    return Cell(
        NO_VALUE if current is None else column.text(current),
        change_text(current, before),
        direction,
    )


def report_rows(snapshot: Snapshot, window: str) -> list[ReportRow]:
    """One row per channel, by name, then the total of all channels."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; one of {', '.join(WINDOWS)}")
    rows = []
    now_total, earlier_total = Counters(), Counters()
    for name, channel in snapshot.channels.items():
        comparison = channel.windows[window]
        now, earlier = comparison.current.counters, comparison.day_earlier.counters
        now_total, earlier_total = now_total + now, earlier_total + earlier
        rows.append(ReportRow(name, {c.name: _cell(c, now, earlier) for c in COLUMNS}))
    rows.append(ReportRow(TOTAL, {c.name: _cell(c, now_total, earlier_total) for c in COLUMNS}))
    return rows


_STYLES: Final = {1: "green", -1: "red", 0: "dim"}


def report_table(snapshot: Snapshot, window: str, currency: str = "") -> Table:
    """The rows as a rich table; each cell the value, and under it its change a day earlier."""
    unit = f" ({currency})" if currency else ""
    table = Table(
        title=f"adpulse, last {window}, change against a day earlier{unit}",
        caption=f"at {snapshot.taken_at:%Y-%m-%d %H:%M:%S %Z}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    rows = report_rows(snapshot, window)
    # Names in full; figures folded rather than cut short on a narrow terminal.
    table.add_column("Channel", no_wrap=True, min_width=max(len(row.channel) for row in rows))
    for column in COLUMNS:
        table.add_column(column.heading, justify="right", overflow="fold")
    for row in rows:
        cells = []
        for column in COLUMNS:
            cell = row.cells[column.name]
            text = Text(cell.value)
            text.append(f"\n{cell.change}", style=_STYLES[cell.direction])
            cells.append(text)
        table.add_row(
            Text(row.channel, style="bold" if row.channel == TOTAL else ""),
            *cells,
            end_section=row is rows[-2] if len(rows) > 1 else False,
        )
    return table
