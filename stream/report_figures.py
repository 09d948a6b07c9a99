"""A period report's figures: the KPIs of a row's `Counters` as exact fractions, rounded for
the document (money to the currency's minor unit, ratios to 4 significant digits; a figure
whose denominator is zero is None), and their changes against a comparison. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import floor, log10
from typing import Any, Final

from stream.customers import HORIZON_DAYS
from stream.kpi import MICROS, Counters

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


def ratio(numerator: int, denominator: int) -> Exact | None:
    """numerator / denominator as an exact figure; None (no figure) when the denominator is 0."""
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
        "cpa": ratio(spend, counters.conversions * MICROS) if spend else None,
        "cpc": ratio(spend, counters.clicks * MICROS) if spend else None,
        "conversion_rate": ratio(converted, counters.clicks),
        "roas": ratio(revenue, spend),
        "romi": ratio(revenue - spend, spend),
        "aov": ratio(revenue, counters.conversions * MICROS),
        "gross_conversions": counters.gross_conversions,
        "gross_revenue": (counters.gross_revenue_micros, MICROS),
        "gross_roas": ratio(counters.gross_revenue_micros, spend),
        "pending_orders": counters.pending,
        "declined_orders": counters.declined,
        "refunded_orders": counters.refunded,
        "refunded_revenue": (counters.refunded_micros, MICROS),
        "new_customers": counters.new_customers,
        "cac": ratio(spend, counters.new_customers * MICROS) if spend else None,
        "repeat_sales": counters.repeat_sales,
        "repeat_revenue": (counters.repeat_revenue_micros, MICROS),
        "leads": counters.leads,
        "cpl": ratio(spend, counters.leads * MICROS) if spend else None,
        "lead_rate": ratio(counters.leads, counters.clicks),
        "lead_to_sale_rate": ratio(counters.conversions, counters.leads),
        "bot_clicks": counters.bot_clicks,
        "bot_share": ratio(counters.bot_clicks, counters.clicks + counters.bot_clicks),
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


Figures = tuple[Mapping[str, int | Exact | None], Mapping[str, int | float | None]]
"""One period's figures of a row: exact, and as shown."""


def period_figures(exact: Mapping[str, int | Exact | None], digits: int) -> Figures:
    """`exact` with its figures as shown: money to `digits` decimals, ratios to 4 significant
    digits."""
    return exact, {name: _number(name, value, digits) for name, value in exact.items()}


def figure_row(
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
