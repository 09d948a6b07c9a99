"""The event contract, shared by the tracker (which parses) and the stream worker (which reads).

A client payload becomes an `Event` through `parse_event`, which validates and normalises it
or raises `EventError` naming the field and the reason. `Event.to_wire` gives the bytes of one
Kafka record and `Event.from_wire` reads them back; the wire keys are the field names.

Client input, field by field (a JSON object, or a query string where every value is a string;
null or an empty string means "absent" for every optional field):

- ``event_id``: 1 to 128 of ``[A-Za-z0-9._:-]``; generated (32 random hex digits) when absent.
- ``type``: ``click``, ``redemption``, ``conversion`` or ``spend`` (case is ignored).
- ``ts``: an ISO-8601 time with an offset or "Z" (``2026-11-23T21:53:00.123+01:00``), or
  seconds since the epoch as a JSON number or a numeric string; a number above 1e11 is taken
  as milliseconds. Defaults to ``received_at``. At most 5 minutes ahead of ``received_at`` and
  at most 400 days behind it (`EventRules`).
- ``channel``: a slug, see `adpulse.core.channels.channel_slug`. When the rules list the known
  channels (`EventRules.known_channels`), any other from an untrusted caller (one without the
  API token) is replaced by ``unlisted``. ``campaign``: free text.
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

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from os import register_at_fork, urandom
from types import MappingProxyType
from typing import Any, Final, cast

import orjson

from adpulse.core.channels import AD_CLICK_ID_KEYS, UNLISTED, channel_slug
from adpulse.core.currencies import CURRENCY_CODES, MICROS, convert_micros
from adpulse.core.currencies import parse_fx_rates as parse_fx_rates  # re-exported for settings
from adpulse.core.fields import MAX_COUPON_LENGTH as MAX_COUPON_LENGTH  # re-exported for the worker
from adpulse.core.fields import (
    UTM_FIELDS,
    FieldParser,
    describe_period,
    field_name,
    field_parsers,
    format_wire_time,
    json_kind,
    parse_wire_time,
)

MAX_BATCH_EVENTS: Final = 500
MAX_BODY_BYTES: Final = 1 << 20


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
    known_channels: frozenset[str] | None = None
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
        parsers = field_parsers(
            max_id_length=self.max_id_length,
            max_campaign_length=self.max_campaign_length,
            max_utm_length=self.max_utm_length,
            max_ad_click_id_length=self.max_ad_click_id_length,
            max_money=self.max_money,
        )
        object.__setattr__(self, "_field_parsers", parsers)


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
        # The tracker encodes every event it accepts, so this spells the fields out: a loop
        # over names costs twice as much. orjson writes aware UTC datetimes itself, in C.
        ts = self.ts
        received_at = self.received_at
        wire: dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.type,  # a str subclass: orjson writes its value
            "ts": ts if ts.microsecond and ts.tzinfo is UTC else format_wire_time(ts),
            "received_at": (
                received_at
                if received_at.microsecond and received_at.tzinfo is UTC
                else format_wire_time(received_at)
            ),
        }
        if self.channel is not None:
            wire["channel"] = self.channel
        if self.campaign is not None:
            wire["campaign"] = self.campaign
        if self.grouped_channel is not None:
            wire["grouped_channel"] = self.grouped_channel
        if self.click_id is not None:
            wire["click_id"] = self.click_id
        if self.coupon is not None:
            wire["coupon"] = self.coupon
        if self.order_id is not None:
            wire["order_id"] = self.order_id
        if self.value_micros is not None:
            wire["value_micros"] = self.value_micros
        if self.cost_micros is not None:
            wire["cost_micros"] = self.cost_micros
        if self.currency is not None:
            wire["currency"] = self.currency
        if self.source_currency is not None:
            wire["source_currency"] = self.source_currency
        if self.source_amount_micros is not None:
            wire["source_amount_micros"] = self.source_amount_micros
        if self.utm_source is not None:
            wire["utm_source"] = self.utm_source
        if self.utm_medium is not None:
            wire["utm_medium"] = self.utm_medium
        if self.utm_campaign is not None:
            wire["utm_campaign"] = self.utm_campaign
        if self.utm_term is not None:
            wire["utm_term"] = self.utm_term
        if self.utm_content is not None:
            wire["utm_content"] = self.utm_content
        if self.ip is not None:
            wire["ip"] = self.ip
        if self.start is not None:
            wire["start"] = format_wire_time(self.start)
        if self.end is not None:
            wire["end"] = format_wire_time(self.end)
        if self.ad_click_ids:
            wire["ad_click_ids"] = dict(self.ad_click_ids)
        if self.bot:
            wire["bot"] = True
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
                if key not in _WIRE_KEYS:
                    raise EventError(field_name(key), "unknown field")
            elif type(value) is not kind and value is not None:
                raise EventError(key, f"expected {_JSON_NAMES[kind]}, got {json_kind(value)}")
        get = wire.get
        event_id = get("event_id")
        if event_id is None:
            raise EventError("event_id", "required")
        type_name = get("type")
        event_type = _TYPES.get(type_name) if type(type_name) is str else None
        if event_type is None:
            raise EventError("type", f"expected one of {', '.join(EVENT_TYPES)}")
        start = get("start")
        end = get("end")
        click_ids = get("ad_click_ids")
        bot = get("bot", False)
        if type(bot) is not bool:
            raise EventError("bot", f"expected boolean, got {json_kind(bot)}")

        event: Any = _EventBuilder()
        event.event_id = event_id
        event.type = event_type
        event.ts = _read_wire_time("ts", get("ts"))
        event.received_at = _read_wire_time("received_at", get("received_at"))
        event.channel = get("channel")
        event.campaign = get("campaign")
        event.grouped_channel = get("grouped_channel")
        event.click_id = get("click_id")
        event.coupon = get("coupon")
        event.order_id = get("order_id")
        event.value_micros = get("value_micros")
        event.cost_micros = get("cost_micros")
        event.currency = get("currency")
        event.source_currency = get("source_currency")
        event.source_amount_micros = get("source_amount_micros")
        event.start = None if start is None else _read_wire_time("start", start)
        event.end = None if end is None else _read_wire_time("end", end)
        event.utm_source = get("utm_source")
        event.utm_medium = get("utm_medium")
        event.utm_campaign = get("utm_campaign")
        event.utm_term = get("utm_term")
        event.utm_content = get("utm_content")
        event.ad_click_ids = _EMPTY_CLICK_IDS if click_ids is None else _read_click_ids(click_ids)
        event.ip = get("ip")
        event.bot = bot
        event.__class__ = cls
        return cast(Event, event)


class _EventBuilder:
    """`Event`'s slots without the frozen __setattr__: events are filled in here, then made
    `Event`s by assigning `__class__`, which CPython allows between identical slot layouts.

    The frozen __init__ sets each of the 25 fields through object.__setattr__, about half of
    what parsing a pixel costs; a plain slot assignment is a tenth of that.
    """

    __slots__ = Event.__slots__


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
    trusted: bool = False,
) -> Event:
    """Validate and normalise one client payload (decoded JSON or query parameters).

    `received_at`, `grouped_channel`, `ip` and `bot` are the edge's enrichment and are trusted;
    `bot` is kept for clicks only (the counters leave bot clicks out). `trusted`: the caller
    showed the API token, so its channel is kept even if not in `rules.known_channels` (the
    worker caps how many channels it keeps); an untrusted caller's unknown channel becomes
    "unlisted".
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
    coupon = get("coupon")
    value = get("value")
    cost = get("cost")
    start = get("start")
    end = get("end")
    if event_type is EventType.SPEND:
        if value is not None:
            raise EventError("value", "not allowed on spend events")
        _check_spend(given, received_at, rules)
    else:
        if value is not None and event_type is EventType.CLICK:
            raise EventError("value", "not allowed on click events")
        if cost is not None:
            raise EventError("cost", "only allowed on spend events")
        if start is not None:
            raise EventError("start", "only allowed on spend events")
        if end is not None:
            raise EventError("end", "only allowed on spend events")
        if coupon is None and event_type is EventType.REDEMPTION:
            raise EventError("coupon", "required for redemption events")

    event: Any = _EventBuilder()
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
    event.campaign = get("campaign")
    event.grouped_channel = grouped_channel
    event.click_id = get("click_id")
    event.coupon = coupon
    event.order_id = get("order_id")
    event.start = start
    event.end = end
    event.utm_source = get("utm_source")
    event.utm_medium = get("utm_medium")
    event.utm_campaign = get("utm_campaign")
    event.utm_term = get("utm_term")
    event.utm_content = get("utm_content")
    event.ad_click_ids = click_ids
    event.ip = ip
    # Only a click is a bot's: conversions, redemptions and spend are posted by shops, CRMs and
    # cost imports whose user agents are HTTP libraries, and they are business facts to count.
    event.bot = bot and event_type is EventType.CLICK
    event.__class__ = Event
    built: Event = event

    # Encoding costs a few microseconds, so do it only when the strings could make the record
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

    One urandom call for 256 ids instead of one each: 0.17 us an id against 0.47. Taking an id
    is one `next` on a list iterator, which threads cannot interleave, so no two callers get
    the same one; a forked child drops the pool it inherited (see below).
    """
    global _random_ids
    digits = urandom(16 * _RANDOM_IDS_PER_CALL).hex()
    ids = iter([digits[start : start + 32] for start in range(0, len(digits), 32)])
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
    # Which bad field is reported must not depend on the payload's order: unknown fields and ad
    # click ids first, then a missing type, then the fields in the module docstring's order.
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
    cost, channel, start, end = map(given.get, ("cost", "channel", "start", "end"))
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


_FIELD_ORDER: Final = (
    *("type", "event_id", "ts", "channel", "coupon", "value", "cost", "currency", "start", "end"),
    *("campaign", "click_id", "order_id", *UTM_FIELDS),
)
# Every field a client may send, by name: the only field names the tracker's metrics show.
CLIENT_FIELDS: Final = frozenset(_FIELD_ORDER) | AD_CLICK_ID_KEYS
_WIRE_TEXT: Final = (
    *("event_id", "channel", "campaign", "grouped_channel", "click_id", "coupon", "order_id"),
    *("currency", "source_currency", *UTM_FIELDS, "ip"),
)
_WIRE_PLAIN_KINDS: Final[dict[str, type]] = {
    **dict.fromkeys(_WIRE_TEXT, str),
    **dict.fromkeys(("value_micros", "cost_micros", "source_amount_micros"), int),
}
_WIRE_KEYS: Final = frozenset(
    {*_WIRE_PLAIN_KINDS, "type", "ts", "received_at", "start", "end", "ad_click_ids", "bot"}
)
_JSON_NAMES: Final[dict[type, str]] = {str: "string", int: "integer", dict: "object"}
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
