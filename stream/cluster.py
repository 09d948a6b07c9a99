"""Redis Cluster mode: a batch cut into one batch per part of the key space (`keys`, "Redis
Cluster"), each applied by one script call in its part's slot.

A row goes to the part of its routing key (`row_key`), a spend record to its event id's; the
rows of each part keep their order, and each source (a Kafka partition's rows with their
offsets) is cut the same way, so the script's applied offsets work per part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from adpulse.core.options import REDIS_CLUSTER_SCHEME
from stream.batch import BOT_CLICK, EVENT_FIELDS, ROW, DecodedBatch, make_row
from stream.keys import part_of

CLUSTER_SCHEME: Final = REDIS_CLUSTER_SCHEME
"""The scheme of ``ADPULSE_REDIS_URL`` that switches the store to cluster mode."""

_KIND, _EVENT_ID = ROW.index("kind"), ROW.index("event_id")
_CLICK_ID, _ORDER_ID = ROW.index("click_id"), ROW.index("order_id")
_LEAD_ID, _CALLER = ROW.index("lead_id"), ROW.index("caller")
_COUPON: Final = ROW.index("coupon")


def row_key(row: list[str | int] | tuple[str | int, ...]) -> str:
    """The routing key of one row (`batch.ROW`'s values): the id the tracker keys its Kafka
    record by (`adpulse.core.event.partition_key`), so that whatever shares a partition for
    its state's sake shares a part too."""
    kind = row[_KIND]
    if kind == "p" and row[_CALLER]:
        return str(row[_CALLER])
    if row[_CLICK_ID]:
        return str(row[_CLICK_ID])
    if kind == "c" and row[_ORDER_ID]:
        return str(row[_ORDER_ID])
    if row[_LEAD_ID]:
        return str(row[_LEAD_ID])
    return str(row[_EVENT_ID])


def split_batch(
    batch: DecodedBatch, indices: dict[int, list[int]] | None = None
) -> dict[int, DecodedBatch]:
    """Part number -> the part's rows, sources and spend records, in the batch's order. The
    parts' `bots` count their own bot clicks; `rejected` stays with the whole batch. `indices`,
    if given, gets part number -> each of its rows' index in the batch."""
    parts: dict[int, DecodedBatch] = {}
    rows = batch.rows
    count = len(rows) // EVENT_FIELDS
    # The source each row came from, if any: (its index in batch.sources, the row's offset).
    origin: list[tuple[int, int] | None] = [None] * count
    for index, (_, first, offsets) in enumerate(batch.sources):
        for position, offset in enumerate(offsets):
            origin[first + position] = (index, offset)
    opened: dict[tuple[int, int], list[int]] = {}
    for number in range(count):
        row = rows[number * EVENT_FIELDS : (number + 1) * EVENT_FIELDS]
        part_number = part_of(row_key(row))
        part = parts.setdefault(part_number, DecodedBatch())
        came_from = origin[number]
        if came_from is not None:
            index, offset = came_from
            key = (part_number, index)
            if key not in opened:
                opened[key] = []
                first_row = len(part.rows) // EVENT_FIELDS
                part.sources.append((batch.sources[index][0], first_row, opened[key]))
            opened[key].append(offset)
        part.rows += row
        if indices is not None:
            indices.setdefault(part_number, []).append(number)
        if row[_KIND] == BOT_CLICK:
            part.bots += 1
    for event in batch.spend:
        parts.setdefault(part_of(event.event_id), DecodedBatch()).spend.append(event)
    return parts


def coupon_codes(batch: DecodedBatch) -> list[str]:
    """The coupon codes the script may look up for this batch's rows (not a click's)."""
    codes = {
        str(batch.rows[start + _COUPON])
        for start in range(0, len(batch.rows), EVENT_FIELDS)
        if batch.rows[start + _COUPON] and batch.rows[start + _KIND] not in ("k", BOT_CLICK)
    }
    return sorted(codes)


# Customers across parts (`keys`, "Customers across parts"): a part's first call leaves the
# customer facts of its conversions in its outbox, one list per customer part; the worker sends
# them to the customer's part in a second call, which applies each once.
FACT_KINDS: Final = ("n", "x")
"""A conversion's customer fact ('n') and a restatement's change of LTV ('x')."""

TRIM_OUTBOX: Final = """
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local head = last - redis.call('LLEN', KEYS[1]) + 1
local drop = tonumber(ARGV[2]) - head + 1
if drop > 0 then redis.call('LTRIM', KEYS[1], drop, -1) end
return drop
"""
"""Drops from a part's outbox list for one customer part (KEYS[1]; KEYS[2] the part's outbox
hash of last numbers, ARGV[1] the customer part) its facts up to number ARGV[2], which the
customer part confirmed: the list holds the facts numbered up to the hash's, contiguous."""


@dataclass(frozen=True, slots=True)
class Fact:
    """One customer fact from part `source`'s outbox for part `destination`: its number there,
    its batch's stamp and row (the order to apply it in), and its row for the second call."""

    source: int
    destination: int
    number: int
    order: tuple[int, int]
    row: list[str | int]


def read_fact(source: int, destination: int, entry: str) -> Fact:
    """A fact as the script writes it (tab-separated, `events.lua`)."""
    number, stamp, kind, customer, minute, channel, campaign, status, value, event_id, index = (
        entry.split("\t")
    )
    row = make_row(
        kind=kind,
        event_id=event_id,
        minute=int(minute),
        channel=channel,
        campaign=campaign,
        customer_id=customer,
        status=status,
        value_micros=int(value),
    )
    return Fact(source, destination, int(number), (int(stamp), int(index)), row)


def fact_calls(facts: list[Fact]) -> dict[int, tuple[DecodedBatch, list[list[int]]]]:
    """Customer part -> its second call's rows (the facts in the order their batches applied
    them) and each row's (source part, number)."""
    calls: dict[int, tuple[DecodedBatch, list[list[int]]]] = {}
    for fact in sorted(facts, key=lambda fact: (fact.order, fact.source, fact.number)):
        batch, sources = calls.setdefault(fact.destination, (DecodedBatch(), []))
        batch.rows += fact.row
        sources.append([fact.source, fact.number])
    return calls
