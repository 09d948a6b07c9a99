"""How Redis keeps an order's and a customer's state (issue 16): the apply-batch script's
``states`` (``stream/apply_batch/lookups.lua``) in Python, for tests and any reader of the
``ord:`` and ``cust:`` generations (`keys`, "Remembered ids"). Pure.

Compact form: one decimal integer, which Redis keeps in a hash's listpack as a 64-bit integer
(an order's: 10 bytes) or a 32-bit one (a customer's while its dictionary has fewer than 2,147
references: 6 bytes), where the text form took 20 bytes or more. Its last six digits are the
minute counted from the generation's origin (`origin`), for an order times four plus its
status (`STATUSES`); the digits before them (the head) are, for a customer, its dictionary
reference, and for an order one of two layouts, told apart by the head's last three bits:

- whole cents (a value in the shop's own currency): ``((cents x width + reference) x
  ltv_width + LTV reference) x 8 + class``, the reference naming ``"{channel}\t{campaign}"``
  and the LTV reference its customer's LTV share (0: none), as the text form does; class 4 to
  7 says which of `CENT_WIDTHS` and `LTV_WIDTHS`;
- any micros (a converted amount): ``(value_micros x width + reference) x 8 + class``, the
  reference naming ``"{LTV share}\t{channel}\t{campaign}"`` (the share as
  `customers.encode_share` writes it, "" for none) and `REFERENCE_WIDTHS` [class] the smallest
  width above it. One reference for both texts saves the bits a value in micros needs, at the
  price of a dictionary entry per (share, channel, campaign) met in the generation.

References are the generation's dictionary's (``{kind}:{gen}:names``); a customer's names
``"{channel}\t{cohort}"`` (cohort YYYYMM or "").

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
CENT_WIDTHS: Final = (2**10, 2**20)
LTV_WIDTHS: Final = (2**6, 2**12)
CENT: Final = 10_000
"""Micros in a cent."""
ORDER_SPAN: Final = 250_000
"""Minutes (174 days) an order generation's compact states hold, ending a day after the
generation (`origin`): with the default 90-day window, back to 150 days before its start, so a
restated order keeps its original minute compact; a new order is always within."""
CUSTOMER_SPAN: Final = 1_000_000
DAY_MINUTES: Final = 1440
EXACT: Final = 2**53
_TAIL: Final = 6
_ORDER_TEXT: Final = re.compile(r"([a-z])(\d+):(-?\d+):(\d+):(\d*)")
_CUSTOMER_TEXT: Final = re.compile(r"(\d+):(-?\d+):(\d*)")


def origin(window_seconds: int, generation: int, span: int) -> int:
    """The minute a generation's compact states count from: `span` minutes before a day after
    the generation's end (the script's period is a quarter of the window, rounded up).

    >>> origin(90 * 86400, 4, ORDER_SPAN)
    -86560
    """
    period = math.ceil(window_seconds / 4)
    return (generation + 1) * period // 60 + DAY_MINUTES - span


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """An order's state as stored: `reference` names ``"{channel}\t{campaign}"`` and
    `ltv_reference` its LTV share ("" for none; text form and whole cents), or, with
    `ltv_reference` None, `reference` names ``"{LTV share}\t{channel}\t{campaign}"``."""

    status: str
    minute: int
    value_micros: int
    reference: int
    ltv_reference: str | None = None


def _smallest(widths: tuple[int, ...], reference: int) -> int | None:
    return next((index for index, width in enumerate(widths) if reference < width), None)


def pack_order(order: StoredOrder, origin: int) -> str | None:
    """The compact form, None when it does not fit (then the text form, `order_text`).

    >>> pack_order(StoredOrder("p", 1000, 49_990_000, 3), 0)
    '25594880024004001'
    >>> pack_order(StoredOrder("a", 1000, 49_990_000, 3, ""), 0)
    '2620917252004000'
    """
    offset = order.minute - origin
    if not 0 <= offset < ORDER_SPAN:
        return None
    if order.ltv_reference is None:
        index = _smallest(REFERENCE_WIDTHS, order.reference)
        if index is None:
            return None
        head = (order.value_micros * REFERENCE_WIDTHS[index] + order.reference) * 8 + index
    else:
        cents, micros = divmod(order.value_micros, CENT)
        ltv = int(order.ltv_reference or 0)
        width, ltv_width = _smallest(CENT_WIDTHS, order.reference), _smallest(LTV_WIDTHS, ltv)
        if micros or width is None or ltv_width is None:
            return None
        head = (cents * CENT_WIDTHS[width] + order.reference) * LTV_WIDTHS[ltv_width] + ltv
        head = head * 8 + 4 + 2 * width + ltv_width
    if head >= EXACT:
        return None  # past where a Lua number is exact
    return f"{head}{offset * 4 + STATUSES.index(order.status):06d}"


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
        rest, index = divmod(head, 8)
        offset, status = divmod(tail, 4)
        ltv: str | None = None
        if index < 4:
            value, reference = divmod(rest, REFERENCE_WIDTHS[index])
        else:
            rest, ltv_number = divmod(rest, LTV_WIDTHS[(index - 4) % 2])
            cents, reference = divmod(rest, CENT_WIDTHS[(index - 4) // 2])
            value, ltv = cents * CENT, str(ltv_number) if ltv_number else ""
        return StoredOrder(STATUSES[status], origin + offset, value, reference, ltv)
    match = _ORDER_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(f"not an order state: {text!r}")
    letter, micros, minute, ref, ltv_text = match.groups()
    return StoredOrder(letter, int(minute), int(micros), int(ref), ltv_text)


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
