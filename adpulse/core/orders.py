"""Order statuses: the names a conversion's ``status`` may take, and the numeric codes of
affiliate networks mapped onto them (``ADPULSE_STATUS_MAP``).

A conversion without a status is ``approved``, and the edge writes no status for it on the wire
(so the record of a plain sale stays as it was). A conversion whose ``order_id`` was counted
before restates that order; see `stream.orders` for what each status counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from adpulse.core.fields import json_kind

APPROVED: Final = "approved"
PENDING: Final = "pending"
DECLINED: Final = "declined"
REFUNDED: Final = "refunded"
ORDER_STATUSES: Final = (APPROVED, PENDING, DECLINED, REFUNDED)
"""Every status, `APPROVED` (the default) first."""

MAX_STATUS_CODES: Final = 100
_MAX_CODE_LENGTH: Final = 16
_NAMES: Final = {name: name for name in ORDER_STATUSES}
NO_CODES: Final[Mapping[str, str]] = MappingProxyType({})


def parse_status_map(text: str) -> Mapping[str, str]:
    """Parse ADPULSE_STATUS_MAP, e.g. ``"1=approved,2=pending,3=declined,5=pending"``.

    >>> dict(parse_status_map("1=approved, 2=Pending"))
    {'1': 'approved', '2': 'pending'}
    """
    codes: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        code, equals, name = item.partition("=")
        code, name = code.strip(), name.strip().lower()
        if not equals or not code or len(code) > _MAX_CODE_LENGTH or not code.isprintable():
            raise ValueError(f"{item.strip()!r}: expected CODE=STATUS, e.g. 2=pending")
        if name not in _NAMES:
            raise ValueError(f"{item.strip()!r}: the status must be one of {_list()}")
        if code.lower() in _NAMES:
            raise ValueError(f"{item.strip()!r}: a code may not be a status name")
        codes[code] = name
    if len(codes) > MAX_STATUS_CODES:
        raise ValueError(f"at most {MAX_STATUS_CODES} codes")
    return MappingProxyType(codes)


def parse_status(value: object, codes: Mapping[str, str]) -> str | None:
    """A status name in any case, or a code of `codes` (a string or a JSON integer); None
    for blank and for ``approved``, the status a conversion has without one."""
    if type(value) is int:
        text = str(value)
    elif type(value) is str:
        text = value.strip()
        if not text:
            return None
    else:
        raise ValueError(f"expected a string, got {json_kind(value)}")
    name = _NAMES.get(text) or _NAMES.get(text.lower()) or codes.get(text)
    if name is None:
        shown = f"codes {', '.join(codes)}" if codes else "no codes"
        raise ValueError(
            f"unknown status {text[:32]!r}; expected {_list()}, or a code of "
            f"ADPULSE_STATUS_MAP ({shown} set)"
        )
    return None if name == APPROVED else name


def _list() -> str:
    return ", ".join(ORDER_STATUSES)
