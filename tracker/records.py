"""The common query-string event straight to its Kafka record, without an `Event` in between.

A pixel's or a click redirect's query parameters become a record through `parse_event`,
`partition_key` and `Event.to_wire`: 4.6 us of a pixel's budget (timeit), most of it for fields
and rules such a request does not use. Nearly every one carries a few printable-ASCII values in
`QUERY_FIELDS`; `QueryRecords.record` checks those by the same rules and writes the same bytes in
2.5 us (the benchmark's pixel). For anything else (another field, a time, a value that needed
unquoting or is not ASCII, another currency ...) it returns None and the caller asks
`parse_event`, which gives the verdict and the reason: None never means invalid.
tests/unit/test_tracker_records.py compares the two on arbitrary input.

A site's pixel sends the same fields in the same order every time, only the values change. So
where each piece of the record comes from is worked out once per list of field names (a
`_Layout`), and a request only checks its values and writes them into the layout's record.

The pixel goes one step further: `QueryRecords.from_query` reads a plain query string (nothing
escaped, nothing blank or repeated) straight into the layout's values, cache busters included
and left out of the record, without the parameters' dict; anything else goes the dict's way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from adpulse.core.channels import AD_CLICK_ID_KEYS, MAX_CHANNEL_LENGTH
from adpulse.core.currencies import CURRENCY_CODES, parse_micros
from adpulse.core.event import EventRules, EventType, new_event_id
from adpulse.core.fields import COUPON_PATTERN, EVENT_ID_PATTERN, MAX_COUPON_LENGTH, UTM_FIELDS

# The event's type, the record's key and its value. A plain tuple: a NamedTuple's constructor
# would cost 0.2 us of the pixel's budget.
QueryRecord = tuple[EventType, bytes, bytes]

# The fields this path knows. Spend (cost, start, end) and event times (ts) are left to
# `parse_event`, and so is an amount in another currency, which needs a rate.
QUERY_FIELDS: Final = frozenset(
    {"type", "event_id", "channel", "campaign", "click_id", "coupon", "order_id"}
    | {"value", "currency", *UTM_FIELDS, *AD_CLICK_ID_KEYS}
)
# Distinct lists of field names remembered; more than a few means a client varies them.
MAX_LAYOUTS: Final = 1024
# Records a layout writes by joining its pieces before it gets a writer of its own.
COMPILE_AFTER: Final = 16
# Query parameters a request may carry (more are refused by the tracker's query parser).
MAX_QUERY_PARAMETERS: Final = 64
# Longer query strings are read into a dict first: no record could hold them anyway.
_MAX_STRAIGHT_QUERY: Final = 8192
# Distinct grouped channels and client addresses remembered as written in a record.
MAX_MEMBERS: Final = 16384

_TYPES: Final = {
    event_type.value: event_type for event_type in EventType if event_type is not EventType.SPEND
}
# An enum member costs 0.05 us more to look up on its class than a module constant.
_CLICK: Final = EventType.CLICK
_CONVERSION: Final = EventType.CONVERSION
_REDEMPTION: Final = EventType.REDEMPTION
# What a record holds besides the query's values, in this order after them: the event id, the
# time (twice), the channel slug, the grouped channel's and the address's members (or ""), the
# bot flag's member (or ""), the upper-cased coupon, and the amount's members.
_EXTRAS: Final = ("event_id", "timestamp", "channel", "grouped", "ip", "bot", "coupon", "amount")
# What a layout's constant text may hold: JSON punctuation around field names.
_CONSTANT_TEXT: Final = re.compile(r'[a-z_{}":,]*')
_dumps = orjson.dumps
_UTC_Z = orjson.OPT_UTC_Z


class _Layout:
    """Where each piece of the record comes from, for one list of query fields in one order."""

    __slots__ = (
        "ad_click_ids",
        "channel_at",
        "click_id_at",
        "coupon_at",
        "currency_at",
        "event_id_at",
        "limit",
        "limits",
        "order_id_at",
        "pieces",
        "rare",
        "type_at",
        "uses",
        "utm_medium_at",
        "utm_source_at",
        "value_at",
        "write",
    )

    def __init__(self, keys: tuple[str, ...], rules: EventRules) -> None:
        # Keys outside QUERY_FIELDS (a pixel's cache busters) are left out of the record.
        at = {key: index for index, key in enumerate(keys) if key in QUERY_FIELDS}
        extra = {name: len(keys) + offset for offset, name in enumerate(_EXTRAS)}
        self.type_at = at["type"]
        self.event_id_at = at.get("event_id", -1)
        self.channel_at = at.get("channel", -1)
        self.click_id_at = at.get("click_id", -1)
        self.order_id_at = at.get("order_id", -1)
        self.coupon_at = at.get("coupon", -1)
        self.value_at = at.get("value", -1)
        self.currency_at = at.get("currency", -1)
        self.rare = self.coupon_at >= 0 or self.value_at >= 0 or self.currency_at >= 0
        # What the channel grouping reads, for a query read straight into values (where every
        # value is present: a blank one sends the query the other way).
        self.utm_source_at = at.get("utm_source", -1)
        self.utm_medium_at = at.get("utm_medium", -1)
        self.ad_click_ids = tuple(key for key in AD_CLICK_ID_KEYS if key in at)

        # The record in `Event.to_wire`'s order: constant text, or where a value comes from.
        pieces: list[str | int] = [
            '{"event_id":"', extra["event_id"], '","type":"', self.type_at,
            '","ts":', extra["timestamp"], ',"received_at":', extra["timestamp"],
        ]  # fmt: skip

        def member(name: str, source: int) -> None:
            pieces.extend((f',"{name}":"', source, '"'))

        if "channel" in at:
            member("channel", extra["channel"])
        if "campaign" in at:
            member("campaign", at["campaign"])
        pieces.append(extra["grouped"])
        if "click_id" in at:
            member("click_id", at["click_id"])
        if "coupon" in at:
            member("coupon", extra["coupon"])
        if "order_id" in at:
            member("order_id", at["order_id"])
        pieces.append(extra["amount"])
        for name in UTM_FIELDS:
            if name in at:
                member(name, at[name])
        pieces.append(extra["ip"])
        separator = ',"ad_click_ids":{'
        for name in at:
            if name in AD_CLICK_ID_KEYS:
                pieces.extend((f'{separator}"{name}":"', at[name], '"'))
                separator = ","
        if separator == ",":
            pieces.append("}")
        pieces.extend((extra["bot"], "}"))

        self.pieces = pieces
        self.uses = 0
        # Joins the pieces until the layout has proved common, then compiles its own writer.
        self.write: _Writer = self._join

        # Every value's length limit; when all values together are within the smallest, each is.
        limits = {
            "event_id": rules.max_id_length,
            "channel": MAX_CHANNEL_LENGTH,
            "campaign": rules.max_campaign_length,
            "click_id": rules.max_id_length,
            "order_id": rules.max_id_length,
            "coupon": MAX_COUPON_LENGTH,
            **dict.fromkeys(UTM_FIELDS, rules.max_utm_length),
            **dict.fromkeys(AD_CLICK_ID_KEYS, rules.max_ad_click_id_length),
        }
        self.limits = tuple((at[key], limits[key]) for key in at if key in limits)
        self.limit = min((limit for _, limit in self.limits), default=rules.max_wire_bytes)

    def _join(self, values: tuple[str, ...], *extras: str) -> bytes:
        """The record of `values` and `extras` without a compiled writer: 0.6 us against 0.27.

        Compiling a writer costs 0.1 ms, ten times the rest of learning a layout: only a layout
        used `COMPILE_AFTER` times gets one, so that a client sending ever new lists of fields
        does not make each request that expensive.
        """
        self.uses += 1
        if self.uses >= COMPILE_AFTER:
            self.write = _writer(self.pieces, len(values))
        arranged = values + extras
        return "".join(
            piece if isinstance(piece, str) else arranged[piece] for piece in self.pieces
        ).encode()


# The grouped channel of a UTM source, a UTM medium and the ad click ids present.
Grouping = Callable[[str | None, str | None, tuple[str, ...]], str | None]

# A layout's writer: the query's values, then the extras in `_EXTRAS`' order; the record's bytes.
_Writer = Callable[[tuple[str, ...], str, str, str, str, str, str, str, str], bytes]


def _writer(pieces: list[str | int], value_count: int) -> _Writer:
    """A function that writes the record of one layout as a single f-string.

    Joining the pieces picked by an itemgetter cost 0.6 us a pixel, str.format 1.1 us, this
    0.27 us (timeit). The source is made only of the layout's constant texts, which come from
    the fixed names in `QUERY_FIELDS` and `_EXTRAS`, never from a request: values arrive as
    arguments at run time.
    """
    names = [f"v{index}" for index in range(value_count)] + list(_EXTRAS)
    text = []
    for piece in pieces:
        if isinstance(piece, int):
            text.append("{" + names[piece] + "}")
        else:
            if not _CONSTANT_TEXT.fullmatch(piece):
                raise ValueError(f"unexpected text in a record layout: {piece!r}")
            text.append(piece.replace("{", "{{").replace("}", "}}"))
    unpack = "".join(f"v{index}, " for index in range(value_count))
    source = (
        f"def write(values, {', '.join(_EXTRAS)}):\n"
        f"    {unpack}= values\n"
        f"    return f'{''.join(text)}'.encode()\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - constant texts only, see above
    writer: _Writer = namespace["write"]
    return writer


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
        self._reporting_currency = rules.reporting_currency
        self._max_money = rules.max_money
        self._max_wire_bytes = rules.max_wire_bytes
        self._known_channels = rules.known_channels
        self._layouts: dict[tuple[str, ...], _Layout | None] = {}
        # The edge's members of the record: a few channels, and addresses that repeat.
        self._grouped_members: dict[str | None, str] = {None: ""}
        self._ip_members: dict[str | None, str] = {None: ""}

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

        0.5 us less than building the parameters' dict first: nothing escaped, every value
        present, no name twice, so each parameter is one `name=value` between two '&'. The
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
        text = query.decode("latin-1")
        if (
            not (text.isascii() and text.isprintable())
            or " " in text
            or '"' in text
            or "\\" in text
            or "%" in text
            or "+" in text
        ):
            return None
        keys = []
        values = []
        for pair in text.split("&"):
            key, _, value = pair.partition("=")
            keys.append(key)
            values.append(value)
        if "" in values:
            return None
        found = tuple(keys)
        layout = self._query_layouts.get(found)
        if layout is None:
            if found in self._query_layouts:
                return None
            layout = self._learn_query(found)
            if layout is None:
                return None
        row = tuple(values)
        grouped = self._group(
            row[layout.utm_source_at] if layout.utm_source_at >= 0 else None,
            row[layout.utm_medium_at] if layout.utm_medium_at >= 0 else None,
            layout.ad_click_ids,
        )
        # The query's length bounds the values' (and counts the ignored ones too: a longer
        # query than the smallest limit is checked value by value).
        return self._write(layout, row, len(text), received_at, grouped, ip, bot)

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
        if event_type is None:
            return None
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
        coupon = amount = ""
        if layout.rare:
            found = self._rare_fields(layout, values, event_type)
            if found is None:
                return None
            coupon, amount = found
        elif event_type is _REDEMPTION:
            return None  # without a coupon

        grouped = self._grouped_members.get(grouped_channel)
        if grouped is None:
            grouped = self._member(self._grouped_members, "grouped_channel", grouped_channel)
        address = self._ip_members.get(ip)
        if address is None:
            address = self._member(self._ip_members, "ip", ip)
        flagged = ',"bot":true' if bot and event_type is _CLICK else ""
        timestamp = _dumps(received_at, option=_UTC_Z).decode()
        if event_id is None:
            event_id = new_event_id()
        wire = layout.write(
            values, event_id, timestamp, channel, grouped, address, flagged, coupon, amount
        )
        if len(wire) > self._max_wire_bytes:
            return None
        if layout.click_id_at >= 0:
            key = values[layout.click_id_at]
        elif layout.order_id_at >= 0 and event_type is _CONVERSION:
            key = values[layout.order_id_at]
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
            layout = _Layout(keys, self.rules)
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
    ) -> tuple[str, str] | None:
        """The coupon upper-cased and the amount's members; None to ask `parse_event`."""
        coupon = ""
        if layout.coupon_at >= 0:
            coupon = values[layout.coupon_at]
            if COUPON_PATTERN.fullmatch(coupon) is None:
                return None
            coupon = coupon.upper()
        elif event_type is _REDEMPTION:
            return None
        # A currency without an amount is checked, then dropped, as `parse_event` does.
        currency = None
        if layout.currency_at >= 0:
            currency = values[layout.currency_at].upper()
            if currency not in CURRENCY_CODES:
                return None
        amount = ""
        if layout.value_at >= 0:
            reporting = self._reporting_currency
            if event_type is _CLICK or (currency is not None and currency != reporting):
                return None  # refused, or a conversion, which needs the rate
            try:
                micros = parse_micros(values[layout.value_at], self._max_money)
            except ValueError:
                return None
            if micros is None:
                return None
            amount = f',"value_micros":{micros},"currency":"{reporting}"'
        return coupon, amount

    def _member(self, members: dict[str | None, str], name: str, text: str | None) -> str:
        if len(members) >= MAX_MEMBERS:
            members.clear()
            members[None] = ""
        member = members[text] = f',"{name}":{_dumps(text).decode()}'
        return member
