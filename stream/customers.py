"""Customers: who was acquired through which channel, their repeat sales, and their lifetime
value by cohort.

Pure. A conversion may carry a `customer_id`, already a keyed hash (`adpulse.core.customers`).
A customer's first conversion (whatever its status) acquires them for that conversion's
channel, their acquisition channel: ``u``, one new customer, in that conversion's buckets. Each
later conversion of theirs (a new order, not a restatement) is a repeat sale of its own channel:
``y`` and its value as first reported ``Y``. The acquisition month (local, YYYYMM) is the
customer's cohort: ``ltv:{month}`` holds, per acquisition channel, the customers acquired
(``{channel}:u``) and the net revenue of their orders (`stream.orders`, so refunds come back out)
placed within 30, 90 and 365 days of the acquisition (``{channel}:30`` ...), every order in
each horizon it falls within. LTV at 30 days = ``:30`` / ``:u``; CAC = spend / new customers.

A customer is remembered for `Retention.customer` (400 days) after their first conversion, the
one the script writes (later ones leave the record as it is): past the 365-day horizon, after
which a purchase counts them as a new customer again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Final

NEW_CUSTOMERS: Final = "u"
REPEAT_SALES: Final = "y"
REPEAT_REVENUE: Final = "Y"
HORIZON_DAYS: Final = (30, 90, 365)
ACQUIRED: Final = "u"
_MINUTES_A_DAY: Final = 1440
_CONTEXT: Final = Context(prec=34)


@dataclass(slots=True)
class CustomerState:
    """`channel` the acquisition channel, `minute` of the first conversion, `cohort` its local
    month (None when that day's buckets are no longer kept: no LTV then)."""

    channel: str
    minute: int
    cohort: int | None


LtvShare = tuple[int, int, str]
"""(cohort month, index of the first horizon an order counts in, 1-based, acquisition channel)."""


def horizon_of(age_minutes: int) -> int:
    """The first horizon (1-based index of `HORIZON_DAYS`) an order placed `age_minutes` after
    the acquisition counts in; past the last, one more than their number.

    >>> horizon_of(0), horizon_of(30 * 1440), horizon_of(400 * 1440)
    (1, 2, 4)
    """
    for index, days in enumerate(HORIZON_DAYS, start=1):
        if age_minutes < days * _MINUTES_A_DAY:
            return index
    return len(HORIZON_DAYS) + 1


def ltv_increments(share: LtvShare, delta: int) -> list[tuple[str, int]]:
    """(field of ``ltv:{cohort}``, delta) of net revenue `delta` of an order of `share`."""
    _, first, channel = share
    return [(f"{channel}:{days}", delta) for days in HORIZON_DAYS[first - 1 :]]


def encode_share(share: LtvShare | None) -> str:
    return "" if share is None else f"{share[0]}:{share[1]}:{share[2]}"


def decode_share(text: str) -> LtvShare | None:
    if not text:
        return None
    cohort, first, channel = text.split(":", 2)
    return int(cohort), int(first), channel


@dataclass(frozen=True, slots=True)
class CohortValue:
    """One acquisition channel's cohort: customers acquired and their net revenue (micros)
    within each horizon of `HORIZON_DAYS`; `ltv` per horizon, None without customers."""

    customers: int
    revenue_micros: Mapping[int, int]

    def ltv(self, days: int) -> Decimal | None:
        if self.customers == 0:
            return None
        return _CONTEXT.divide(Decimal(self.revenue_micros.get(days, 0)), self.customers * 10**6)


def cohort_values(fields: Mapping[str, int | str]) -> dict[str, CohortValue]:
    """Parse one ``ltv:{month}`` hash into a CohortValue per acquisition channel."""
    customers: dict[str, int] = {}
    revenue: dict[str, dict[int, int]] = {}
    for name, value in fields.items():
        channel, _, part = name.rpartition(":")
        if part == ACQUIRED:
            customers[channel] = int(value)
        elif part.isdigit() and int(part) in HORIZON_DAYS:
            revenue.setdefault(channel, {})[int(part)] = int(value)
    return {
        channel: CohortValue(customers.get(channel, 0), revenue.get(channel, {}))
        for channel in sorted(customers.keys() | revenue.keys())
    }
