"""Events: validated by `parse_event`, written by `Event.to_wire`, read by `Event.from_wire`.

A client payload becomes an `Event` through `parse_event`, which validates and normalises it
or raises `EventError` naming the field and the reason. `Event.to_wire` gives the bytes of one
Kafka record and `Event.from_wire` reads them back. The fields, their limits, which event types
carry them and their wire keys are declared once, in `adpulse.core.contract.FIELDS`; this
module applies that table, plus the rules between fields:

- ``type`` is required and read first; ``event_id`` is generated (32 random hex digits) when
  absent; ``ts`` defaults to ``received_at`` and is at most 5 minutes ahead of it and at most
  400 days behind it (`EventRules`).
- When the rules list the known channels (`EventRules.known_channels`), any other channel from
  an untrusted caller (one without the API token) is replaced by ``unlisted``.
- ``value`` and ``cost`` are converted to integer micros of the reporting currency; an amount
  in another currency is converted with the configured rate and kept as ``source_*`` too.
- Spend needs ``start`` < ``end`` within `EventRules.max_spend_range`.
- null or an empty string means "absent" for every optional field. Anything not a client field,
  including the fields the edge sets itself (``received_at``, ``ip``, ``bot`` ...), is refused
  as an unknown field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field, make_dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from os import register_at_fork, urandom
from types import MappingProxyType
from typing import Any, Final, cast

import orjson

from adpulse.core.channels import AD_CLICK_ID_KEYS, UNLISTED, channel_slug
from adpulse.core.contract import (
    BY_NAME,
    CLIENT,
    WEBHOOK_TYPES,
    WIRE,
    WIRE_TYPES,
    Kind,
    client_parsers,
    refused_fields,
    required_fields,
)
from adpulse.core.contract import CLIENT_FIELDS as CLIENT_FIELDS  # re-exported for the metrics
from adpulse.core.contract import EVENT_TYPES as EVENT_TYPES
from adpulse.core.contract import EventType as EventType
from adpulse.core.currencies import CURRENCY_CODES, MICROS, convert_micros
from adpulse.core.currencies import parse_fx_rates as parse_fx_rates  # re-exported for settings
from adpulse.core.fields import MAX_COUPON_LENGTH as MAX_COUPON_LENGTH  # re-exported for the worker
from adpulse.core.fields import (
    FieldParser,
    describe_period,
    field_name,
    format_wire_time,
    json_kind,
    parse_wire_time,
)
from adpulse.core.orders import NO_CODES

MAX_BATCH_EVENTS: Final = 500
MAX_BODY_BYTES: Final = 1 << 20


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
    known_channels: frozenset[str] | None = None
    # Order status codes (ADPULSE_STATUS_MAP) -> status name.
    status_codes: Mapping[str, str] = field(default_factory=lambda: NO_CODES, hash=False)
    # The key customer ids are hashed with (ADPULSE_HASH_KEY); None refuses them.
    hash_key: bytes | None = field(default=None, repr=False, hash=False)
    # One parser per client field with these limits bound, built once instead of per event.
    _field_parsers: Mapping[str, FieldParser] = field(
        init=False, repr=False, compare=False, hash=False
    )

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
        for channel in self.known_channels or ():
            if channel_slug(channel) != channel:
                raise ValueError(f"known channel {channel!r} is not a slug; use [a-z0-9_]")
        object.__setattr__(self, "reporting_currency", reporting)
        object.__setattr__(self, "fx_rates", MappingProxyType(rates))
        object.__setattr__(self, "_field_parsers", client_parsers(self))


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
    status: str | None = None
    customer_id: str | None = None
    lead_id: str | None = None
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
    tracked_number: str | None = None
    caller: str | None = None
    answered: bool = False
    qualified: bool = False

    def to_wire(self) -> bytes:
        """The Kafka record value: JSON with the keys of `contract.WIRE` in their order; None
        fields, empty ad_click_ids and bot=false left out.

        Times are UTC with microseconds and "Z": ``"2026-11-23T21:53:00.123456Z"``.
        """
        # Every value in one attrgetter call, then only the fields not written as they are:
        # the tracker encodes every event it accepts. orjson writes aware UTC datetimes itself.
        values = zip(_WIRE_KEYS, _wire_values(self), strict=True)
        wire: dict[str, Any] = {key: value for key, value in values if value is not None}
        for key in _WIRE_TIMES:
            moment = wire.get(key)
            if moment is not None:
                wire[key] = format_wire_time(moment)
        for key in _WIRE_OMITTED_WHEN_EMPTY:
            value = wire[key]
            if not value:
                del wire[key]
            elif type(value) is not bool:
                wire[key] = dict(value)
        return orjson.dumps(wire, option=orjson.OPT_UTC_Z)

    @classmethod
    def from_wire(cls, data: bytes) -> Event:
        """Read a record written by `to_wire`; EventError if it is not one.

        Checks the shape (keys, JSON types, times, event type), not the content rules that
        `parse_event` applied at the edge.
        """
        try:
            wire = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise EventError("event", "not a JSON document") from None
        if type(wire) is not dict:
            raise EventError("event", f"expected a JSON object, got {json_kind(wire)}")
        for key, value in wire.items():
            kind = _WIRE_PLAIN_KINDS.get(key)
            if kind is None:
                if key not in _WIRE_KINDS:
                    raise EventError(field_name(key), "unknown field")
            elif type(value) is not kind and value is not None:
                raise EventError(key, f"expected {_JSON_NAMES[kind]}, got {json_kind(value)}")
        if wire.get("event_id") is None:
            raise EventError("event_id", "required")
        fields: dict[str, Any] = {**_WIRE_ABSENT, **wire}
        for key in _WIRE_TYPE_KEYS:
            name = fields[key]
            fields[key] = _TYPES.get(name) if type(name) is str else None
            if fields[key] is None:
                raise EventError(key, f"expected one of {', '.join(EVENT_TYPES)}")
        for key in _WIRE_TIMES:
            moment = fields[key]
            if moment is not None or key in WIRE_REQUIRED:
                fields[key] = _read_wire_time(key, moment)
        for key in _WIRE_FLAGS:
            flag = fields[key]
            if flag is None:
                fields[key] = False
            elif type(flag) is not bool:
                raise EventError(key, f"expected boolean, got {json_kind(flag)}")
        for key in _WIRE_CLICK_IDS:
            click_ids = fields[key]
            fields[key] = _EMPTY_CLICK_IDS if click_ids is None else _read_click_ids(click_ids)
        event = _EventFields(**fields)
        event.__class__ = cls
        return cast(Event, event)


# The attributes every Event has (no default): a record without one of them is refused.
WIRE_REQUIRED: Final = frozenset(
    name
    for name, attribute in Event.__dataclass_fields__.items()
    if attribute.default is MISSING and attribute.default_factory is MISSING
)


def _twin_default(attribute: Any) -> Any:
    if attribute.default_factory is not MISSING:
        return field(default_factory=attribute.default_factory)
    return field(default=None if attribute.default is MISSING else attribute.default)


# `Event`'s fields in a mutable twin with the same slots: `parse_event` and `from_wire` fill
# one in, then make it an `Event` by assigning `__class__`, which CPython allows between
# identical slot layouts. The frozen __init__ sets each field through object.__setattr__,
# several times the cost (bench/README.md, "Contract"). Every field has a default here, so that
# a twin can start with only the fields at hand.
_EventFields: Final[type[Any]] = make_dataclass(
    "_EventFields",
    [
        (name, attribute.type, _twin_default(attribute))
        for name, attribute in Event.__dataclass_fields__.items()
    ],
    slots=True,
    kw_only=True,
)
if _EventFields.__slots__ != Event.__slots__:
    raise TypeError("_EventFields must have Event's slots, in Event's order")


def partition_key(event: Event) -> bytes:
    """The Kafka key: a conversion with a click id shares its click's key, hence its partition.

    A call with a caller: the caller's hash, so that one caller's calls keep their order and
    "the first qualified call is the lead" does not depend on partitions (a call is attributed
    at the edge: it needs no click before it). Else the click id if set, else the order id of a
    conversion, else the lead id (only a lead has one), else the event id; UTF-8.
    """
    if event.type is EventType.CALL and event.caller is not None:
        return event.caller.encode()
    if event.click_id is not None:
        return event.click_id.encode()
    if event.order_id is not None and event.type is EventType.CONVERSION:
        return event.order_id.encode()
    if event.lead_id is not None:
        return event.lead_id.encode()
    return event.event_id.encode()


def parse_event(
    raw: Mapping[str, object],
    *,
    rules: EventRules,
    received_at: datetime,
    grouped_channel: str | None = None,
    ip: str | None = None,
    bot: bool = False,
    trusted: bool = False,
    webhook: bool = False,
) -> Event:
    """Validate and normalise one client payload (decoded JSON or query parameters).

    `received_at`, `grouped_channel`, `ip` and `bot` are the edge's enrichment and are trusted;
    `bot` is kept for clicks only (the counters leave bot clicks out). `trusted`: the caller
    showed the API token, so its channel is kept even if not in `rules.known_channels` (the
    worker caps how many channels it keeps); an untrusted caller's unknown channel becomes
    "unlisted". `webhook`: the tracker's own webhook builds it, so a `WEBHOOK_TYPES` type (a
    call) is allowed.
    Raises EventError for the first problem found: unknown fields, then the fields one by one
    (type first), then the rules between fields.

    >>> from datetime import datetime, UTC
    >>> now = datetime(2026, 11, 23, 21, 53, tzinfo=UTC)
    >>> event = parse_event({"type": "conversion", "value": "12.5", "order_id": "A-1"},
    ...                     rules=EventRules(), received_at=now)
    >>> event.value_micros, event.currency, event.ts == now
    (12500000, 'USD', True)
    """
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise EventError("event", f"expected a JSON object, got {json_kind(raw)}")
    if received_at.tzinfo is not UTC:
        if received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")
        received_at = received_at.astimezone(UTC)

    parsers = rules._field_parsers
    given: dict[str, Any] = {}  # the normal form of each field sent; None when blank
    text_length = 0  # of the strings sent, at least that of the strings the record will carry
    key = "event"
    try:
        for key, value in raw.items():
            parse = parsers.get(key)
            if parse is None:
                raise EventError(field_name(key), "unknown field")
            if value is not None:
                given[key] = parse(value)
                if type(value) is str:
                    text_length += len(value)
    except ValueError:  # EventError for an unknown field, or a parser's reason
        raise _first_field_error(raw, parsers) from None
    get = given.get

    event_type = _event_type(get("type"))
    if event_type in WEBHOOK_TYPES and not webhook:
        raise EventError("type", f"{event_type} events come through the tracker's webhook only")
    ts = get("ts")
    if ts is None:
        ts = received_at
    elif ts > received_at + rules.max_future_skew:
        raise EventError("ts", f"more than {describe_period(rules.max_future_skew)} in the future")
    elif ts < received_at - rules.max_age:
        raise EventError("ts", f"older than {describe_period(rules.max_age)}")

    channel = get("channel")
    if (
        channel is not None
        and rules.known_channels is not None
        and channel not in rules.known_channels
        and not trusted
    ):
        channel = UNLISTED
    for name, reason in _REFUSED[event_type]:
        if get(name) is not None:
            raise EventError(name, reason)
    for name in _REQUIRED[event_type]:
        if get(name) is None:
            raise EventError(name, f"required for {event_type} events")
    value = get("value")
    cost = get("cost")
    if event_type is EventType.SPEND:
        _check_spend(given, received_at, rules)

    event = _EventFields(**{key: value for key, value in given.items() if key in _PASSED_ON})
    # A currency without an amount (a pixel template that always sends one) was checked and
    # is dropped: there is nothing to convert.
    event.value_micros = event.cost_micros = event.currency = None
    event.source_currency = event.source_amount_micros = None
    if value is not None or cost is not None:
        key = "value" if value is not None else "cost"
        currency = get("currency") or rules.reporting_currency
        micros, source_micros = _convert(key, given[key], currency, rules)
        if value is not None:
            event.value_micros = micros
        else:
            event.cost_micros = micros
        event.currency = rules.reporting_currency
        if source_micros is not None:
            event.source_currency = currency
            event.source_amount_micros = source_micros

    event_id = get("event_id") or next(_random_ids, None) or _fresh_random_ids()
    click_ids = _EMPTY_CLICK_IDS
    if not AD_CLICK_ID_KEYS.isdisjoint(given):
        click_ids = _click_ids(given)
    event.event_id = event_id
    event.type = event_type
    event.ts = ts
    event.received_at = received_at
    event.channel = channel
    event.grouped_channel = grouped_channel
    event.ad_click_ids = click_ids
    event.ip = ip
    # Only a click is a bot's: conversions, redemptions and spend are posted by shops, CRMs and
    # cost imports whose user agents are HTTP libraries, and they are business facts to count.
    event.bot = bot and event_type in _BOT_TYPES
    event.__class__ = Event
    built: Event = event

    # Encoding is the dearest step of all, so do it only when the strings could make the record
    # too big: a character is at most 4 bytes of UTF-8, the rest of a record well under 1 KiB.
    text_length += len(event_id) + len(grouped_channel or "") + len(ip or "")
    if 1024 + 4 * text_length > rules.max_wire_bytes:
        size = len(built.to_wire())
        if size > rules.max_wire_bytes:
            raise EventError(
                "event", f"{size} bytes once encoded; the limit is {rules.max_wire_bytes}"
            )
    return built


def new_event_id() -> str:
    """A generated event id, as `parse_event` gives an event without one: 32 random hex digits."""
    return next(_random_ids, None) or _fresh_random_ids()


def _fresh_random_ids() -> str:
    """Refill the pool of generated event ids and take the first.

    One urandom call for 256 ids instead of one each, a third of the cost. Taking an id
    is one `next` on a list iterator, which threads cannot interleave, so no two callers get
    the same one; a forked child drops the pool it inherited (see below).
    """
    global _random_ids
    # The hex digits with a space after every 16 bytes, split in C: cheaper than slicing
    # each id out in a comprehension (bench/README.md, "Tracker").
    ids = iter(urandom(16 * _RANDOM_IDS_PER_CALL).hex(" ", 16).split(" "))
    first = next(ids)
    _random_ids = ids
    return first


def _drop_random_ids() -> None:
    global _random_ids
    _random_ids = iter(())


_RANDOM_IDS_PER_CALL: Final = 256
_random_ids: Iterator[str] = iter(())
# A child must not hand out the ids its parent still holds: they would be issued twice.
register_at_fork(after_in_child=_drop_random_ids)


def _first_field_error(raw: Mapping[str, object], parsers: Mapping[str, FieldParser]) -> EventError:
    # Which bad field is reported must not depend on the payload's order: unknown fields first,
    # then a missing type, then the fields in the contract's order.
    for key in (*(key for key in raw if key not in _FIELD_ORDER), *_FIELD_ORDER):
        parse = parsers.get(key)
        if parse is None:
            return EventError(field_name(key), "unknown field")
        value = raw.get(key)
        try:
            if key == "type":
                _event_type(None if value is None else cast("str | None", parse(value)))
            elif value is not None:
                parse(value)
        except EventError as error:
            return error
        except ValueError as error:
            return EventError(key, str(error))
    raise AssertionError("parse_event found a bad field")


def _event_type(name: str | None) -> EventType:
    if name is None:
        raise EventError("type", f"required; one of {', '.join(EVENT_TYPES)}")
    event_type = _TYPES.get(name) or _TYPES.get(name.lower())
    if event_type is None:
        raise EventError(
            "type", f"unknown event type {name[:32]!r}; expected one of {', '.join(EVENT_TYPES)}"
        )
    return event_type


def _check_spend(given: Mapping[str, Any], received_at: datetime, rules: EventRules) -> None:
    """The rules between a spend's fields, once `_REQUIRED` found them present."""
    start, end = given["start"], given["end"]
    if start >= end:
        raise EventError("end", "must be after start")
    if end - start > rules.max_spend_range:
        raise EventError(
            "end", f"the period is longer than {describe_period(rules.max_spend_range)}"
        )
    if start > received_at + rules.max_future_skew:
        raise EventError("start", "in the future")
    if start < received_at - rules.max_age:
        raise EventError("start", f"older than {describe_period(rules.max_age)}")


def _convert(key: str, micros: int, currency: str, rules: EventRules) -> tuple[int, int | None]:
    """(micros in the reporting currency, micros as sent or None when no conversion)."""
    if currency == rules.reporting_currency:
        return micros, None
    rate = rules.fx_rates.get(currency)
    if rate is None:
        raise EventError(
            "currency", f"no exchange rate configured for {currency}; set ADPULSE_FX_RATES"
        )
    reporting_micros = convert_micros(micros, rate)
    if reporting_micros > rules.max_money * MICROS:
        raise EventError(
            key, f"more than the maximum of {rules.max_money} {rules.reporting_currency}"
        )
    return reporting_micros, micros


def _click_ids(given: Mapping[str, object]) -> Mapping[str, str]:
    found = {
        key: value for key, value in given.items() if key in AD_CLICK_ID_KEYS and type(value) is str
    }
    return MappingProxyType(found) if found else _EMPTY_CLICK_IDS


# The order in which a bad field is reported: the table's, but `type` first.
_FIELD_ORDER: Final = ("type", *(field.name for field in CLIENT if field.name != "type"))
_WIRE_KEYS: Final = tuple(str(field.wire_key) for field in WIRE)
_WIRE_KINDS: Final[dict[str, Kind]] = {str(field.wire_key): field.kind for field in WIRE}
_wire_values: Final = attrgetter(*_WIRE_KEYS)
_WIRE_ABSENT: Final[dict[str, None]] = dict.fromkeys(_WIRE_KEYS)
_WIRE_TIMES: Final = tuple(key for key, kind in _WIRE_KINDS.items() if kind is Kind.TIME)
_WIRE_TYPE_KEYS: Final = tuple(key for key, kind in _WIRE_KINDS.items() if kind is Kind.TYPE)
_WIRE_FLAGS: Final = tuple(key for key, kind in _WIRE_KINDS.items() if kind is Kind.FLAG)
_WIRE_CLICK_IDS: Final = tuple(key for key, kind in _WIRE_KINDS.items() if kind is Kind.CLICK_IDS)
_WIRE_OMITTED_WHEN_EMPTY: Final = tuple(
    key for key, kind in _WIRE_KINDS.items() if kind in (Kind.FLAG, Kind.CLICK_IDS)
)
# The keys whose JSON type alone says whether the value is valid; the others are read below.
_WIRE_PLAIN_KINDS: Final[dict[str, type]] = {
    key: WIRE_TYPES[kind]
    for key, kind in _WIRE_KINDS.items()
    if kind not in (Kind.TYPE, Kind.TIME, Kind.FLAG, Kind.CLICK_IDS)
}
_JSON_NAMES: Final[dict[type, str]] = {str: "string", int: "integer", dict: "object"}
_REFUSED: Final = {event_type: refused_fields(event_type) for event_type in EventType}
_REQUIRED: Final = {event_type: required_fields(event_type) for event_type in EventType}
# The client fields `parse_event` writes itself; every other one is kept as its parser gave it.
_OWN_RULES: Final = frozenset({"event_id", "type", "ts", "channel", "value", "cost", "currency"})
_BOT_TYPES: Final = BY_NAME["bot"].types
_PASSED_ON: Final = frozenset(
    field.name
    for field in CLIENT
    if field.name not in _OWN_RULES and field.kind is not Kind.AD_CLICK_ID
)
_TYPES: Final[dict[str, EventType]] = {t.value: t for t in EventType}


def _read_wire_time(key: str, value: object) -> datetime:
    try:
        return parse_wire_time(value)
    except ValueError as error:
        raise EventError(key, str(error)) from None


def _read_click_ids(value: object) -> Mapping[str, str]:
    if type(value) is not dict:
        raise EventError("ad_click_ids", f"expected object, got {json_kind(value)}")
    for key, click_id in value.items():
        if key not in AD_CLICK_ID_KEYS:
            raise EventError("ad_click_ids", f"unknown click id key {field_name(key)!r}")
        if type(click_id) is not str:
            raise EventError("ad_click_ids", f"{key}: expected string")
    return MappingProxyType(value)
