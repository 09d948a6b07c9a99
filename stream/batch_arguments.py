"""The arguments of the apply-batch script (`stream.lua`) for one batch: `encode_batch`.

Arguments: prefix, oldest minute, oldest hour, minute and hour retention seconds, now (Unix
seconds), dedupe, order, attribution and spend-record TTLs, then three arrays, flat, so
that the client sends four arguments per batch instead of ten per event (packing 50,000
arguments cost redis-py more than the script's run); the events in MessagePack (redis-server
unpacks it in fewer instructions than the same rows in JSON: no text to parse into numbers),
the others in JSON:

- spend checks, (spend id, stored record expected or "", new record) triples, all verified
  before anything is written: a mismatch returns ``{-1, id}`` and writes nothing (another
  worker replaced the record; re-read and retry);
- events, one row each, the first values of `batch.SCRIPT_ROW` its kind is counted by
  (`batch.SCRIPT_WIDTHS`), as two arrays in one (`batch.script_rows`): every row's common
  columns (`batch.COMMON_COLUMNS`: kind (k, r, c, l, p, or b for a bot's click), event id,
  minute, channel, campaign, grouped channel, click id), then the rest of each row that has
  more (coupon, the minute a signed click id carried (see `batch.ROW`), lead id, revenue micros,
  order id, status, customer id, a call's caller hash, answered and qualified); "", 0 or false
  for absent. A call counts ``p``, ``a`` when answered and ``l`` (a lead) when qualified and its
  caller was not a lead within the dedupe window (``callers:`` generations). The script's Lua
  reads the rows' positions and widths from `batch.SCRIPT_ROW` and `batch.SCRIPT_WIDTHS` (the
  `@UNPACK_ROW@`, `@EXTRA_WIDTHS@`, `@AT_name@` and `@EXTRA_name@` marks, see `stream.lua`), so
  the two cannot disagree;
- spend increments, summed per key and field: (key, field, delta, expire-at or 0) quads, the
  numbers as strings (a sum of amounts may pass 2^53);

then the most channels kept (`keys.DEFAULT_MAX_CHANNELS`): a channel not yet in the channel
set joins it while it has room, else the event counts under "unlisted" (the events first, in
order, then the spend increments; see `keys`).

then (day buckets, issue 13) the most campaigns per channel and month
(`keys.DEFAULT_MAX_CAMPAIGNS`) and the day table, a JSON array of (minute, day YYYYMMDD, day
expiry, month YYYYMM, month expiry) for each minute of the batch whose local day is still kept
(`days.LocalDays.table`): each event's counters also go to its day's and month's buckets, per
channel and per (channel, campaign).

then (orders) the local days of the order window (`days.LocalDays.window_table`), where a
restatement finds the day and month of its order's original minute.

then the customer window (seconds), and the loads of the buckets of remembered ids, sets then
hashes (`keys.IdLayout`).

then (redelivery) a MessagePack array (an offset a row: redis-server unpacks its integers in
about a third of what parsing them from JSON costs) of (topic partition, first row, the offsets
of its rows) per part of the batch from one partition (`DecodedBatch.sources`): a row at or
below the offset
its partition last applied is skipped and counted as redelivered, once the script has checked
that it reads the same log (`keys`, "Redelivery").

then (remembered ids) the number each of the rows' fingerprints has its bucket taken from, in
MessagePack: one list per fingerprinted column (`fingerprints.PLACED`), its ids' numbers in the
rows' order (`fingerprints.script_arguments`), which the script pairs with the ids as it scans
the rows, so that no fingerprint is sent twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec
import orjson

from stream.aggregate import SpendRecord, spend_increments
from stream.batch import ROW, DecodedBatch, script_rows
from stream.days import LocalDays, minute_rows
from stream.fingerprints import places_of, script_arguments
from stream.keys import (
    DEFAULT_LAYOUT,
    DEFAULT_MAX_CAMPAIGNS,
    DEFAULT_MAX_CHANNELS,
    IdLayout,
    KeySpace,
    Retention,
)

_pack_rows: Final = msgspec.msgpack.Encoder().encode


@dataclass(slots=True)
class EncodedBatch:
    """The script's arguments for one batch, and what was decided before the script."""

    argv: list[str | int | bytes] = field(default_factory=list)
    spend_applied: int = 0
    spend_duplicates: int = 0


def encode_batch(
    batch: DecodedBatch,
    *,
    keys: KeySpace,
    retention: Retention,
    now_seconds: int,
    stored_spend: Mapping[str, str],
    max_channels: int = DEFAULT_MAX_CHANNELS,
    days: LocalDays | None = None,
    max_campaigns: int = DEFAULT_MAX_CAMPAIGNS,
    layout: IdLayout = DEFAULT_LAYOUT,
    fingerprinted: bool = False,
    cluster_args: Sequence[str | int | bytes] = (),
) -> EncodedBatch:
    """The arguments of `stream.lua.APPLY_BATCH` for a decoded batch.

    `stored_spend` holds the spend records in Redis for the batch's spend ids (absent: none);
    the script checks they are still the same before it writes. `fingerprinted`: the rows'
    ids are fingerprints already (cluster mode's customer facts); `cluster_args`: cluster
    mode's customer arguments (`stream.cluster`), none for one instance.
    """
    encoded = EncodedBatch()
    days = days or LocalDays(retention_seconds=retention.day_seconds)
    spend = batch.spend
    checks: list[str] = []
    deltas: dict[tuple[str, str], list[int]] = {}
    if spend:
        records = dict(stored_spend)
        for event in spend:
            record = SpendRecord.from_event(event)
            new = record.encode()
            old = records.get(event.event_id, "")
            if old == new:
                encoded.spend_duplicates += 1
                continue
            encoded.spend_applied += 1
            records[event.event_id] = new
            increments = spend_increments(record, keys, retention, now_seconds, days=days)
            if old:
                old_record = SpendRecord.decode(old)
                increments += spend_increments(
                    old_record, keys, retention, now_seconds, -1, days=days
                )
            for key, name, delta, expire_at in increments:
                entry = deltas.setdefault((key, name), [0, expire_at])
                entry[0] += delta
        for spend_id, record_text in records.items():
            if record_text != stored_spend.get(spend_id, ""):
                checks += (spend_id, stored_spend.get(spend_id, ""), record_text)

    # Ids as their fingerprints (`stream.fingerprints`): what the script remembers.
    event_rows, places = (
        (script_rows(batch.rows), places_of(batch.rows))
        if fingerprinted
        else script_arguments(batch.rows)
    )
    argv = encoded.argv
    argv += (
        keys.prefix,
        retention.oldest_minute(now_seconds),
        retention.oldest_hour(now_seconds),
        retention.minute_seconds,
        retention.hour_seconds,
        now_seconds,
        int(retention.dedupe.total_seconds()),
        int(retention.order.total_seconds()),
        int(retention.attribution.total_seconds()),
        int(retention.spend_record.total_seconds()),
        orjson.dumps(checks),
        _pack_rows(event_rows),
        orjson.dumps(
            [
                str(part)
                for (key, name), (delta, expire_at) in deltas.items()
                if delta
                for part in (key, name, delta, expire_at)
            ]
        ),
        max_channels,
    )
    # Day buckets: the local day of each of the batch's minutes, see `stream.days`.
    minutes = minute_rows(batch.rows, len(ROW), ROW.index("minute"))
    argv += (max_campaigns, orjson.dumps(days.table(minutes, now_seconds)))
    # Orders: the local days of the order window, for a restatement's original minute.
    argv.append(days.window_table(now_seconds, int(retention.order.total_seconds())))
    argv.append(int(retention.customer.total_seconds()))
    # Remembered ids: the loads of their buckets (`keys.IdLayout`).
    argv += (layout.set_load, layout.hash_load)
    # Redelivery: the partitions and offsets of the rows (`keys`, "Redelivery").
    argv.append(_pack_rows(batch.sources))
    # Remembered ids: the number each fingerprint is placed by (`fingerprints.script_arguments`).
    argv.append(_pack_rows(places))
    argv += cluster_args
    return encoded
