"""How Redis keeps an order's and a customer's state (issue 16): the apply-batch script's
``states`` (``stream/apply_batch/lookups.lua``) in Python, for tests and any reader of the
``ord:`` and ``cust:`` generations (`keys`, "Remembered ids"). Pure.

Compact form: one decimal integer, which Redis keeps in a hash's listpack as a 64-bit integer
(an order's: 10 bytes) or a 32-bit one (a customer's while its dictionary has fewer than 2,147
references: 6 bytes), where the text form took 20 bytes or more. Its last six digits are the
minute counted from the generation's origin (`origin`), for an order times four plus its
status (`STATUSES`); the digits before them are, for a customer, its dictionary reference, and
for an order ``(value_micros x width + reference) x 4 + class``, where `REFERENCE_WIDTHS`
[class] is the smallest width above the reference. References are the generation's dictionary's
(``{kind}:{gen}:names``): an order's names ``"{LTV share}\\t{channel}\\t{campaign}"`` (the share
as `customers.encode_share` writes it, "" for none), a customer's ``"{channel}\\t{cohort}"``
(cohort YYYYMM or "").

Text form, what versions before it wrote and what the script still writes for a state that does
not fit (a minute outside the generation's span, a value whose head would pass 2^53, where Lua
numbers stop being exact, a reference past 2^20): an order ``"{status}{value}:{minute}:{ref}:
{LTV ref}"`` (references to ``"{channel}\\t{campaign}"`` and to the LTV share, "" for none),
a customer ``"{ref}:{minute}:{cohort}"`` (reference to ``"{channel}"``). The script reads both,
so generations written before an upgrade, and snapshots exported by older versions, keep
working; a snapshot carries either form as it is (decimal text).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

STATUSES: Final = ("a", "p", "d", "r")
"""Status letters (`orders.STATUS_LETTERS`) by their index in a compact order state."""
REFERENCE_WIDTHS: Final = (2**6, 2**10, 2**14, 2**20)
ORDER_BEFORE: Final = 200_000
"""An order generation's origin: so many minutes (139 days) before its start; a restated order
keeps its original minute, up to the order window and a quarter before."""
ORDER_SPAN: Final = 250_000
CUSTOMER_BEFORE: Final = 500_000
CUSTOMER_SPAN: Final = 1_000_000
EXACT: Final = 2**53
_TAIL: Final = 6
_ORDER_TEXT: Final = re.compile(r"([a-z])(\d+):(-?\d+):(\d+):(\d*)")
_CUSTOMER_TEXT: Final = re.compile(r"(\d+):(-?\d+):(\d*)")


def origin(window_seconds: int, generation: int, before: int) -> int:
    """The minute a generation's compact states count from: its start (the script's period is a
    quarter of the window, rounded up) less `before` minutes.

    >>> origin(90 * 86400, 4, ORDER_BEFORE)
    -70400
    """
    period = math.ceil(window_seconds / 4)
    return generation * period // 60 - before


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """An order's state as stored: `reference` names ``"{LTV share}\\t{channel}\\t{campaign}"``
    (compact form), or ``"{channel}\\t{campaign}"`` with `ltv_reference` naming the share
    (text form; "" for none)."""

    status: str
    minute: int
    value_micros: int
    reference: int
    ltv_reference: str | None = None


def pack_order(order: StoredOrder, origin: int) -> str | None:
    """The compact form, None when it does not fit (then the text form, `order_text`).

    >>> pack_order(StoredOrder("p", 1000, 49_990_000, 3), 0)
    '12797440012004001'
    """
    offset = order.minute - origin
    if not 0 <= offset < ORDER_SPAN:
        return None
    for index, width in enumerate(REFERENCE_WIDTHS):
        if order.reference < width:
            head = (order.value_micros * width + order.reference) * 4 + index
            if head >= EXACT:
                return None
            return f"{head}{offset * 4 + STATUSES.index(order.status):06d}"
    return None


def order_text(order: StoredOrder) -> str:
    """The text form."""
    return (
        f"{order.status}{order.value_micros}:{order.minute}:{order.reference}:"
        f"{order.ltv_reference or ''}"
    )


def unpack_order(text: str, origin: int) -> StoredOrder:
    """Either form back (`origin`: the generation's, for the compact one); ValueError for
    neither."""
    if text.isdigit():
        head, tail = int(text[:-_TAIL]), int(text[-_TAIL:])
        rest, index = divmod(head, 4)
        value, reference = divmod(rest, REFERENCE_WIDTHS[index])
        offset, status = divmod(tail, 4)
        return StoredOrder(STATUSES[status], origin + offset, value, reference)
    match = _ORDER_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(f"not an order state: {text!r}")
    status, value, minute, reference, ltv = match.groups()
    return StoredOrder(status, int(minute), int(value), int(reference), ltv)


@dataclass(frozen=True, slots=True)
class StoredCustomer:
    """A customer's state as stored: `reference` names ``"{channel}\\t{cohort}"`` (compact
    form), or ``"{channel}"`` with the `cohort` ("" or YYYYMM) here (text form)."""

    reference: int
    minute: int
    cohort: str | None = None


def pack_customer(customer: StoredCustomer, origin: int) -> str | None:
    """The compact form, None when the minute is too far from the generation's.

    >>> pack_customer(StoredCustomer(12, 29_000_000), 28_500_000)
    '12500000'
    """
    offset = customer.minute - origin
    if not 0 <= offset < CUSTOMER_SPAN:
        return None
    return f"{customer.reference}{offset:06d}"


def customer_text(customer: StoredCustomer) -> str:
    return f"{customer.reference}:{customer.minute}:{customer.cohort or ''}"


def unpack_customer(text: str, origin: int) -> StoredCustomer:
    """Either form back; ValueError for neither."""
    if text.isdigit():
        return StoredCustomer(int(text[:-_TAIL]), origin + int(text[-_TAIL:]))
    match = _CUSTOMER_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(f"not a customer state: {text!r}")
    reference, minute, cohort = match.groups()
    return StoredCustomer(int(reference), int(minute), cohort)
