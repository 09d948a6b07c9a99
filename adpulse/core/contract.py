"""The event contract, declared once: every field an event may carry, in one table.

Each `Field` says who sets it (the client, the tracker's edge, or the tracker deriving it from
other fields), its kind (how a client value is parsed and normalised, and what JSON type it has
on the wire), its length limit, which event types may carry it, which it is required on, its
key on the wire and whether the counters read it. Everything else is derived from `FIELDS`:

- `parse_event`'s parsers, its "not allowed on" and "required for" rules and the order in which
  it reports a bad field (adpulse/core/event.py);
- `Event.to_wire`'s keys and their order, and `Event.from_wire`'s shape checks;
- the tracker's query fast path: the fields it reads, their limits, the record's layout
  (tracker/records.py);
- the worker's msgspec struct and the row the Redis script reads, with the Lua source's
  positions (stream/batch.py, stream/lua.py);
- the OpenAPI schema of an event (tracker/openapi.py).

To add a field, say a client's ``utm_id`` (free text, same limit as the other UTM values):

1. add ``Field("utm_id", Kind.TEXT, limit="max_utm_length", description="...")`` to `FIELDS`,
   where it belongs in the order (the wire's key order, and the order bad fields are reported);
2. add ``utm_id: str | None = None`` to `adpulse.core.event.Event` (a test checks that the
   dataclass and the table agree);
3. then what it means downstream, if anything: pass ``counted=True`` and read it in the Lua
   script and `stream.aggregate` if the counters need it.

The tracker accepts it, writes it, documents it in /openapi.json and the worker reads past it
without further edits; tests/unit/test_contract.py runs every field through every path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import partial
from types import MappingProxyType
from typing import Final, Protocol

from adpulse.core.channels import AD_CLICK_ID_KEYS, MAX_CHANNEL_LENGTH
from adpulse.core.customers import MAX_CUSTOMER_ID_LENGTH, parse_customer
from adpulse.core.fields import (
    MAX_COUPON_LENGTH,
    UTM_FIELDS,
    FieldParser,
    parse_channel,
    parse_coupon,
    parse_currency,
    parse_event_id,
    parse_money,
    parse_string,
    parse_text,
    parse_time,
    parse_token,
)
from adpulse.core.orders import parse_status


class EventType(StrEnum):
    CLICK = "click"
    REDEMPTION = "redemption"
    CONVERSION = "conversion"
    SPEND = "spend"
    LEAD = "lead"  # a form sent, a sign-up, a qualified call: the funnel's step before a sale
    # A phone call to a tracked number, written by the tracker's `POST /v1/calls` only.
    CALL = "call"


EVENT_TYPES: Final[tuple[EventType, ...]] = tuple(EventType)
ANY_TYPE: Final = frozenset(EventType)
# Types only the tracker's own webhooks write: a client naming one elsewhere is refused (a
# browser must not be able to count a call).
WEBHOOK_TYPES: Final = frozenset({EventType.CALL})


class Source(StrEnum):
    """Who sets a field: only `CLIENT` fields are accepted from a client."""

    CLIENT = "client"
    EDGE = "edge"  # the tracker's enrichment: when and from where, never from the payload
    DERIVED = "derived"  # the tracker writes it from other fields (conversion, click ids)


class Kind(StrEnum):
    """How a value is parsed (client fields) and its JSON type on the wire."""

    TYPE = "type"  # an `EventType` name in any case; a string on the wire
    ID = "id"  # letters, digits and . _ : -
    TEXT = "text"  # free text without control characters
    TOKEN = "token"  # noqa: S105 - printable, no whitespace (click and order ids)
    AD_CLICK_ID = "ad_click_id"  # a token, kept on the wire inside "ad_click_ids"
    SLUG = "slug"  # a channel slug, see `adpulse.core.channels.channel_slug`
    COUPON = "coupon"  # [A-Za-z0-9_-], upper-cased
    CURRENCY = "currency"  # an ISO 4217 code, upper-cased
    MONEY = "money"  # a decimal amount; integer micros on the wire
    TIME = "time"  # ISO-8601 with an offset or epoch seconds; "...T21:53:00.123456Z" on the wire
    FLAG = "flag"  # a boolean, written only when true
    CLICK_IDS = "click_ids"  # the object of the ad click ids, written only when not empty
    STATUS = "status"  # an order status name or a code of ADPULSE_STATUS_MAP; a name on the wire
    CUSTOMER = "customer"  # free text from the client; its keyed hash on the wire


# The JSON type of each kind on the wire (a time is a string).
WIRE_TYPES: Final[Mapping[Kind, type]] = MappingProxyType(
    {
        **dict.fromkeys(Kind, str),
        Kind.MONEY: int,
        Kind.FLAG: bool,
        Kind.CLICK_IDS: dict,
    }
)


@dataclass(frozen=True, slots=True)
class Field:
    """One field of the contract.

    `name`: the client's name (an edge or derived field's wire key). `limit`: the most
    characters, a number or the name of the `EventRules` setting that holds it. `types`: the
    event types that may carry it (a client sending it on another is refused; an edge field is
    dropped). `required`: the event types that must carry it. `wire`: the key on the wire, the
    name if "", None for an ad click id (inside "ad_click_ids"). `counted`: the counters read
    it, so the Redis script's row carries it. `description`: for people, in /openapi.json.
    """

    name: str
    kind: Kind
    source: Source = Source.CLIENT
    limit: int | str | None = None
    types: frozenset[EventType] = ANY_TYPE
    required: frozenset[EventType] = frozenset()
    wire: str | None = ""
    counted: bool = False
    description: str = ""

    @property
    def wire_key(self) -> str | None:
        return self.name if self.wire == "" else self.wire

    def max_length(self, rules: object) -> int | None:
        """The limit, read from `rules` (an `EventRules`) when it names a setting."""
        if isinstance(self.limit, str):
            limit: int = getattr(rules, self.limit)
            return limit
        return self.limit


_SPEND = frozenset({EventType.SPEND})
_CALL = frozenset({EventType.CALL})
_TIME = "ISO-8601 with a UTC offset, or seconds since the epoch (milliseconds above 1e11)"

FIELDS: Final[tuple[Field, ...]] = (
    Field(
        "event_id",
        Kind.ID,
        limit="max_id_length",
        counted=True,
        description="idempotency key; 32 random hex digits when absent",
    ),
    Field(
        "type",
        Kind.TYPE,
        required=ANY_TYPE,
        counted=True,
        description="click, redemption, conversion, spend or lead, in any case (call: only from "
        "POST /v1/calls)",
    ),
    Field("ts", Kind.TIME, counted=True, description=f"when it happened, {_TIME}; default: now"),
    Field("received_at", Kind.TIME, Source.EDGE, description="when the tracker received it"),
    Field(
        "channel",
        Kind.SLUG,
        limit=MAX_CHANNEL_LENGTH,
        required=_SPEND,
        counted=True,
        description="marketing channel, as a slug: lower case, spaces and dashes become _",
    ),
    Field(
        "coupon",
        Kind.COUPON,
        limit=MAX_COUPON_LENGTH,
        required=frozenset({EventType.REDEMPTION}),
        counted=True,
        description="coupon code, upper-cased",
    ),
    Field(
        "value",
        Kind.MONEY,
        types=frozenset({EventType.REDEMPTION, EventType.CONVERSION}),
        wire="value_micros",
        counted=True,
        description="revenue: a decimal string or number, at most 6 decimals",
    ),
    Field(
        "cost",
        Kind.MONEY,
        types=_SPEND,
        required=_SPEND,
        wire="cost_micros",
        description="spend: a decimal string or number, at most 6 decimals",
    ),
    Field(
        "currency",
        Kind.CURRENCY,
        description="ISO 4217 code of value or cost; default: the reporting currency",
    ),
    Field("source_currency", Kind.CURRENCY, Source.DERIVED, description="the currency sent"),
    Field("source_amount_micros", Kind.MONEY, Source.DERIVED, description="the amount sent"),
    Field("start", Kind.TIME, types=_SPEND, required=_SPEND, description=f"spend from, {_TIME}"),
    Field("end", Kind.TIME, types=_SPEND, required=_SPEND, description=f"spend until, {_TIME}"),
    Field("campaign", Kind.TEXT, limit="max_campaign_length", counted=True),
    Field("click_id", Kind.TOKEN, limit="max_id_length", counted=True),
    Field("order_id", Kind.TOKEN, limit="max_id_length", counted=True),
    Field(
        "status",
        Kind.STATUS,
        types=frozenset({EventType.CONVERSION}),
        counted=True,
        description="the order's status: approved (when absent), pending, declined or refunded, "
        "or a code of ADPULSE_STATUS_MAP; a conversion of an order_id already counted restates "
        "that order (status and value replace the previous ones)",
    ),
    Field(
        "customer_id",
        Kind.CUSTOMER,
        limit=MAX_CUSTOMER_ID_LENGTH,
        types=frozenset({EventType.CONVERSION}),
        counted=True,
        description="the customer (an e-mail address, a CRM id), replaced by its keyed hash "
        "(ADPULSE_HASH_KEY) at the edge: the first conversion makes a new customer of its channel",
    ),
    Field(
        "lead_id",
        Kind.TOKEN,
        limit="max_id_length",
        types=frozenset({EventType.LEAD}),
        counted=True,
        description="the lead's id in the CRM: a lead re-sent with it counts once",
    ),
    *(
        Field(name, Kind.AD_CLICK_ID, limit="max_ad_click_id_length", wire=None)
        for name in sorted(AD_CLICK_ID_KEYS)
    ),
    *(Field(name, Kind.TEXT, limit="max_utm_length") for name in UTM_FIELDS),
    Field(
        "grouped_channel",
        Kind.TEXT,
        Source.EDGE,
        counted=True,
        description="the channel group of the UTM values and ad click ids",
    ),
    Field("ad_click_ids", Kind.CLICK_IDS, Source.DERIVED, description="the ad click ids sent"),
    Field("ip", Kind.TEXT, Source.EDGE, description="the client's address, truncated"),
    Field(
        "bot",
        Kind.FLAG,
        Source.EDGE,
        types=frozenset({EventType.CLICK}),
        description="the user agent is a bot's (clicks only)",
    ),
    # A call's own fields, written by the tracker from the telephony webhook (`POST /v1/calls`);
    # its channel, campaign and click id are those of the number's lease or registration.
    Field(
        "tracked_number",
        Kind.TEXT,
        Source.DERIVED,
        types=_CALL,
        description="the tracked number called, E.164",
    ),
    Field(
        "caller",
        Kind.TEXT,
        Source.DERIVED,
        types=_CALL,
        counted=True,
        description="HMAC-SHA256 of the caller's E.164 number (ADPULSE_HASH_KEY), never the "
        "number: a repeat caller is one lead a day",
    ),
    Field(
        "answered",
        Kind.FLAG,
        Source.DERIVED,
        types=_CALL,
        counted=True,
        description="the call was answered",
    ),
    Field(
        "qualified",
        Kind.FLAG,
        Source.DERIVED,
        types=_CALL,
        counted=True,
        description="answered and at least ADPULSE_CALL_QUALIFIED_SECONDS long: a lead",
    ),
)

BY_NAME: Final[Mapping[str, Field]] = MappingProxyType({field.name: field for field in FIELDS})
CLIENT: Final[tuple[Field, ...]] = tuple(f for f in FIELDS if f.source is Source.CLIENT)
# Every field a client may send, by name: the only field names the tracker's metrics show.
CLIENT_FIELDS: Final = frozenset(field.name for field in CLIENT)
# The fields written under their own key, in the wire's order.
WIRE: Final[tuple[Field, ...]] = tuple(f for f in FIELDS if f.wire_key is not None)
WIRE_KEYS: Final[tuple[str, ...]] = tuple(str(f.wire_key) for f in WIRE)
# What the counters read: the Redis script's row (stream/batch.py puts kind and minute first).
COUNTED: Final[tuple[Field, ...]] = tuple(f for f in FIELDS if f.counted)
AD_CLICK_IDS: Final[tuple[str, ...]] = tuple(f.name for f in FIELDS if f.kind is Kind.AD_CLICK_ID)


class Limits(Protocol):
    """The settings a parser reads (`EventRules` has them)."""

    @property
    def max_money(self) -> Decimal: ...

    @property
    def status_codes(self) -> Mapping[str, str]: ...

    @property
    def hash_key(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A fact about the visitor a server posts for, which replaces the edge's own: accepted only
    from a caller with the API token, used for the enrichment and never written as sent."""

    name: str
    max_length: int
    description: str


FORWARDED: Final[tuple[Forwarded, ...]] = (
    Forwarded(
        "user_agent",
        1024,
        "the visitor's user agent, for the bot flag (API token only; else refused 403)",
    ),
    Forwarded(
        "ip", 64, "the visitor's address, written truncated (API token only; else refused 403)"
    ),
)
FORWARDED_FIELDS: Final = frozenset(forwarded.name for forwarded in FORWARDED)


def client_parsers(rules: Limits) -> Mapping[str, FieldParser]:
    """The parser of each client field with the limits of `rules` bound; built once per rules.

    Each takes a value that is present (not None) and returns its normal form, None for blank,
    or raises ValueError with the reason. `type` is only stripped here (`parse_event` reads it).
    """
    parsers: dict[str, FieldParser] = {}
    for field in CLIENT:
        if field.kind is Kind.STATUS:
            parsers[field.name] = partial(parse_status, codes=rules.status_codes)
            continue
        if field.kind is Kind.CUSTOMER:
            parsers[field.name] = partial(parse_customer, key=rules.hash_key)
            continue
        parsers[field.name] = _parser(field.kind, field.max_length(rules), rules.max_money)
    return MappingProxyType(parsers)


def _parser(kind: Kind, max_length: int | None, max_money: Decimal) -> FieldParser:
    # Closures over plain values, made once per rules: the per-event cost is one call.
    length = max_length or 0
    if kind is Kind.TEXT:
        return lambda value: parse_text(value, length)
    if kind is Kind.TOKEN or kind is Kind.AD_CLICK_ID:
        return lambda value: parse_token(value, length)
    if kind is Kind.ID:
        return lambda value: parse_event_id(value, length)
    if kind is Kind.MONEY:
        return lambda value: parse_money(value, max_money)
    simple: dict[Kind, FieldParser] = {
        Kind.TYPE: parse_string,
        Kind.TIME: parse_time,
        Kind.SLUG: parse_channel,
        Kind.COUPON: parse_coupon,
        Kind.CURRENCY: parse_currency,
    }
    if kind not in simple:
        raise ValueError(f"no client parser for a field of kind {kind}")
    return simple[kind]


def refused_fields(event_type: EventType) -> tuple[tuple[str, str], ...]:
    """(client field, reason) of each field `event_type` may not carry, in the table's order."""
    refused = []
    for field in CLIENT:
        if event_type not in field.types:
            if field.types == _SPEND:
                refused.append((field.name, "only allowed on spend events"))
            else:
                refused.append((field.name, f"not allowed on {event_type} events"))
    return tuple(refused)


def required_fields(event_type: EventType) -> tuple[str, ...]:
    """The client fields `event_type` must carry (but `type`), in the table's order."""
    return tuple(
        field.name for field in CLIENT if event_type in field.required and field.name != "type"
    )
