"""A batch in the compact form the apply-batch script reads, from `Event`s or from raw records.

`decode_records` is the worker's fast path. `Event.from_wire` builds a frozen dataclass with
parsed datetimes, about 5 us an event, more than the whole 150,000 events/s budget of a core
leaves; the script needs ten strings and numbers per event. So a record whose every key and
JSON type is the contract's is read straight from the orjson dict; anything else (and every
spend record, which needs its range) goes through `Event.from_wire`, which also names the
problem of a bad record. The tests check that both paths give the same batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import orjson

from adpulse.channels import AD_CLICK_ID_KEYS
from adpulse.event import Event, EventError, EventType
from stream.aggregate import UNATTRIBUTED, epoch_micros

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
_STRING_KEYS: Final = frozenset(
    {
        "event_id",
        "type",
        "ts",
        "received_at",
        "channel",
        "campaign",
        "grouped_channel",
        "click_id",
        "coupon",
        "order_id",
        "currency",
        "source_currency",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_term",
        "utm_content",
        "ip",
    }
)
_INT_KEYS: Final = frozenset({"value_micros", "source_amount_micros"})


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
        raise EventError("value_micros", f"{amount} is above the maximum {MAX_AMOUNT_MICROS}")
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


def decode_records(records: Sequence[bytes]) -> DecodedBatch:
    """The compact batch of raw Kafka record values; bad records go to `rejected`."""
    batch = DecodedBatch()
    rows = batch.rows.extend
    minutes: dict[str, int] = {}
    for position, record in enumerate(records):
        try:
            try:
                wire = orjson.loads(record)
            except orjson.JSONDecodeError:
                wire = None
            row = _fast_row(wire, minutes) if type(wire) is dict else None
            if row is None:
                _add_event(batch, Event.from_wire(record))
            elif row:
                rows(row)
            else:
                batch.bots += 1
        except EventError as error:
            batch.rejected.append((position, error))
    return batch


def _fast_row(
    wire: dict[str, object], minutes: dict[str, int]
) -> tuple[str, str, int, str, str, str, str, str, int, str] | tuple[()] | None:
    """The row of a plain record, () for a bot, None to take the slow path."""
    event_type = wire.get("type")
    kind = _WIRE_KINDS.get(event_type) if type(event_type) is str else None
    if kind is None or not _plain_shape(tuple(wire), tuple(map(type, wire.values()))):
        return None
    click_ids = wire.get("ad_click_ids")
    if click_ids is not None and not (
        click_ids.keys() <= AD_CLICK_ID_KEYS  # type: ignore[attr-defined]
        and all(type(text) is str for text in click_ids.values())  # type: ignore[attr-defined]
    ):
        return None
    ts: str = wire["ts"]  # type: ignore[assignment]
    if not _plain_time(ts) or not _plain_time(wire["received_at"]):
        return None
    # One datetime parse per distinct minute; the whole string was checked above.
    minute = minutes.get(ts[:16])
    if minute is None:
        minute = epoch_micros(datetime.fromisoformat(ts[:16] + ":00+00:00")) // _MINUTE_MICROS
        minutes[ts[:16]] = minute
    if wire.get("bot"):
        return ()
    return _row(
        kind,
        wire["event_id"],  # type: ignore[arg-type]
        minute,
        wire.get("channel"),  # type: ignore[arg-type]
        wire.get("click_id"),  # type: ignore[arg-type]
        wire.get("coupon"),  # type: ignore[arg-type]
        wire.get("grouped_channel"),  # type: ignore[arg-type]
        wire.get("order_id"),  # type: ignore[arg-type]
        wire.get("value_micros"),  # type: ignore[arg-type]
        wire.get("campaign"),  # type: ignore[arg-type]
    )


@functools.lru_cache(maxsize=1024)
def _plain_shape(keys: tuple[str, ...], types: tuple[type, ...]) -> bool:
    """Every key known with its JSON type, and the required ones present.

    Records of one tracker come in a handful of shapes, so this is cached by shape.
    """
    for key, kind in zip(keys, types, strict=True):
        expected = _SHAPE_TYPES.get(key)
        if expected is None or kind is not expected:
            return False
    return _REQUIRED.issubset(keys)


_SHAPE_TYPES: Final[dict[str, type]] = {
    **dict.fromkeys(_STRING_KEYS, str),
    **dict.fromkeys(_INT_KEYS, int),
    "bot": bool,
    "ad_click_ids": dict,
}
_REQUIRED: Final = frozenset({"event_id", "type", "ts", "received_at"})


def _plain_time(value: object) -> bool:
    """True for the wire's exact time format, 2026-11-23T21:53:00.123456Z, with valid fields."""
    if type(value) is not str or len(value) != 27 or value[-1] != "Z":
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
