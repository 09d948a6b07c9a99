"""Redis Cluster mode: a batch cut into one batch per part of the key space (`keys`, "Redis
Cluster"), each applied by one script call in its part's slot.

A row goes to the part of its routing key (`row_key`), a spend record to its event id's; the
rows of each part keep their order, and each source (a Kafka partition's rows with their
offsets) is cut the same way, so the script's applied offsets work per part.
"""

from __future__ import annotations

from typing import Final

from adpulse.core.options import REDIS_CLUSTER_SCHEME
from stream.batch import BOT_CLICK, EVENT_FIELDS, ROW, DecodedBatch
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


def split_batch(batch: DecodedBatch) -> dict[int, DecodedBatch]:
    """Part number -> the part's rows, sources and spend records, in the batch's order. The
    parts' `bots` count their own bot clicks; `rejected` stays with the whole batch."""
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
