"""Parsers for single client fields: strings, tokens, ids, coupons, currencies, times, money;
and the wire form of times.

Each `parse_*` takes a value that is present (not None) and returns its normal form, None for
a blank string (absent), or raises ValueError with the reason; `adpulse.core.contract` binds
them to the fields and their limits, and `adpulse.core.event.parse_event` names the field and
turns the reason into an `EventError`. They run for every field of every pixel,
so the common input (a short ASCII string) takes the shortest path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Final

from adpulse.core.channels import channel_slug
from adpulse.core.currencies import CURRENCY_CODES, MICROS, parse_micros

MAX_COUPON_LENGTH: Final = 64
UTM_FIELDS: Final = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")

FieldParser = Callable[[object], object]

# What an event id and a coupon code may hold (`fullmatch`); public for the tracker's fast path.
EVENT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:\-]+")
COUPON_PATTERN: Final = re.compile(r"[A-Za-z0-9_\-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s")
_EPOCH = re.compile(r"-?\d+(?:\.\d+)?")
_EXACT = Context(prec=80, rounding=ROUND_HALF_EVEN)
_EPOCH_START = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_EPOCH_SECONDS = Decimal(253_402_300_799)  # 9999-12-31T23:59:59Z
_MILLISECONDS_ABOVE = Decimal(100_000_000_000)
_MILLISECONDS_ABOVE_MICROS = 100_000_000_000 * MICROS
_MAX_TIME_TEXT = 64
_WIRE_TIME_EXAMPLE = "2026-11-23T21:53:00.000000Z"
_JSON_NAMES: Final[dict[type, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}


def json_kind(value: object) -> str:
    """The JSON name of `value`'s type ("string", "array" ...), for error messages."""
    return _JSON_NAMES.get(type(value), type(value).__name__)


def field_name(key: object) -> str:
    """A client's field name, shortened to fit an error message."""
    name = str(key)
    return name if len(name) <= 64 else name[:64] + "..."


def describe_period(period: timedelta) -> str:
    """``timedelta(minutes=5)`` as "5 minutes", in the largest whole unit."""
    seconds = int(period.total_seconds())
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % length == 0:
            count = seconds // length
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} seconds"


def parse_string(value: object) -> str | None:
    """The stripped string, None when blank; ValueError for a non-string."""
    if type(value) is not str:
        raise ValueError(f"expected a string, got {json_kind(value)}")
    return value.strip() or None


def parse_text(value: object, max_length: int) -> str | None:
    """Free text: at most `max_length` characters, no control characters."""
    if type(value) is not str:
        raise ValueError(f"expected a string, got {json_kind(value)}")
    text = value.strip()
    if not text:
        return None
    if len(text) > max_length:
        raise ValueError(f"longer than {max_length} characters")
    # Printable ASCII has no control characters; only other text needs the full search.
    if not (text.isascii() and text.isprintable()) and _CONTROL.search(text) is not None:
        raise ValueError("contains control characters")
    return text


def parse_token(value: object, max_length: int) -> str | None:
    """An id such as a click or order id: printable characters without whitespace."""
    if type(value) is not str:
        raise ValueError(f"expected a string, got {json_kind(value)}")
    token = value.strip()
    if not token:
        return None
    if len(token) > max_length:
        raise ValueError(f"longer than {max_length} characters")
    # The only whitespace that printable ASCII has is the space.
    if token.isascii() and token.isprintable():
        if " " in token:
            raise ValueError("must be printable characters without whitespace")
    elif not token.isprintable() or _WHITESPACE.search(token) is not None:
        raise ValueError("must be printable characters without whitespace")
    return token


def parse_event_id(value: object, max_length: int) -> str | None:
    event_id = parse_string(value)
    if event_id is None:
        return None
    if len(event_id) > max_length:
        raise ValueError(f"longer than {max_length} characters")
    if EVENT_ID_PATTERN.fullmatch(event_id) is None:
        raise ValueError("only letters, digits and . _ : - are allowed")
    return event_id


def parse_channel(value: object) -> str | None:
    text = parse_string(value)
    return None if text is None else channel_slug(text)


def parse_coupon(value: object) -> str | None:
    """A coupon code, upper-cased: at most 64 of ``[A-Za-z0-9_-]``."""
    coupon = parse_string(value)
    if coupon is None:
        return None
    if len(coupon) > MAX_COUPON_LENGTH:
        raise ValueError(f"longer than {MAX_COUPON_LENGTH} characters")
    if COUPON_PATTERN.fullmatch(coupon) is None:
        raise ValueError("only letters, digits, '_' and '-' are allowed")
    return coupon.upper()


def parse_currency(value: object) -> str | None:
    """An ISO 4217 code in any case, upper-cased."""
    code = parse_string(value)
    if code is None:
        return None
    code = code.upper()
    if code not in CURRENCY_CODES:
        raise ValueError(f"unknown ISO-4217 currency code {code[:16]!r}")
    return code


def parse_money(value: object, max_amount: Decimal) -> int | None:
    """An exact amount in micros from a decimal string or a JSON number, see `parse_amount`."""
    if type(value) is not str and type(value) is not int and type(value) is not float:
        raise ValueError(f"expected a decimal number, got {json_kind(value)}")
    return parse_micros(value, max_amount)


def parse_time(value: object) -> datetime | None:
    """A UTC datetime from ISO-8601 with an offset, or epoch seconds (milliseconds above 1e11)."""
    if type(value) is int or type(value) is float:
        return _from_epoch(value)
    if type(value) is not str:
        raise ValueError(f"expected an ISO-8601 string or epoch seconds, got {json_kind(value)}")
    text = value.strip()
    if not text:
        return None
    if len(text) > _MAX_TIME_TEXT:
        raise ValueError(f"longer than {_MAX_TIME_TEXT} characters")
    # An ISO-8601 time has a ":" unless it is a bare date, which is refused below anyway.
    if ":" not in text and _EPOCH.fullmatch(text) is not None:
        return _from_epoch(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "expected an ISO-8601 time with a UTC offset, or epoch seconds or milliseconds"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("timestamp needs a UTC offset")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range") from None


def _from_epoch(value: float | str) -> datetime:
    # Seconds with at most 6 decimals, the common case, are exact in integer arithmetic.
    text = repr(value) if type(value) is float else str(value)
    whole, point, fraction = text.partition(".")
    if whole.isdecimal() and (fraction.isdecimal() if point else True) and len(fraction) <= 6:
        micros = int(whole) * MICROS + (int(fraction.ljust(6, "0")) if point else 0)
        if micros <= _MILLISECONDS_ABOVE_MICROS:
            return _EPOCH_START + timedelta(microseconds=micros)
    seconds = Decimal(text)
    if not seconds.is_finite():
        raise ValueError("not a finite number")
    if seconds < 0:
        raise ValueError("before 1970")
    if seconds > _MILLISECONDS_ABOVE:
        seconds = _EXACT.divide(seconds, 1000)
    if seconds > _MAX_EPOCH_SECONDS:
        raise ValueError("out of range")
    exact = _EXACT.multiply(seconds, MICROS).to_integral_value(ROUND_HALF_EVEN)
    return _EPOCH_START + timedelta(microseconds=int(exact))


def format_wire_time(moment: datetime) -> datetime | str:
    """A time for the wire, ``"2026-11-23T21:53:00.123456Z"``, or `moment` itself when orjson
    (with OPT_UTC_Z) writes it so: aware UTC with a fraction. ValueError for a naive time."""
    if moment.microsecond and moment.tzinfo is UTC:
        return moment
    # orjson leaves a zero fraction out; those (whole-second times) are formatted here.
    if moment.tzinfo is None:
        raise ValueError(f"event times must be timezone-aware: {moment.isoformat()}")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_wire_time(value: object) -> datetime:
    """A time as `format_wire_time` writes it, and nothing else."""
    if value is None:
        raise ValueError("required")
    if type(value) is not str or len(value) != 27 or value[-1] != "Z":
        raise ValueError(f"expected a UTC time like {_WIRE_TIME_EXAMPLE}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"expected a UTC time like {_WIRE_TIME_EXAMPLE}") from None
