"""The event contract, shared by the tracker (which parses) and the stream worker (which reads).

A client payload becomes an `Event` through `parse_event`, which validates and normalises it
or raises `EventError` naming the field and the reason. `Event.to_wire` gives the bytes of one
Kafka record and `Event.from_wire` reads them back; the wire keys are the field names.

Client input, field by field (a JSON object, or a query string where every value is a string;
null or an empty string means "absent" for every optional field):

- ``event_id``: 1 to 128 of ``[A-Za-z0-9._:-]``; generated (``uuid4().hex``) when absent.
- ``type``: ``click``, ``redemption``, ``conversion`` or ``spend`` (case is ignored).
- ``ts``: an ISO-8601 time with an offset or "Z" (``2026-11-23T21:53:00.123+01:00``), or
  seconds since the epoch as a JSON number or a numeric string; a number above 1e11 is taken
  as milliseconds. Defaults to ``received_at``. At most 5 minutes ahead of ``received_at`` and
  at most 400 days behind it (`EventRules`).
- ``channel``: a slug, see `adpulse.channels.channel_slug`. ``campaign``: free text.
- ``click_id``, ``order_id``: printable, no whitespace. ``coupon``: ``[A-Za-z0-9_-]``,
  upper-cased. ``utm_source`` ... ``utm_content``: free text. ``gclid``, ``fbclid``,
  ``msclkid``, ``ttclid``, ``li_fat_id``: kept in ``ad_click_ids``.
- ``value`` (revenue; redemption and conversion) and ``cost`` (spend only): a decimal string
  ("12.34") or a JSON number, at most 6 decimal places, 0 to 1,000,000,000. ``currency``: an
  ISO 4217 code; when absent the amount is taken to be in the reporting currency. Amounts in
  another currency are converted with the configured rate and kept as ``source_*`` too.
- ``start``, ``end``: the spend period ``[start, end)``, same formats as ``ts``; spend only.

Anything else, including the fields the edge sets itself (``received_at``, ``ip``, ``bot``,
``grouped_channel``, ``value_micros`` ...), is refused as an unknown field.
"""

from __future__ import annotations

import operator
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import orjson

from adpulse.channels import AD_CLICK_ID_KEYS, channel_slug
from adpulse.currencies import CURRENCY_CODES, MICROS, parse_amount, to_micros
from adpulse.currencies import parse_fx_rates as parse_fx_rates  # re-exported for settings

MAX_BATCH_EVENTS: Final = 500
MAX_BODY_BYTES: Final = 1 << 20
MAX_COUPON_LENGTH: Final = 64


class EventType(StrEnum):
    CLICK = "click"
    REDEMPTION = "redemption"
    CONVERSION = "conversion"
    SPEND = "spend"


EVENT_TYPES: Final[tuple[EventType, ...]] = tuple(EventType)


class EventError(ValueError):
    """An event that breaks the contract; `field` names the culprit, `reason` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[type[EventError], tuple[str, str]]:
        return (EventError, (self.field, self.reason))


@dataclass(frozen=True, slots=True)
class EventRules:
    """What `parse_event` accepts; one per tracker process, built from its settings.

    `fx_rates` are units of the reporting currency per unit of the other currency
    (reporting USD, ``{"EUR": Decimal("1.08")}``); the reporting currency itself is 1.
    """

    reporting_currency: str = "USD"
    fx_rates: Mapping[str, Decimal] = field(default_factory=dict, hash=False)
    max_future_skew: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=400)
    max_spend_range: timedelta = timedelta(days=35)
    max_id_length: int = 128
    max_campaign_length: int = 256
    max_utm_length: int = 256
    max_ad_click_id_length: int = 256
    max_wire_bytes: int = 8192
    max_money: Decimal = Decimal(1_000_000_000)

    def __post_init__(self) -> None:
        reporting = self.reporting_currency.strip().upper()
        if reporting not in CURRENCY_CODES:
            raise ValueError(
                f"reporting currency {self.reporting_currency!r} is not an ISO 4217 code"
            )
        rates: dict[str, Decimal] = {}
        for raw_code, rate in self.fx_rates.items():
            code = raw_code.strip().upper()
            if code not in CURRENCY_CODES:
                raise ValueError(f"exchange rate for {raw_code!r}: not an ISO 4217 code")
            if not isinstance(rate, Decimal) or not rate.is_finite() or rate <= 0:
                raise ValueError(f"exchange rate for {code} must be a positive Decimal: {rate!r}")
            if code == reporting and rate != 1:
                raise ValueError(f"exchange rate for {code}, the reporting currency, must be 1")
            rates[code] = rate
        for name in ("max_future_skew", "max_age", "max_spend_range"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        for name in (
            "max_id_length",
            "max_campaign_length",
            "max_utm_length",
            "max_ad_click_id_length",
            "max_wire_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not self.max_money.is_finite() or self.max_money <= 0:
            raise ValueError("max_money must be positive")
        object.__setattr__(self, "reporting_currency", reporting)
        object.__setattr__(self, "fx_rates", MappingProxyType(rates))


def _no_click_ids() -> Mapping[str, str]:
    return _EMPTY_CLICK_IDS


_EMPTY_CLICK_IDS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One validated event. Build it with `parse_event` or `Event.from_wire`.

    Money is in integer micros of the reporting currency (`currency`); `channel` is what the
    client said, `grouped_channel` what the edge derived from UTM values and ad click ids.
    """

    event_id: str
    type: EventType
    ts: datetime
    received_at: datetime
    channel: str | None = None
    campaign: str | None = None
    grouped_channel: str | None = None
    click_id: str | None = None
    coupon: str | None = None
    order_id: str | None = None
    value_micros: int | None = None
    cost_micros: int | None = None
    currency: str | None = None
    source_currency: str | None = None
    source_amount_micros: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    ad_click_ids: Mapping[str, str] = field(default_factory=_no_click_ids, hash=False)
    ip: str | None = None
    bot: bool = False

    def to_wire(self) -> bytes:
        """The Kafka record value: JSON, None fields, empty ad_click_ids and bot=false left out.

        Times are UTC with microseconds and "Z": ``"2026-11-23T21:53:00.123456Z"``.
        """
        wire: dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.type.value,
            "ts": _wire_time(self.ts),
            "received_at": _wire_time(self.received_at),
        }
        for name, value in zip(_WIRE_PLAIN_OPTIONAL, _get_plain_optional(self), strict=True):
            if value is not None:
                wire[name] = value
        if self.start is not None:
            wire["start"] = _wire_time(self.start)
        if self.end is not None:
            wire["end"] = _wire_time(self.end)
        if self.ad_click_ids:
            wire["ad_click_ids"] = dict(self.ad_click_ids)
        if self.bot:
            wire["bot"] = True
        return orjson.dumps(wire, option=orjson.OPT_UTC_Z)

    @classmethod
    def from_wire(cls, data: bytes) -> Event:
        """Read a record written by `to_wire`; EventError if it is not one.

        Checks the shape (keys, JSON types, times, event type), not the content rules that
        `parse_event` applied at the edge. It runs for every record the worker reads, so it
        fills the slots directly instead of going through the generated frozen __init__.
        """
        try:
            wire = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise EventError("event", "not a JSON document") from None
        if type(wire) is not dict:
            raise EventError("event", f"expected a JSON object, got {_json_kind(wire)}")
        if not _WIRE_KEYS.issuperset(wire):
            unknown = next(key for key in wire if key not in _WIRE_KEYS)
            raise EventError(_field_name(unknown), "unknown field")
        get = wire.get
        event: Event = object.__new__(cls)
        for name, kind, set_slot in _WIRE_PLAIN_SLOTS:
            value = get(name)
            if value is not None and type(value) is not kind:
                raise EventError(name, f"expected {_JSON_NAMES[kind]}, got {_json_kind(value)}")
            set_slot(event, value)
        if get("event_id") is None:
            raise EventError("event_id", "required")
        type_name = get("type")
        event_type = _TYPES.get(type_name) if type(type_name) is str else None
        if event_type is None:
            raise EventError("type", f"expected one of {', '.join(EVENT_TYPES)}")
        _SET_TYPE(event, event_type)
        _SET_TS(event, _read_wire_time("ts", get("ts")))
        _SET_RECEIVED_AT(event, _read_wire_time("received_at", get("received_at")))
        start = get("start")
        _SET_START(event, None if start is None else _read_wire_time("start", start))
        end = get("end")
        _SET_END(event, None if end is None else _read_wire_time("end", end))
        click_ids = get("ad_click_ids")
        if click_ids is None:
            _SET_AD_CLICK_IDS(event, _EMPTY_CLICK_IDS)
        else:
            _SET_AD_CLICK_IDS(event, _read_click_ids(click_ids))
        bot = get("bot", False)
        if type(bot) is not bool:
            raise EventError("bot", f"expected boolean, got {_json_kind(bot)}")
        _SET_BOT(event, bot)
        return event


def partition_key(event: Event) -> bytes:
    """The Kafka key: a conversion with a click id shares its click's key, hence its partition.

    The click id if set, else the order id of a conversion, else the event id; UTF-8.
    """
    if event.click_id is not None:
        return event.click_id.encode()
    if event.order_id is not None and event.type is EventType.CONVERSION:
        return event.order_id.encode()
    return event.event_id.encode()


def parse_event(
    raw: Mapping[str, object],
    *,
    rules: EventRules,
    received_at: datetime,
    grouped_channel: str | None = None,
    ip: str | None = None,
    bot: bool = False,
) -> Event:
    """Validate and normalise one client payload (decoded JSON or query parameters).

    `received_at`, `grouped_channel`, `ip` and `bot` are the edge's enrichment and are trusted.
    Raises EventError for the first problem found.

    >>> from datetime import datetime, UTC
    >>> now = datetime(2026, 11, 23, 21, 53, tzinfo=UTC)
    >>> event = parse_event({"type": "conversion", "value": "12.5", "order_id": "A-1"},
    ...                     rules=EventRules(), received_at=now)
    >>> event.value_micros, event.currency, event.ts == now
    (12500000, 'USD', True)
    """
    if not isinstance(raw, Mapping):
        raise EventError("event", f"expected a JSON object, got {_json_kind(raw)}")
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    received_at = received_at.astimezone(UTC)
    given: dict[str, object] = {}
    click_ids: dict[str, str] = {}
    for key, value in raw.items():
        if key in _CLIENT_FIELDS:
            if value is not None:
                given[key] = value
        elif key in AD_CLICK_ID_KEYS:
            click_id = _token(key, value, rules.max_ad_click_id_length)
            if click_id is not None:
                click_ids[key] = click_id
        else:
            raise EventError(_field_name(key), "unknown field")

    event_type = _event_type(given.get("type"))
    is_spend = event_type is EventType.SPEND

    event_id = _event_id(given.get("event_id"), rules.max_id_length) or uuid.uuid4().hex
    ts = _time("ts", given.get("ts")) or received_at
    if ts > received_at + rules.max_future_skew:
        raise EventError("ts", f"more than {_describe(rules.max_future_skew)} in the future")
    if ts < received_at - rules.max_age:
        raise EventError("ts", f"older than {_describe(rules.max_age)}")

    channel = _channel(given.get("channel"))
    coupon = _coupon(given.get("coupon"))

    value = _amount("value", given.get("value"), rules)
    cost = _amount("cost", given.get("cost"), rules)
    currency = _currency(given.get("currency"))
    if value is not None and event_type in (EventType.CLICK, EventType.SPEND):
        raise EventError("value", f"not allowed on {event_type} events")
    if cost is not None and not is_spend:
        raise EventError("cost", "only allowed on spend events")

    start = _time("start", given.get("start"))
    end = _time("end", given.get("end"))
    if is_spend:
        if cost is None:
            raise EventError("cost", "required for spend events")
        if channel is None:
            raise EventError("channel", "required for spend events")
        if start is None:
            raise EventError("start", "required for spend events")
        if end is None:
            raise EventError("end", "required for spend events")
        if start >= end:
            raise EventError("end", "must be after start")
        if end - start > rules.max_spend_range:
            raise EventError("end", f"the period is longer than {_describe(rules.max_spend_range)}")
        if start > received_at + rules.max_future_skew:
            raise EventError("start", "in the future")
        if start < received_at - rules.max_age:
            raise EventError("start", f"older than {_describe(rules.max_age)}")
    elif start is not None:
        raise EventError("start", "only allowed on spend events")
    elif end is not None:
        raise EventError("end", "only allowed on spend events")
    if event_type is EventType.REDEMPTION and coupon is None:
        raise EventError("coupon", "required for redemption events")

    value_micros: int | None = None
    cost_micros: int | None = None
    source_amount_micros: int | None = None
    source_currency: str | None = None
    amount = value if value is not None else cost
    if amount is not None:
        currency = currency or rules.reporting_currency
        micros, source_amount_micros = _convert(
            "value" if value is not None else "cost", amount, currency, rules
        )
        if source_amount_micros is not None:
            source_currency = currency
        currency = rules.reporting_currency
        if value is not None:
            value_micros = micros
        else:
            cost_micros = micros
    else:
        # A currency without an amount (a pixel template that always sends one) is checked,
        # then dropped: there is nothing to convert.
        currency = None

    event = Event(
        event_id=event_id,
        type=event_type,
        ts=ts,
        received_at=received_at,
        channel=channel,
        campaign=_text("campaign", given.get("campaign"), rules.max_campaign_length),
        grouped_channel=grouped_channel,
        click_id=_token("click_id", given.get("click_id"), rules.max_id_length),
        coupon=coupon,
        order_id=_token("order_id", given.get("order_id"), rules.max_id_length),
        value_micros=value_micros,
        cost_micros=cost_micros,
        currency=currency,
        source_currency=source_currency,
        source_amount_micros=source_amount_micros,
        start=start,
        end=end,
        utm_source=_text("utm_source", given.get("utm_source"), rules.max_utm_length),
        utm_medium=_text("utm_medium", given.get("utm_medium"), rules.max_utm_length),
        utm_campaign=_text("utm_campaign", given.get("utm_campaign"), rules.max_utm_length),
        utm_term=_text("utm_term", given.get("utm_term"), rules.max_utm_length),
        utm_content=_text("utm_content", given.get("utm_content"), rules.max_utm_length),
        ad_click_ids=MappingProxyType(click_ids) if click_ids else _EMPTY_CLICK_IDS,
        ip=ip,
        bot=bot,
    )
    _check_size(event, rules.max_wire_bytes)
    return event


_CLIENT_FIELDS: Final = frozenset(
    {
        "event_id",
        "type",
        "ts",
        "channel",
        "campaign",
        "click_id",
        "coupon",
        "order_id",
        "value",
        "cost",
        "currency",
        "start",
        "end",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_term",
        "utm_content",
    }
)
_WIRE_PLAIN_OPTIONAL: Final = (
    "channel",
    "campaign",
    "grouped_channel",
    "click_id",
    "coupon",
    "order_id",
    "value_micros",
    "cost_micros",
    "currency",
    "source_currency",
    "source_amount_micros",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "ip",
)
_WIRE_TEXT: Final = tuple(
    name
    for name in _WIRE_PLAIN_OPTIONAL
    if name not in {"value_micros", "cost_micros", "source_amount_micros"}
)
_WIRE_KINDS: Final[dict[str, type]] = {
    "event_id": str,
    "type": str,
    "ts": str,
    "received_at": str,
    "start": str,
    "end": str,
    "ad_click_ids": dict,
    "bot": bool,
    **{name: str for name in _WIRE_TEXT},
    "value_micros": int,
    "cost_micros": int,
    "source_amount_micros": int,
}
_WIRE_KEYS: Final = frozenset(_WIRE_KINDS)
_JSON_NAMES: Final[dict[type, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}
_TYPES: Final[dict[str, EventType]] = {t.value: t for t in EventType}


def _slot_setter(name: str) -> Callable[[Event, object], None]:
    # The slot's member descriptor: what the frozen __init__ ends up calling, minus the detour.
    setter: Callable[[Event, object], None] = Event.__dict__[name].__set__
    return setter


_get_plain_optional = operator.attrgetter(*_WIRE_PLAIN_OPTIONAL)
_WIRE_PLAIN_SLOTS: Final = tuple(
    (name, _WIRE_KINDS[name], _slot_setter(name)) for name in ("event_id", *_WIRE_PLAIN_OPTIONAL)
)
_SET_TYPE: Final = _slot_setter("type")
_SET_TS: Final = _slot_setter("ts")
_SET_RECEIVED_AT: Final = _slot_setter("received_at")
_SET_START: Final = _slot_setter("start")
_SET_END: Final = _slot_setter("end")
_SET_AD_CLICK_IDS: Final = _slot_setter("ad_click_ids")
_SET_BOT: Final = _slot_setter("bot")

_EVENT_ID = re.compile(r"[A-Za-z0-9._:\-]+")
_COUPON = re.compile(r"[A-Za-z0-9_\-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s")
_EPOCH = re.compile(r"-?\d+(?:\.\d+)?")
_EXACT = Context(prec=80, rounding=ROUND_HALF_EVEN)
_EPOCH_START = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_EPOCH_SECONDS = Decimal(253_402_300_799)  # 9999-12-31T23:59:59Z
_MILLISECONDS_ABOVE = Decimal(100_000_000_000)
_MAX_TIME_TEXT = 64


def _json_kind(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _field_name(key: object) -> str:
    name = str(key)
    return name if len(name) <= 64 else name[:64] + "..."


def _string(key: str, value: object) -> str | None:
    """The stripped string, None when absent or blank; EventError for a non-string."""
    if value is None:
        return None
    if type(value) is not str:
        raise EventError(key, f"expected a string, got {_json_kind(value)}")
    value = value.strip()
    return value or None


def _text(key: str, value: object, max_length: int) -> str | None:
    text = _string(key, value)
    if text is None:
        return None
    if len(text) > max_length:
        raise EventError(key, f"longer than {max_length} characters")
    if _CONTROL.search(text) is not None:
        raise EventError(key, "contains control characters")
    return text


def _token(key: str, value: object, max_length: int) -> str | None:
    token = _string(key, value)
    if token is None:
        return None
    if len(token) > max_length:
        raise EventError(key, f"longer than {max_length} characters")
    if not token.isprintable() or _WHITESPACE.search(token) is not None:
        raise EventError(key, "must be printable characters without whitespace")
    return token


def _event_id(value: object, max_length: int) -> str | None:
    event_id = _string("event_id", value)
    if event_id is None:
        return None
    if len(event_id) > max_length:
        raise EventError("event_id", f"longer than {max_length} characters")
    if _EVENT_ID.fullmatch(event_id) is None:
        raise EventError("event_id", "only letters, digits and . _ : - are allowed")
    return event_id


def _event_type(value: object) -> EventType:
    name = _string("type", value)
    if name is None:
        raise EventError("type", f"required; one of {', '.join(EVENT_TYPES)}")
    event_type = _TYPES.get(name.lower())
    if event_type is None:
        raise EventError(
            "type", f"unknown event type {name[:32]!r}; expected one of {', '.join(EVENT_TYPES)}"
        )
    return event_type


def _channel(value: object) -> str | None:
    text = _string("channel", value)
    if text is None:
        return None
    try:
        return channel_slug(text)
    except ValueError as error:
        raise EventError("channel", str(error)) from None


def _coupon(value: object) -> str | None:
    coupon = _string("coupon", value)
    if coupon is None:
        return None
    if len(coupon) > MAX_COUPON_LENGTH:
        raise EventError("coupon", f"longer than {MAX_COUPON_LENGTH} characters")
    if _COUPON.fullmatch(coupon) is None:
        raise EventError("coupon", "only letters, digits, '_' and '-' are allowed")
    return coupon.upper()


def _currency(value: object) -> str | None:
    code = _string("currency", value)
    if code is None:
        return None
    code = code.upper()
    if code not in CURRENCY_CODES:
        raise EventError("currency", f"unknown ISO-4217 currency code {code[:16]!r}")
    return code


def _time(key: str, value: object) -> datetime | None:
    """A UTC datetime from ISO-8601 with an offset, or epoch seconds (milliseconds above 1e11)."""
    if value is None:
        return None
    if type(value) is int or type(value) is float:
        return _from_epoch(key, value)
    if type(value) is not str:
        raise EventError(
            key, f"expected an ISO-8601 string or epoch seconds, got {_json_kind(value)}"
        )
    text = value.strip()
    if not text:
        return None
    if len(text) > _MAX_TIME_TEXT:
        raise EventError(key, f"longer than {_MAX_TIME_TEXT} characters")
    if _EPOCH.fullmatch(text) is not None:
        return _from_epoch(key, text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise EventError(
            key, "expected an ISO-8601 time with a UTC offset, or epoch seconds or milliseconds"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise EventError(key, "timestamp needs a UTC offset")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise EventError(key, "out of range") from None


def _from_epoch(key: str, value: float | str) -> datetime:
    seconds = Decimal(repr(value)) if type(value) is float else Decimal(value)
    if not seconds.is_finite():
        raise EventError(key, "not a finite number")
    if seconds < 0:
        raise EventError(key, "before 1970")
    if seconds > _MILLISECONDS_ABOVE:
        seconds = _EXACT.divide(seconds, 1000)
    if seconds > _MAX_EPOCH_SECONDS:
        raise EventError(key, "out of range")
    micros = _EXACT.multiply(seconds, MICROS).to_integral_value(ROUND_HALF_EVEN)
    return _EPOCH_START + timedelta(microseconds=int(micros))


def _amount(key: str, value: object, rules: EventRules) -> Decimal | None:
    if value is None:
        return None
    if type(value) not in (str, int, float):
        raise EventError(key, f"expected a decimal number, got {_json_kind(value)}")
    try:
        return parse_amount(value, rules.max_money)  # type: ignore[arg-type]
    except ValueError as error:
        raise EventError(key, str(error)) from None


def _convert(key: str, amount: Decimal, currency: str, rules: EventRules) -> tuple[int, int | None]:
    """(micros in the reporting currency, micros as sent or None when no conversion)."""
    micros = to_micros(amount)
    if currency == rules.reporting_currency:
        return micros, None
    rate = rules.fx_rates.get(currency)
    if rate is None:
        raise EventError(
            "currency", f"no exchange rate configured for {currency}; set ADPULSE_FX_RATES"
        )
    reporting_micros = to_micros(amount, rate)
    if reporting_micros > rules.max_money * MICROS:
        raise EventError(
            key, f"more than the maximum of {rules.max_money} {rules.reporting_currency}"
        )
    return reporting_micros, micros


def _check_size(event: Event, max_wire_bytes: int) -> None:
    # Encoding costs a few microseconds, so do it only when the strings could make the record
    # too big: a character is at most 4 bytes of UTF-8, the rest of a record well under 1 KiB.
    chars = sum(len(getattr(event, name) or "") for name in _WIRE_TEXT)
    chars += len(event.event_id) + sum(len(k) + len(v) for k, v in event.ad_click_ids.items())
    if 1024 + 4 * chars <= max_wire_bytes:
        return
    size = len(event.to_wire())
    if size > max_wire_bytes:
        raise EventError("event", f"{size} bytes once encoded; the limit is {max_wire_bytes}")


def _describe(period: timedelta) -> str:
    seconds = int(period.total_seconds())
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % length == 0:
            count = seconds // length
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} seconds"


def _wire_time(moment: datetime) -> datetime | str:
    # orjson writes an aware UTC datetime in C, as "...T21:53:00.123456Z", but leaves the
    # fraction out when it is zero; those (whole-second times) are formatted here.
    if moment.microsecond and moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        raise ValueError(f"event times must be timezone-aware: {moment.isoformat()}")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_WIRE_TIME_EXAMPLE = "2026-11-23T21:53:00.000000Z"


def _read_wire_time(key: str, value: object) -> datetime:
    if value is None:
        raise EventError(key, "required")
    if type(value) is not str or len(value) != 27 or value[-1] != "Z":
        raise EventError(key, f"expected a UTC time like {_WIRE_TIME_EXAMPLE}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise EventError(key, f"expected a UTC time like {_WIRE_TIME_EXAMPLE}") from None


def _read_click_ids(value: object) -> Mapping[str, str]:
    if type(value) is not dict:
        raise EventError("ad_click_ids", f"expected object, got {_json_kind(value)}")
    for key, click_id in value.items():
        if key not in AD_CLICK_ID_KEYS:
            raise EventError("ad_click_ids", f"unknown click id key {_field_name(key)!r}")
        if type(click_id) is not str:
            raise EventError("ad_click_ids", f"{key}: expected string")
    return MappingProxyType(value)
