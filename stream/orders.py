"""What an order counts in each status, and the state kept per order so a restatement can
replace it.

Pure. A conversion with an `order_id` not seen within the order window (`Retention.order`,
``ADPULSE_ORDER_DAYS``) is a new order: it counts once as gross (``g`` and ``G``, as first
reported, never changed after) and by its status (`order_counts`). A conversion naming an
order already counted restates it: its status and value (none: the current value) replace the
order's, and every counter moves by the difference (`restatement_counts`), in the buckets of
the order's original minute, channel and campaign, so last week's ROAS becomes true as refunds
come in. The moment of the change counts too, in the restatement's own minute: ``n`` one
restatement, ``N`` the change of net revenue (negative for a refund). A restatement that
changes neither status nor value is a duplicate.

The counters by status:

========== ====================== ==============================
status     net (``c``, ``v``)     own count and amount
========== ====================== ==============================
approved   1, value               -
pending    1, value               ``e``, ``E``
declined   -                      ``d``, ``D``
refunded   -                      ``f``, ``F``
========== ====================== ==============================

So ``c`` and ``v`` (the conversions and revenue every KPI reads) are net figures: a plain
conversion without a status counts there as before. The Lua script (`stream.lua`) does the same
in Redis, where the state is a hash field per order (`keys.KeySpace.generation` "ord"), packed
into one integer (`stream.states`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from adpulse.core.orders import APPROVED, DECLINED, PENDING, REFUNDED
from stream.customers import LtvShare, decode_share, encode_share

GROSS_CONVERSIONS: Final = "g"
GROSS_REVENUE: Final = "G"
PENDING_COUNT: Final = "e"
PENDING_AMOUNT: Final = "E"
DECLINED_COUNT: Final = "d"
DECLINED_AMOUNT: Final = "D"
REFUNDED_COUNT: Final = "f"
REFUNDED_AMOUNT: Final = "F"
RESTATEMENTS: Final = "n"
NET_REVENUE_CHANGE: Final = "N"
ORDER_COUNTERS: Final = ("g", "G", "e", "E", "d", "D", "f", "F", "n", "N")

# One letter per status in the stored state; "" (absent on the wire) is approved.
STATUS_LETTERS: Final = {"": "a", APPROVED: "a", PENDING: "p", DECLINED: "d", REFUNDED: "r"}
ROW_STATUSES: Final = frozenset(STATUS_LETTERS)
_NET: Final = frozenset({"a", "p"})
_OWN: Final = {"p": ("e", "E"), "d": ("d", "D"), "r": ("f", "F")}


@dataclass(slots=True)
class OrderState:
    """One order as counted: `status` a letter of `STATUS_LETTERS`, `minute` its original
    conversion's, `value_micros` its current value, `channel` and `campaign` as counted."""

    status: str
    minute: int
    value_micros: int
    channel: str
    campaign: str
    ltv: LtvShare | None = None
    """Its customer's cohort share (`stream.customers`), whose net revenue it moves."""

    def encode(self) -> str:
        """The stored form, e.g. ``"p\\t29412345\\t12500000\\tpaid_search\\t\\tspring"``."""
        return (
            f"{self.status}\t{self.minute}\t{self.value_micros}\t{self.channel}\t"
            f"{encode_share(self.ltv)}\t{self.campaign}"
        )

    @classmethod
    def decode(cls, text: str) -> OrderState:
        status, minute, value, channel, ltv, campaign = text.split("\t", 5)
        return cls(status, int(minute), int(value), channel, campaign, decode_share(ltv))


def order_counts(status: str, value_micros: int, sign: int = 1) -> list[tuple[str, int]]:
    """(counter, delta) of an order in `status` (a letter) worth `value_micros`, times `sign`.

    >>> order_counts("p", 5_000_000)
    [('c', 1), ('v', 5000000), ('e', 1), ('E', 5000000)]
    """
    counts: list[tuple[str, int]] = []
    if status in _NET:
        counts.append(("c", sign))
        if value_micros:
            counts.append(("v", sign * value_micros))
    own = _OWN.get(status)
    if own is not None:
        counts.append((own[0], sign))
        if value_micros:
            counts.append((own[1], sign * value_micros))
    return counts


def net_value(status: str, value_micros: int) -> int:
    """What an order adds to net revenue: its value while pending or approved."""
    return value_micros if status in _NET else 0


def restatement_counts(order: OrderState, status: str, value_micros: int) -> list[tuple[str, int]]:
    """The deltas in the order's original buckets when it becomes (`status`, `value_micros`)."""
    return order_counts(order.status, order.value_micros, -1) + order_counts(status, value_micros)
