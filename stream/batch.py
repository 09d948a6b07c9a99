"""A batch in the compact form the apply-batch script reads, from `Event`s or from raw records.

`decode_records` is the worker's fast path. `Event.from_wire` builds a frozen dataclass with
parsed datetimes, more than a core's budget per event at the worker's target rate, while the
script needs a few strings and numbers per event (`ROW`). So a record whose every key and JSON
type is the contract's, and whose times are in the wire's exact format, is read by msgspec into
a plain struct (the types checked in C); anything else (and every spend record, which needs its
range) goes through `Event.from_wire`, which also names the problem of a bad record. The tests
check that both paths give the same batch and reject the same records with the same reason.

Per event the fast path costs the msgspec decode, a few string checks per time (none for the
time of the record before, the minute cached per distinct second) and the row: msgspec's typed
decode was chosen over orjson dicts with the checks in Python because it costs half as much
(figures in bench/README.md). The struct and the row are derived from the contract
(`adpulse.core.contract.FIELDS`) at import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter, itemgetter
from types import MappingProxyType
from typing import Any, Final, Literal

import msgspec

from adpulse.core.channels import AD_CLICK_ID_KEYS
from adpulse.core.click_ids import PREFIX as CLICK_ID_PREFIX
from adpulse.core.click_ids import ClickKeys, is_signed, verify
from adpulse.core.contract import COUNTED, WIRE, WIRE_TYPES, EventType, Kind
from adpulse.core.currencies import MICROS
from adpulse.core.event import WIRE_REQUIRED, Event, EventError, EventRules
from stream.aggregate import epoch_micros
from stream.orders import ROW_STATUSES

MAX_AMOUNT_MICROS: Final = int(EventRules().max_money * MICROS)
"""The event contract's largest amount (`EventRules.max_money`) in micros; a test keeps it
below 2**53, where Lua's numbers would stop being exact."""

# The row of one click, redemption, conversion, lead or call, as the script unpacks it: the
# counter's kind (k, r, c, l, p; b for a bot's click) for `type`, the event id, the minute bucket
# for `ts`, then the other fields the counters read (`Field.counted`) in the contract's order, ""
# or 0 for absent. The script decides which of them each kind counts by (a click's coupon is not
# looked up, ...).
ROW: Final[tuple[str, ...]] = (
    "kind",
    "event_id",
    "minute",
    *(str(f.wire_key) for f in COUNTED if f.name not in ("type", "event_id", "ts")),
    "carried_minute",
)
"""`carried_minute` (not a wire field): what a signed click id said (`adpulse.core.click_ids`,
see `_signed_row`): its click's minute when the row's channel and campaign were filled from it,
`REJECTED_CLICK_ID` for a forged one, else 0. A row with a signed id has its click id cleared,
so the script neither looks it up nor registers it."""
EVENT_FIELDS: Final = len(ROW)
_KINDS: Final = {
    EventType.CLICK: "k",
    EventType.REDEMPTION: "r",
    EventType.CONVERSION: "c",
    EventType.SPEND: "s",
    EventType.LEAD: "l",
    EventType.CALL: "p",
}
_WIRE_KINDS: Final = {"click": "k", "redemption": "r", "conversion": "c", "lead": "l", "call": "p"}
BOT_CLICK: Final = "b"
"""The kind of a click the edge flagged as a bot's: counted apart, never as a click."""
# A row's kind letter -> its event type's name (the worker's metrics label).
KIND_NAMES: Final = {letter: event_type.value for event_type, letter in _KINDS.items()} | {
    BOT_CLICK: "bot_click"
}
_MINUTE_MICROS: Final = 60_000_000
_COUNTED_KINDS: Final = {str(f.wire_key): f.kind for f in COUNTED}
_row_values: Final = attrgetter(*ROW[3:-1])
# What an absent value is in the row: "" for a string, 0 for a number.
_ABSENT: Final = tuple(WIRE_TYPES[_COUNTED_KINDS[key]]() for key in ROW[3:-1])
_VALUE_AT: Final = ROW.index("value_micros")
_CHANNEL_AT: Final = ROW.index("channel")
_CAMPAIGN_AT: Final = ROW.index("campaign")
_CLICK_ID_AT: Final = ROW.index("click_id")
REJECTED_CLICK_ID: Final = -1
"""`carried_minute` of a conversion or lead attributed by a click id that claims to be signed
but is not (forged, altered, an unknown version, or no key to verify it with)."""
_CARRIED_KINDS: Final = frozenset({"c", "l"})

ABSENT_ROW: Final[Mapping[str, str | int]] = MappingProxyType(
    dict(zip(ROW, ("", "", 0, *_ABSENT, 0), strict=True))
)
"""Each `ROW` column and its value when absent, in `ROW`'s order (kind, event id, minute, the
counted fields as the contract types them, carried minute): what a row built by hand starts
from (`make_row`), so that a column added to `ROW` needs no edit where rows are built."""


_SCRIPT_FIRST: Final = (
    *("kind", "event_id", "minute", "channel", "campaign", "grouped_channel", "click_id"),
    *("coupon", "carried_minute", "lead_id", "value_micros", "order_id", "status", "customer_id"),
)
SCRIPT_ROW: Final[tuple[str, ...]] = (
    *_SCRIPT_FIRST,
    *(name for name in ROW if name not in _SCRIPT_FIRST),
)
"""`ROW`'s columns in the order the script receives them (`script_rows`): a row of kind k is
the first `SCRIPT_WIDTHS[k]` of them, so that the script unpacks only what the kind counts by
(a click 7 values of 17), and a column has the same place in every row that carries it."""
COMMON_COLUMNS: Final = 7
"""The first columns of `SCRIPT_ROW`, which every row has (a click's, or a bot's, all)."""
_LAST_READ: Final = {
    "k": "click_id",
    "c": "customer_id",
    "r": "coupon",
    BOT_CLICK: "click_id",
    "l": "lead_id",
    "n": "customer_id",
    "x": "customer_id",
}
# The last column each kind is counted by (`stream/apply_batch/events.lua`): a click registers
# its click id (a bot's click nothing, but every row has the common columns); a redemption is
# attributed by its coupon; a lead is deduplicated by its lead id; only a conversion (and
# cluster mode's customer facts, n and x) reads value, order, status and customer. A kind not
# listed (a call) carries every column.
SCRIPT_WIDTHS: Final[Mapping[str, int]] = MappingProxyType(
    {kind: SCRIPT_ROW.index(last) + 1 for kind, last in _LAST_READ.items()}
)
_COMMON_AT: Final = tuple(ROW.index(name) for name in SCRIPT_ROW[:COMMON_COLUMNS])
"""The `ROW` position of each common column of a script row (`SCRIPT_ROW[:COMMON_COLUMNS]`)."""


def _extra_getter(positions: Sequence[int]) -> Callable[[list[str | int]], Iterable[str | int]]:
    """The values at `positions` of a row, in one C call; a sequence even for one position."""
    if len(positions) == 1:
        return itemgetter(slice(positions[0], positions[0] + 1))
    return itemgetter(*positions)


_EXTRA_VALUES: Final[Mapping[str, Callable[[list[str | int]], Iterable[str | int]]]] = {
    kind: _extra_getter([ROW.index(name) for name in SCRIPT_ROW[COMMON_COLUMNS:width]])
    for kind, width in SCRIPT_WIDTHS.items()
    if width > COMMON_COLUMNS
}
"""Per kind with more than the common columns, what takes the rest of its script row from its
`ROW` values; a kind not listed carries every column (`_EXTRA_ALL`)."""
_EXTRA_ALL: Final = _extra_getter([ROW.index(name) for name in SCRIPT_ROW[COMMON_COLUMNS:]])
_COMMON_ONLY: Final = frozenset(
    kind for kind, width in SCRIPT_WIDTHS.items() if width == COMMON_COLUMNS
)
"""The kinds whose script row is the common columns alone."""


def script_rows(
    rows: list[str | int], extras: list[tuple[str | int, int, int]] | None = None
) -> list[list[str | int]]:
    """A batch's rows (`ROW`, flat) as the script receives them: the common columns of every
    row (`COMMON_COLUMNS` a row, `SCRIPT_ROW`'s order), then the rest of each row that has
    more (`SCRIPT_WIDTHS`), one after the other. The common part is moved a column at a time
    (slices, no loop over rows in Python): most rows (clicks) have nothing else. `extras`, if
    given, gets (kind, row number, where its rest starts) of each row with more, in order."""
    width = EVENT_FIELDS
    common: list[str | int] = [0] * (len(rows) // width * COMMON_COLUMNS)
    for place, at in enumerate(_COMMON_AT):
        common[place::COMMON_COLUMNS] = rows[at::width]
    rest: list[str | int] = []
    plain, extra, extra_all = _COMMON_ONLY, _EXTRA_VALUES.get, _EXTRA_ALL
    for number, kind in enumerate(rows[::width]):
        if kind not in plain:
            start = number * width
            if extras is not None:
                extras.append((kind, number, len(rest)))
            rest += extra(kind, extra_all)(rows[start : start + width])  # type: ignore[arg-type]
    return [common, rest]


def make_row(**values: str | int) -> list[str | int]:
    """One row in `ROW`'s order: `values` by column name, the absent value for the others; a
    row for a script call built without events (tests, tools). ValueError for a name not in
    `ROW`."""
    unknown = values.keys() - ABSENT_ROW.keys()
    if unknown:
        raise ValueError(f"not columns of ROW: {sorted(unknown)}")
    return [values.get(name, absent) for name, absent in ABSENT_ROW.items()]


@dataclass(slots=True)
class DecodedBatch:
    """`rows`: `ROW`'s values per click, redemption, conversion or lead (see `stream.lua`);
    `spend`: the spend events; `bots`: of the rows, the bot clicks (kind "b"); `rejected`:
    (position in the batch, why) of unreadable records."""

    rows: list[str | int] = field(default_factory=list)
    spend: list[Event] = field(default_factory=list)
    bots: int = 0
    rejected: list[tuple[int, EventError]] = field(default_factory=list)
    rejected_click_ids: int = 0
    """Rows attributed by a click id that claims to be adpulse-signed and is not
    (`REJECTED_CLICK_ID`)."""
    sources: list[tuple[str, int, list[int]]] = field(default_factory=list)
    """Where rows came from, for the script's applied offsets (`keys`, "Redelivery"): (topic
    partition, index of its first row, the Kafka offset of each of its rows, ascending); empty
    for rows from elsewhere (tests, a rebuild)."""

    @property
    def spend_ids(self) -> list[str]:
        return [event.event_id for event in self.spend]

    def __len__(self) -> int:
        return len(self.rows) // EVENT_FIELDS + len(self.spend)


def _signed_row(campaign: str, click_id: str, keys: ClickKeys | None) -> tuple[str, str, int]:
    """(channel, campaign, carried_minute) of a conversion or lead naming no channel of its
    own and a click id that claims to be signed (whose click id is then cleared): the id's
    channel and minute, and its campaign when the row has none, as the registry would have
    given them; a forged id attributes nothing (`REJECTED_CLICK_ID`). Other rows with such an
    id only clear it, unverified, as it attributes nothing (a click's channel is already its
    id's): the HMAC is paid only where the id is used."""
    carried = None if keys is None else verify(keys, click_id)
    if carried is None:
        return "", campaign, REJECTED_CLICK_ID
    if not carried.channel:
        return "", campaign, 0
    return carried.channel, campaign or carried.campaign, carried.minute


def _add_event(batch: DecodedBatch, event: Event, keys: ClickKeys | None) -> None:
    kind = _KINDS[event.type]
    if kind == "s" and not event.bot:
        batch.spend.append(event)
        return
    row = [
        absent if value is None else value
        for value, absent in zip(_row_values(event), _ABSENT, strict=True)
    ]
    amount = row[_VALUE_AT - 3]
    if kind == "c" and amount > MAX_AMOUNT_MICROS:
        raise _amount_error(amount)
    if event.status and event.status not in ROW_STATUSES:
        raise _status_error(event.status)
    # As `decode_records`: a bot's record is counted as one only once it is not rejected.
    if event.bot:
        batch.bots += 1
        kind = BOT_CLICK
    carried_minute = 0
    if event.click_id is not None and is_signed(event.click_id):
        # `row` starts after kind, event id and minute.
        channel_at, campaign_at = _CHANNEL_AT - 3, _CAMPAIGN_AT - 3
        if kind in _CARRIED_KINDS and not event.channel:
            row[channel_at], row[campaign_at], carried_minute = _signed_row(
                row[campaign_at], event.click_id, keys
            )
            batch.rejected_click_ids += carried_minute == REJECTED_CLICK_ID
        row[_CLICK_ID_AT - 3] = ""
    batch.rows += (
        kind,
        event.event_id,
        epoch_micros(event.ts) // _MINUTE_MICROS,
        *row,
        carried_minute,
    )


def decode_events(events: Sequence[Event], click_keys: ClickKeys | None = None) -> DecodedBatch:
    """The compact batch of `events`; ValueError (EventError) for an amount above the maximum.
    `click_keys` verify signed click ids (without, those that would attribute are rejected)."""
    batch = DecodedBatch()
    for event in events:
        _add_event(batch, event, click_keys)
    return batch


def _plain_record() -> type[Any]:
    """The msgspec struct of a click, redemption, conversion, lead or call record as the
    tracker writes it: the contract's keys with their JSON types, nothing else (the keys only
    spend carries are left out, and the type is one of `_WIRE_KINDS`, so spend takes the
    careful path). Absent strings read as "", numbers as 0."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for wire_field in WIRE:
        if wire_field.types <= {EventType.SPEND}:
            continue
        key = str(wire_field.wire_key)
        kind = wire_field.kind
        json_type: Any = WIRE_TYPES[kind]
        if kind is Kind.CLICK_IDS:
            fields.append((key, dict[str, str] | None, None))
        elif kind is Kind.TYPE:
            # Checked in C and known to `_WIRE_KINDS`; any other type, spend's included, is
            # refused, so it takes the careful path.
            fields.append((key, Literal[tuple(_WIRE_KINDS)]))
        elif key in WIRE_REQUIRED:
            fields.append((key, json_type))
        else:
            fields.append((key, json_type, json_type()))
    return msgspec.defstruct(
        "PlainRecord", fields, kw_only=True, forbid_unknown_fields=True, gc=False
    )


_PlainRecord: Final = _plain_record()
_read_plain: Final = msgspec.json.Decoder(_PlainRecord).decode


def decode_records(records: Sequence[bytes], click_keys: ClickKeys | None = None) -> DecodedBatch:
    """The compact batch of raw Kafka record values; bad records go to `rejected`;
    `click_keys` verify signed click ids (without, those that would attribute are rejected)."""
    batch = DecodedBatch()
    rows = batch.rows
    rejected = batch.rejected
    kinds = _WIRE_KINDS
    minutes: dict[str, int] = {}
    carried_kinds = _CARRIED_KINDS
    bots = rejected_click_ids = 0
    # The last time's text and its minute (None: not a wire time). The tracker stamps the
    # records of one turn of its event loop with one time (`tracker/app.py`, `pixel`), so under
    # load a batch has runs of equal times, each checked once.
    last_time = ""
    last_minute: int | None = None
    for position, value in enumerate(records):
        try:
            record = _read_plain(value)
        except ValueError:  # not UTF-8 JSON, or not a plain record: the careful path says why
            record = None
        # Inline rather than in a function: a call costs about as much as these checks.
        # Anything they do not vouch for takes the careful path below.
        if record is not None:
            kind = kinds[record.type]
            ts = record.ts
            if ts == last_time:
                minute = last_minute
            else:
                # `_wire_minute`'s check of a second already seen; it judges anything else.
                minute = minutes.get(ts[:20])
                if minute is None or ts[26:] != "Z" or not ts.isascii() or not ts[20:26].isdigit():
                    minute = _wire_minute(ts, minutes)
                last_time, last_minute = ts, minute
            if (
                minute is not None
                and (
                    record.received_at == ts
                    or _wire_minute(record.received_at, minutes) is not None
                )
                and (record.ad_click_ids is None or record.ad_click_ids.keys() <= AD_CLICK_ID_KEYS)
            ):
                if kind == "c" and record.value_micros > MAX_AMOUNT_MICROS:
                    rejected.append((position, _amount_error(record.value_micros)))
                    continue
                if record.status and record.status not in ROW_STATUSES:
                    rejected.append((position, _status_error(record.status)))
                    continue
                # A bot's record is counted as one only once it is not rejected.
                if record.bot:
                    bots += 1
                    kind = BOT_CLICK
                channel, campaign, click_id = record.channel, record.campaign, record.click_id
                carried_minute = 0
                # `is_signed`, inline: a click (most records) with a signed id pays no call, it
                # only clears it; a conversion or lead that the id attributes verifies it. The
                # length and an index cost less than the slice `[4:5]` (bench/README.md).
                if (
                    len(click_id) > 4
                    and click_id[4] == "."
                    and click_id.startswith(CLICK_ID_PREFIX)
                ):
                    if kind in carried_kinds and not channel:
                        channel, campaign, carried_minute = _signed_row(
                            campaign, click_id, click_keys
                        )
                        rejected_click_ids += carried_minute == REJECTED_CLICK_ID
                    click_id = ""
                # `ROW` written out: a literal tuple costs half of building it from an
                # attrgetter's (bench/README.md, "Contract"); tests/unit/test_stream_batch.py
                # checks that it follows `ROW`, as the careful path's `_add_event` does.
                rows += (
                    kind,
                    record.event_id,
                    minute,
                    channel,
                    record.coupon,
                    record.value_micros,
                    campaign,
                    click_id,
                    record.order_id,
                    record.status,
                    record.customer_id,
                    record.lead_id,
                    record.grouped_channel,
                    record.caller,
                    record.answered,
                    record.qualified,
                    carried_minute,
                )
                continue
        # The careful path: spend, and whatever the checks above did not vouch for; it also
        # names the problem of a bad record.
        try:
            event = Event.from_wire(value)
        except EventError as error:
            rejected.append((position, error))
            continue
        try:
            _add_event(batch, event, click_keys)
        except EventError as error:
            rejected.append((position, error))
    batch.bots += bots
    batch.rejected_click_ids += rejected_click_ids
    return batch


def _amount_error(amount: int) -> EventError:
    return EventError("value_micros", f"{amount} is above the maximum {MAX_AMOUNT_MICROS}")


def _status_error(status: str) -> EventError:
    return EventError("status", f"unknown order status {status[:32]!r}")


def _wire_minute(text: str, minutes: dict[str, int]) -> int | None:
    """The minute bucket of a time in the wire's exact format, 2026-11-23T21:53:00.123456Z;
    None for anything else, which the careful path then judges.

    `minutes` caches the minute by the text up to the seconds' point, each entry checked once
    with the strict pattern and `datetime.fromisoformat` (what `Event.from_wire` accepts); per
    record, only the fraction and the "Z" are left to check, with string methods (`isdigit`
    alone would take other scripts' digits, hence `isascii`). `decode_records` does the same
    inline, and calls this only for a second not seen yet or a time that fails it.
    """
    second = text[:20]
    minute = minutes.get(second)
    if minute is None:
        if _WIRE_TIME.fullmatch(text) is None:
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        minute = minutes[second] = epoch_micros(moment) // _MINUTE_MICROS
    elif text[26:] != "Z" or not text.isascii() or not text[20:26].isdigit():
        return None
    return minute


_WIRE_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z"
)
"""The wire time; hours 00-23 only, so the fraction never decides validity (a version of
`fromisoformat` that takes 24:00:00 takes it only with a zero fraction)."""
