"""Summing the bucket hashes the store read for a period (`stream.report_periods.day_buckets`
says which, with their signs) into `Counters` per row. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain, repeat
from operator import add, sub
from typing import Final

from stream.kpi import COUNTER_POSITIONS, Counters

RowKey = tuple[str, str | None]
"""(channel, campaign); campaign None when grouped by channel."""


def row_key(name: str) -> RowKey | None:
    """The row of a bucket field without its counter: ``channel`` or ``channel\\tcampaign``."""
    channel, tab, campaign = name.partition("\t")
    return (channel, campaign if tab else None) if channel else None


_COUNTER_INDEX: Final = COUNTER_POSITIONS


def sum_buckets(
    fetched: Mapping[str, Mapping[str, str]], plan: Sequence[tuple[str, int]]
) -> dict[RowKey, Counters]:
    """The signed sum of bucket hashes (field ``{row}:{counter}`` -> integer text) per row."""
    present = [(fields, sign) for key, sign in plan if (fields := fetched.get(key))]
    # A year by campaign is some 20 buckets of thousands of fields each: every bucket is read
    # along one list of all their names, and summed, with map() (C loops, exact integers);
    # each name is split into row and counter once, at the end.
    names = list(dict.fromkeys(chain.from_iterable(fields for fields, _ in present)))
    totals: list[int] = [0] * len(names)
    for fields, sign in present:
        values = map(int, map(fields.get, names, repeat("0")))
        totals = list(map(add if sign > 0 else sub, totals, values))
    width = len(_COUNTER_INDEX)
    sums: dict[str, list[int]] = {}
    for name, total in zip(names, totals, strict=True):
        if not total:
            continue
        base, _, counter = name.rpartition(":")
        position = _COUNTER_INDEX.get(counter)
        if position is None or not base:
            continue
        values_of_row = sums.get(base)
        if values_of_row is None:
            values_of_row = sums[base] = [0] * width
        values_of_row[position] = total
    rows: dict[RowKey, Counters] = {}
    for base, values_of_row in sums.items():
        row = row_key(base)
        if row is not None:
            rows[row] = Counters(*values_of_row)
    return rows
