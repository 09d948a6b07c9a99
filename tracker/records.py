"""The common query-string event straight to its Kafka record, without an `Event` in between.

A pixel's or a click redirect's query parameters become a record through `parse_event`,
`partition_key` and `Event.to_wire`, which spend most of their time on fields and rules such a
request does not use. Nearly every one carries a few printable-ASCII values in `QUERY_FIELDS`;
`QueryRecords.record` checks those by the same rules and writes the same bytes. For anything
else (another field, a time, a value that needed unquoting or is not ASCII, another currency
...) it returns None and the caller asks `parse_event`, which gives the verdict and the reason:
None never means invalid. tests/unit/test_tracker_records.py compares the two on arbitrary
input; bench/README.md ("Tracker") has the figures.

A site's pixel sends the same fields in the same order every time, only the values change. So
where each piece of the record comes from is worked out once per list of field names (a
`_Layout`), and a request only checks its values and writes them into the layout's record.
The record's keys, their order and the limits come from the contract
(`adpulse.core.contract.FIELDS`): `_PLAN` says, per wire key, where this path takes its value.

The pixel goes one step further: `QueryRecords.from_query` reads a plain query string (nothing
escaped, nothing blank or repeated) straight into the layout's values, cache busters included
and left out of the record, without the parameters' dict; anything else goes the dict's way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from operator import itemgetter
from typing import Final

import orjson

from adpulse.core.contract import BY_NAME, CLIENT, WEBHOOK_TYPES, WIRE, Kind, Source
from adpulse.core.currencies import CURRENCY_CODES, parse_micros
from adpulse.core.event import WIRE_REQUIRED, EventRules, EventType, new_event_id
from adpulse.core.fields import COUPON_PATTERN, EVENT_ID_PATTERN

# The event's type, the record's key and its value. A plain tuple: the cheapest record.
QueryRecord = tuple[EventType, bytes, bytes]

# The fields this path knows: the client's but times (ts; spend's start and end), those only
# spend carries, an order's status and a customer id (hashed; a shop's or network's postback,
# not a pixel's), which
# `parse_event` reads, as it does an amount in another currency.
QUERY_FIELDS: Final = frozenset(
    field.name
    for field in CLIENT
    if field.kind not in (Kind.TIME, Kind.STATUS, Kind.CUSTOMER)
    and not field.types <= {EventType.SPEND}
)
# Distinct lists of field names remembered; more than a few means a client varies them.
MAX_LAYOUTS: Final = 1024
# Query parameters a request may carry (more are refused by the tracker's query parser).
MAX_QUERY_PARAMETERS: Final = 64
# Longer query strings are read into a dict first: no record could hold them anyway.
_MAX_STRAIGHT_QUERY: Final = 8192
# Distinct grouped channels and client addresses remembered as written in a record.
MAX_MEMBERS: Final = 16384
# The bytes a plain query string (`QueryRecords.from_query`) is made of: what `record` takes
# as written (printable ASCII but space, '"' and '\\'), less '%' and '+', which need unquoting.
_PLAIN: Final = bytes(code for code in range(0x21, 0x7F) if chr(code) not in {'"', "\\", "%", "+"})
# Deleting these from a query leaves "=&=&...=" when it is plain and each parameter is one
# name, one '=' and a value: then a split at both separators is its names and values in turn.
_PLAIN_BUT_SEPARATORS: Final = _PLAIN.translate(None, b"=&")
_ALTERNATING: Final = b"=&" * (_MAX_STRAIGHT_QUERY // 2)

_TYPES: Final = {
    event_type.value: event_type
    for event_type in EventType
    if event_type is not EventType.SPEND and event_type not in WEBHOOK_TYPES
}
# What a record holds besides the query's values, in this order after them: the event id, the
# time, the channel slug, the upper-cased coupon, the amount's and the currency's members (or
# ""), the grouped channel's and the address's members (or ""), and the bot flag's (or "").
_EXTRAS: Final = (
    *("event_id", "timestamp", "channel", "coupon", "value", "currency"),
    *("grouped_channel", "ip", "bot"),
)
_VALUE_KEY: Final = BY_NAME["value"].wire_key
_CURRENCY_KEY: Final = BY_NAME["currency"].wire_key
_VALUE_TYPES: Final = BY_NAME["value"].types
_COUPON_REQUIRED: Final = BY_NAME["coupon"].required
# The event types whose order id is their Kafka key when they have no click id (`partition_key`).
_ORDER_KEYED: Final = frozenset({EventType.CONVERSION})
_BOT_TYPES: Final = BY_NAME["bot"].types
_BOT: Final = f',"{BY_NAME["bot"].wire_key}":true'
_dumps = orjson.dumps
_UTC_Z = orjson.OPT_UTC_Z


def _plan() -> tuple[tuple[str, str, str], ...]:
    """(how, wire key, source) for each key of the wire this path may write, in the wire's order.

    how: "quoted" a string from `source`, a query field's value or an extra; "json" an extra
    that is JSON text already (the time); "member" an extra that is the whole member or "";
    "click_ids" the ad click ids of the query, in its order.
    """
    plan: list[tuple[str, str, str]] = []
    for field in WIRE:
        key = str(field.wire_key)
        kind = field.kind
        if kind is Kind.TIME:
            # This path writes events received now: ts is received_at; spend's period is absent.
            if key in WIRE_REQUIRED:
                plan.append(("json", key, "timestamp"))
        elif field.source is Source.CLIENT:
            if field.name not in QUERY_FIELDS:
                continue
            if kind in (Kind.ID, Kind.SLUG, Kind.COUPON):  # normalised here: an extra
                plan.append(("quoted", key, field.name))
            elif kind in (Kind.MONEY, Kind.CURRENCY):
                plan.append(("member", key, field.name))
            elif kind in (Kind.TYPE, Kind.TEXT, Kind.TOKEN):  # written as sent
                plan.append(("quoted", key, field.name))
            else:
                raise ValueError(f"tracker/records.py cannot write {key!r} of kind {kind}")
        elif kind is Kind.CLICK_IDS:
            plan.append(("click_ids", key, ""))
        elif field.source is Source.EDGE and kind in (Kind.TEXT, Kind.FLAG):
            plan.append(("member", key, key))
        elif field.source is Source.DERIVED and kind in (Kind.MONEY, Kind.CURRENCY):
            continue  # a conversion from another currency: `parse_event`'s
        elif field.source is Source.DERIVED and field.types <= WEBHOOK_TYPES:
            continue  # a call's: the tracker's webhook writes those, never a query
        else:
            raise ValueError(f"tracker/records.py cannot write {key!r} of kind {kind}")
    extras = {source for how, _, source in plan if how in ("json", "member")}
    extras |= {source for how, _, source in plan if how == "quoted" and source in _EXTRAS}
    if not extras <= set(_EXTRAS):
        raise ValueError(f"no extra for {sorted(extras - set(_EXTRAS))}")
    return tuple(plan)


_PLAN: Final = _plan()


class _Layout:
    """Where each piece of the record comes from, for one list of query fields in one order."""

    __slots__ = (
        "ad_click_ids",
        "channel_at",
        "click_id_at",
        "coupon_at",
        "currency_at",
        "event_id_at",
        "lead_id_at",
        "limit",
        "limits",
        "names_length",
        "order_id_at",
        "parts",
        "pick",
        "rare",
        "type_at",
        "types",
        "utm_medium_at",
        "utm_source_at",
        "value_at",
    )

    def __init__(
        self, keys: tuple[str, ...], rules: EventRules, *, interleaved: bool = False
    ) -> None:
        """`interleaved`: the values come with their names, (name, value, name, value, ...)."""
        # Keys outside QUERY_FIELDS (a pixel's cache busters) are left out of the record.
        step, first = (2, 1) if interleaved else (1, 0)
        at = {key: first + step * index for index, key in enumerate(keys) if key in QUERY_FIELDS}
        extra = {name: step * len(keys) + offset for offset, name in enumerate(_EXTRAS)}
        self.type_at = at["type"]
        self.event_id_at = at.get("event_id", -1)
        self.channel_at = at.get("channel", -1)
        self.click_id_at = at.get("click_id", -1)
        self.order_id_at = at.get("order_id", -1)
        self.lead_id_at = at.get("lead_id", -1)
        self.coupon_at = at.get("coupon", -1)
        self.value_at = at.get("value", -1)
        self.currency_at = at.get("currency", -1)
        self.rare = self.coupon_at >= 0 or self.value_at >= 0 or self.currency_at >= 0
        # In a query of these names, each once with one '=', what is not values.
        self.names_length = sum(map(len, keys)) + 2 * len(keys) - 1
        # The event types that may carry every field of the layout (a lead_id only a lead).
        self.types = frozenset(_TYPES.values()).intersection(*(BY_NAME[key].types for key in at))
        # What the channel grouping reads, for a query read straight into values (where every
        # value is present: a blank one sends the query the other way).
        self.utm_source_at = at.get("utm_source", -1)
        self.utm_medium_at = at.get("utm_medium", -1)
        click_ids = [key for key in at if BY_NAME[key].kind is Kind.AD_CLICK_ID]
        self.ad_click_ids = tuple(click_ids)

        # The record in the wire's order: constant text, or where a value comes from (an index
        # into the query's values followed by the extras).
        pieces: list[str | int] = []
        for how, key, source in _PLAN:
            if how == "json":
                pieces.extend((f',"{key}":', extra[source]))
            elif how == "member":
                if self.rare or source not in ("value", "currency"):  # else always ""
                    pieces.append(extra[source])
            elif how == "click_ids" and click_ids:
                separator = f',"{key}":{{'
                for name in click_ids:
                    pieces.extend((f'{separator}"{name}":"', at[name], '"'))
                    separator = ","
                pieces.append("}")
            elif how == "quoted" and (source == "event_id" or source in at):
                where = extra[source] if source in extra else at[source]
                pieces.extend((f',"{key}":"', where, '"'))
        if not isinstance(pieces[0], str) or not pieces[0].startswith(","):
            raise ValueError("a record starts with a member that is always written")
        pieces[0] = "{" + pieces[0][1:]
        pieces.append("}")
        # The constant text between two values, so that the values go in every other place:
        # [text, value, text, ..., value, text].
        texts = [""]
        indices: list[int] = []
        for piece in pieces:
            if isinstance(piece, str):
                texts[-1] += piece
            else:
                indices.append(piece)
                texts.append("")
        self.parts = [texts[0]]
        for text in texts[1:]:
            self.parts += ("", text)
        if len(indices) < 2:
            raise ValueError("a layout has at least two values")  # an itemgetter of one: no tuple
        self.pick = itemgetter(*indices)

        # Every value's length limit; when all values together are within the smallest, each is.
        limits = {field.name: field.max_length(rules) for field in CLIENT}
        self.limits = tuple(
            (index, limit) for key, index in at.items() if (limit := limits[key]) is not None
        )
        self.limit = min((limit for _, limit in self.limits), default=rules.max_wire_bytes)

    def write(self, values: tuple[str, ...], extras: tuple[str, ...]) -> bytes:
        """The record of the query's `values` and the `extras` in `_EXTRAS`' order.

        The values an itemgetter picks, put between the constant text by a slice assignment
        and joined: all in C, and cheaper than a %-format, which parses its template each time.
        """
        parts = self.parts.copy()
        parts[1::2] = self.pick(values + extras)
        return "".join(parts).encode()


# The grouped channel of a UTM source, a UTM medium and the ad click ids present.
Grouping = Callable[[str | None, str | None, tuple[str, ...]], str | None]


class QueryRecords:
    """`parse_event` then `partition_key` and `to_wire`, for the usual query; one per process."""

    def __init__(
        self,
        rules: EventRules,
        *,
        ignored: frozenset[str] = frozenset(),
        group: Grouping | None = None,
    ) -> None:
        """`ignored`: query parameters `from_query` drops (a pixel's cache busters); `group`:
        the grouped channel of a UTM source, medium and ad click ids, for `from_query`."""
        self.rules = rules
        self._ignored = ignored
        self._group = group
        self._query_layouts: dict[tuple[str, ...], _Layout | None] = {}
        # The names of the last query read straight, and their layout (see `from_query`).
        self._last_keys: tuple[str, ...] = ()
        self._last_layout: _Layout | None = None
        self._reporting_currency = rules.reporting_currency
        self._max_money = rules.max_money
        self._max_wire_bytes = rules.max_wire_bytes
        self._known_channels = rules.known_channels
        self._layouts: dict[tuple[str, ...], _Layout | None] = {}
        # The edge's members of the record: a few channels, and addresses that repeat.
        self._grouped_members: dict[str | None, str] = {None: ""}
        self._ip_members: dict[str | None, str] = {None: ""}
        # The last received_at's JSON text: the pixel passes the same one for a whole turn.
        self._stamped_at: datetime | None = None
        self._stamp = ""

    def record(
        self,
        fields: Mapping[str, str],
        received_at: datetime,
        grouped_channel: str | None = None,
        ip: str | None = None,
        bot: bool = False,
    ) -> QueryRecord | None:
        """The record `parse_event(fields, ...)` gives, or None to ask `parse_event` instead.

        `fields` are query parameters: every value an exact `str`, as the tracker's query
        parser makes them (a `str` subclass would pass here where `parse_event` refuses it).
        """
        keys = tuple(fields)
        layout = self._layouts.get(keys)
        if layout is None and keys not in self._layouts:
            layout = self._learn(keys)
        if (
            layout is None
            or received_at.tzinfo is not UTC
            # orjson leaves out a zero fraction, which `to_wire` then writes itself.
            or not received_at.microsecond
        ):
            return None
        values = tuple(fields.values())
        # Printable ASCII without space, '"' and '\': nothing to strip, refuse or escape, so
        # a value is valid when short enough and is written as it is. A blank one is absent.
        text = "".join(values)
        if (
            not (text.isascii() and text.isprintable())
            or " " in text
            or '"' in text
            or "\\" in text
            or "" in values
        ):
            return None
        return self._write(layout, values, len(text), received_at, grouped_channel, ip, bot)

    def from_query(
        self, query: bytes, received_at: datetime, ip: str | None = None, bot: bool = False
    ) -> QueryRecord | None:
        """`record` of the query's parameters without the ignored ones, grouped by `group`,
        read straight from the query string; None to ask `record` or `parse_event` instead.

        Skipping the parameters' dict is worth it on the pixel path: nothing escaped, every
        value present, no name twice, so each parameter is one `name=value` between two '&'. The
        first of a repeated name counts, and a blank value is absent, in the dict: such
        queries, and any not printable ASCII, go the dict's way.
        """
        if (
            received_at.tzinfo is not UTC
            or not received_at.microsecond
            or self._group is None
            or len(query) > _MAX_STRAIGHT_QUERY
        ):
            return None
        # Printable ASCII but space, '"', '\\', '%' and '+', and one '=' in each parameter: one
        # pass in C instead of seven scans and a loop of `partition` (queries that have a pair
        # without '=' or with two go the dict's way).
        separators = query.translate(None, _PLAIN_BUT_SEPARATORS)
        if not (len(separators) & 1 and _ALTERNATING.startswith(separators)):
            return None
        text = query.decode("latin-1")
        row = tuple(text.replace("=", "&").split("&"))
        if "" in row:
            return None  # a blank value (or name)
        found = row[::2]
        last = self._last_layout
        if found == self._last_keys and last is not None:
            # A site's pixel sends the same names each time: comparing them spares hashing
            # them, which a dict look-up must, as each is a new string.
            layout = last
        else:
            learnt = self._query_layouts.get(found)
            if learnt is None:
                if found in self._query_layouts:
                    return None
                learnt = self._learn_query(found)
                if learnt is None:
                    return None
            layout = self._last_layout = learnt
            self._last_keys = found
        grouped = self._group(
            row[layout.utm_source_at] if layout.utm_source_at >= 0 else None,
            row[layout.utm_medium_at] if layout.utm_medium_at >= 0 else None,
            layout.ad_click_ids,
        )
        # The values' length (the ignored ones' too) bounds each value's: values longer
        # together than the smallest limit are checked one by one.
        return self._write(
            layout, row, len(text) - layout.names_length, received_at, grouped, ip, bot
        )

    def _write(
        self,
        layout: _Layout,
        values: tuple[str, ...],
        length: int,
        received_at: datetime,
        grouped_channel: str | None,
        ip: str | None,
        bot: bool,
    ) -> QueryRecord | None:
        """The record of `values` (checked printable ASCII, none blank) in `layout`; `length`
        is at least their total length."""
        if length > layout.limit:
            for index, limit in layout.limits:
                if len(values[index]) > limit:
                    return None
        event_type = _TYPES.get(values[layout.type_at])
        if event_type not in layout.types:
            return None  # not a type (or not in lower case), or a field it may not carry
        event_id = None
        if layout.event_id_at >= 0:
            event_id = values[layout.event_id_at]
            if EVENT_ID_PATTERN.fullmatch(event_id) is None:
                return None
        channel = ""
        if layout.channel_at >= 0:
            # `channel_slug`'s shortcut: a slug already, but for upper-case letters.
            channel = values[layout.channel_at].lower()
            if not channel.replace("_", "").isalnum():
                return None
            # Unknown to the rules: `parse_event` counts it as "unlisted", and the caller keeps
            # the name for inspection.
            known = self._known_channels
            if known is not None and channel not in known:
                return None
        coupon = amount = currency = ""
        if layout.rare:
            found = self._rare_fields(layout, values, event_type)
            if found is None:
                return None
            coupon, amount, currency = found
        elif event_type in _COUPON_REQUIRED:
            return None  # without a coupon

        grouped = self._grouped_members.get(grouped_channel)
        if grouped is None:
            grouped = self._member(self._grouped_members, "grouped_channel", grouped_channel)
        address = self._ip_members.get(ip)
        if address is None:
            address = self._member(self._ip_members, "ip", ip)
        flagged = _BOT if bot and event_type in _BOT_TYPES else ""
        timestamp = self._stamp
        if received_at is not self._stamped_at:
            timestamp = self._stamp = _dumps(received_at, option=_UTC_Z).decode()
            self._stamped_at = received_at
        if event_id is None:
            event_id = new_event_id()
        extras = (event_id, timestamp, channel, coupon, amount, currency, grouped, address, flagged)
        wire = layout.write(values, extras)
        if len(wire) > self._max_wire_bytes:
            return None
        if layout.click_id_at >= 0:
            key = values[layout.click_id_at]
        elif layout.order_id_at >= 0 and event_type in _ORDER_KEYED:
            key = values[layout.order_id_at]
        elif layout.lead_id_at >= 0:  # only a lead may carry one
            key = values[layout.lead_id_at]
        else:
            key = event_id
        return event_type, key.encode(), wire

    def _learn_query(self, keys: tuple[str, ...]) -> _Layout | None:
        if len(self._query_layouts) >= MAX_LAYOUTS:
            self._query_layouts.clear()
        layout = None
        kept = [key for key in keys if key not in self._ignored]
        if (
            "type" in kept
            and QUERY_FIELDS.issuperset(kept)
            and len(set(keys)) == len(keys)
            and len(keys) <= MAX_QUERY_PARAMETERS
        ):
            layout = _Layout(keys, self.rules, interleaved=True)
        self._query_layouts[keys] = layout
        return layout

    def _learn(self, keys: tuple[str, ...]) -> _Layout | None:
        if len(self._layouts) >= MAX_LAYOUTS:
            self._layouts.clear()
        layout = None
        if "type" in keys and QUERY_FIELDS.issuperset(keys):
            layout = _Layout(keys, self.rules)
        self._layouts[keys] = layout
        return layout

    def _rare_fields(
        self, layout: _Layout, values: tuple[str, ...], event_type: EventType
    ) -> tuple[str, str, str] | None:
        """The coupon upper-cased, the amount's and the currency's members; None to ask
        `parse_event`."""
        coupon = ""
        if layout.coupon_at >= 0:
            coupon = values[layout.coupon_at]
            if COUPON_PATTERN.fullmatch(coupon) is None:
                return None
            coupon = coupon.upper()
        elif event_type in _COUPON_REQUIRED:
            return None
        # A currency without an amount is checked, then dropped, as `parse_event` does.
        currency = None
        if layout.currency_at >= 0:
            currency = values[layout.currency_at].upper()
            if currency not in CURRENCY_CODES:
                return None
        amount = reporting_currency = ""
        if layout.value_at >= 0:
            reporting = self._reporting_currency
            if event_type not in _VALUE_TYPES or (currency is not None and currency != reporting):
                return None  # refused, or a conversion, which needs the rate
            try:
                micros = parse_micros(values[layout.value_at], self._max_money)
            except ValueError:
                return None
            if micros is None:
                return None
            amount = f',"{_VALUE_KEY}":{micros}'
            reporting_currency = f',"{_CURRENCY_KEY}":"{reporting}"'
        return coupon, amount, reporting_currency

    def _member(self, members: dict[str | None, str], name: str, text: str | None) -> str:
        if len(members) >= MAX_MEMBERS:
            members.clear()
            members[None] = ""
        member = members[text] = f',"{name}":{_dumps(text).decode()}'
        return member
