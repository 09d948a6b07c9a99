"""A batch in the compact form the apply-batch script reads, from `Event`s or from raw records.

`decode_records` is the worker's fast path. `Event.from_wire` builds a frozen dataclass with
parsed datetimes, more than a core's budget per event at the worker's target rate, while the
script needs ten strings and numbers per event. So a record whose every key and JSON type is the
contract's, and whose times are in the wire's exact format, is read by msgspec into a plain
struct (the types checked in C); anything else (and every spend record, which needs its range)
goes through `Event.from_wire`, which also names the problem of a bad record. The tests check
that both paths give the same batch and reject the same records with the same reason.

Per event the fast path costs the msgspec decode, a few string checks per time (the minute is
cached per distinct second) and the row: msgspec's typed decode was chosen over orjson dicts
with the checks in Python because it costs half as much (figures in bench/README.md)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import msgspec

from adpulse.core.channels import AD_CLICK_ID_KEYS, UNATTRIBUTED
from adpulse.core.event import Event, EventError, EventType
from stream.aggregate import epoch_micros

MAX_AMOUNT_MICROS: Final = 10**15
"""The event contract's largest amount (1e9 units); larger would not stay exact in Lua."""

EVENT_FIELDS: Final = 10
_KINDS: Final = {
    EventType.CLICK: "k",
    EventType.REDEMPTION: "r",
    EventType.CONVERSION: "c",
    EventType.SPEND: "s",
}
_WIRE_KINDS: Final = {"click": "k", "redemption": "r", "conversion": "c"}
_MINUTE_MICROS: Final = 60_000_000


@dataclass(slots=True)
class DecodedBatch:
    """`rows`: EVENT_FIELDS values per click, redemption or conversion (see `stream.lua`);
    `spend`: the spend events; `rejected`: (position in the batch, why) of unreadable records."""

    rows: list[str | int] = field(default_factory=list)
    spend: list[Event] = field(default_factory=list)
    bots: int = 0
    rejected: list[tuple[int, EventError]] = field(default_factory=list)

    @property
    def spend_ids(self) -> list[str]:
        return [event.event_id for event in self.spend]

    def __len__(self) -> int:
        return len(self.rows) // EVENT_FIELDS + len(self.spend)


def _row(
    kind: str,
    event_id: str,
    minute: int,
    channel: str | None,
    click_id: str | None,
    coupon: str | None,
    grouped: str | None,
    order_id: str | None,
    value: int | None,
    campaign: str | None,
) -> tuple[str, str, int, str, str, str, str, str, int, str]:
    is_conversion = kind == "c"
    amount = (value or 0) if is_conversion else 0
    if amount > MAX_AMOUNT_MICROS:
        raise _amount_error(amount)
    return (
        kind,
        event_id,
        minute,
        channel or "",
        (click_id or "") if kind != "r" else "",
        (coupon or "") if kind != "k" else "",
        grouped or UNATTRIBUTED,
        (order_id or "") if is_conversion else "",
        amount,
        campaign or "",
    )


def _add_event(batch: DecodedBatch, event: Event) -> None:
    if event.bot:
        batch.bots += 1
        return
    kind = _KINDS[event.type]
    if kind == "s":
        batch.spend.append(event)
        return
    batch.rows.extend(
        _row(
            kind,
            event.event_id,
            epoch_micros(event.ts) // _MINUTE_MICROS,
            event.channel,
            event.click_id,
            event.coupon,
            event.grouped_channel,
            event.order_id,
            event.value_micros,
            event.campaign,
        )
    )


def decode_events(events: Sequence[Event]) -> DecodedBatch:
    """The compact batch of `events`; ValueError (EventError) for an amount above the maximum."""
    batch = DecodedBatch()
    for event in events:
        _add_event(batch, event)
    return batch


class _PlainRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A click, redemption or conversion record as the tracker writes it: the contract's keys
    with their JSON types, nothing else (spend keys included: spend takes the careful path).
    Absent strings read as "", like the careful path's None."""

    event_id: str
    type: str
    ts: str
    received_at: str
    channel: str = ""
    campaign: str = ""
    grouped_channel: str = ""
    click_id: str = ""
    coupon: str = ""
    order_id: str = ""
    value_micros: int = 0
    currency: str = ""
    source_currency: str = ""
    source_amount_micros: int = 0
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_term: str = ""
    utm_content: str = ""
    ip: str = ""
    bot: bool = False
    ad_click_ids: dict[str, str] | None = None


_read_plain: Final = msgspec.json.Decoder(_PlainRecord).decode


def decode_records(records: Sequence[bytes]) -> DecodedBatch:
    """The compact batch of raw Kafka record values; bad records go to `rejected`."""
    batch = DecodedBatch()
    rows = batch.rows
    rejected = batch.rejected
    kinds = _WIRE_KINDS
    unattributed = UNATTRIBUTED
    minutes: dict[str, int] = {}
    bots = 0
    for position, value in enumerate(records):
        try:
            record = _read_plain(value)
        except ValueError:  # not UTF-8 JSON, or not a plain record: the careful path says why
            record = None
        # Inline rather than in a function: a call costs about as much as these checks.
        # Anything they do not vouch for takes the careful path below.
        if record is not None:
            kind = kinds.get(record.type)
            ts = record.ts
            minute = _wire_minute(ts, minutes)
            if (
                kind is not None
                and minute is not None
                and (
                    record.received_at == ts
                    or _wire_minute(record.received_at, minutes) is not None
                )
                and (record.ad_click_ids is None or record.ad_click_ids.keys() <= AD_CLICK_ID_KEYS)
            ):
                if record.bot:
                    bots += 1
                elif kind == "k":
                    rows += (
                        "k",
                        record.event_id,
                        minute,
                        record.channel,
                        record.click_id,
                        "",
                        record.grouped_channel or unattributed,
                        "",
                        0,
                        record.campaign,
                    )
                elif kind == "c":
                    amount = record.value_micros
                    if amount > MAX_AMOUNT_MICROS:
                        rejected.append((position, _amount_error(amount)))
                        continue
                    rows += (
                        "c",
                        record.event_id,
                        minute,
                        record.channel,
                        record.click_id,
                        record.coupon,
                        record.grouped_channel or unattributed,
                        record.order_id,
                        amount,
                        record.campaign,
                    )
                else:
                    rows += (
                        "r",
                        record.event_id,
                        minute,
                        record.channel,
                        "",
                        record.coupon,
                        record.grouped_channel or unattributed,
                        "",
                        0,
                        record.campaign,
                    )
                continue
        # The careful path: spend, and whatever the checks above did not vouch for; it also
        # names the problem of a bad record.
        try:
            event = Event.from_wire(value)
        except EventError as error:
            rejected.append((position, error))
            continue
        if event.bot:
            bots += 1
            continue
        try:
            _add_event(batch, event)
        except EventError as error:
            rejected.append((position, error))
    batch.bots += bots
    return batch


def _amount_error(amount: int) -> EventError:
    return EventError("value_micros", f"{amount} is above the maximum {MAX_AMOUNT_MICROS}")


def _wire_minute(text: str, minutes: dict[str, int]) -> int | None:
    """The minute bucket of a time in the wire's exact format, 2026-11-23T21:53:00.123456Z;
    None for anything else, which the careful path then judges.

    `minutes` caches the minute by the text up to the seconds, each entry checked once with
    the strict pattern and `datetime.fromisoformat` (what `Event.from_wire` accepts); per
    record, only the fraction and the "Z" are left to check, with string methods (`isdigit`
    alone would take other scripts' digits, hence `isascii`).
    """
    if (
        len(text) != 27
        or text[26] != "Z"
        or text[19] != "."
        or not text.isascii()
        or not text[20:26].isdigit()
    ):
        return None
    second = text[:19]
    minute = minutes.get(second)
    if minute is None:
        if _WIRE_TIME.fullmatch(text) is None:
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        minute = minutes[second] = epoch_micros(moment) // _MINUTE_MICROS
    return minute


_WIRE_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z"
)
"""The wire time; hours 00-23 only, so the fraction never decides validity (a version of
`fromisoformat` that takes 24:00:00 takes it only with a zero fraction)."""
