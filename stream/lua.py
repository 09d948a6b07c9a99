"""The apply-batch Lua script and the arguments it reads.

One EVALSHA applies a whole batch or nothing: dedupe (event id, then order id for
conversions), attribution lookups (click registry, coupon registry), click registration, the
counter increments and the spend replacement. Because the script does the per-event work, a
click and its conversion in the same batch attribute correctly, and a retried batch is counted
once. It mirrors `aggregate.Aggregate`, the reference the tests compare it with; key names
follow `keys.KeySpace`.

Arguments: prefix, oldest minute, oldest hour, minute and hour retention seconds, dedupe,
order, attribution and spend-record TTLs, then three JSON arrays, flat, so that the client sends
four arguments per batch instead of ten per event (packing 50,000 arguments cost redis-py more
than the script's run):

- spend checks, (spend id, stored record expected or "", new record) triples, all verified
  before anything is written: a mismatch returns ``{-1, id}`` and writes nothing (another
  worker replaced the record; re-read and retry);
- events, 10 fields each: kind (k, r, c), event id, minute, channel, click id, coupon, grouped
  channel or "unattributed", order id, revenue micros, campaign; "" for absent;
- spend increments, summed per key and field: (key, field, delta, expire-at or 0) quads, the
  numbers as strings (a sum of amounts may pass 2^53).

Returns ``{applied, duplicates, late}``.

Lua numbers are doubles: a sum is never carried past 4e15, so every figure stays an exact
integer; single amounts are at most `batch.MAX_AMOUNT_MICROS`, which decoding checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson

from stream.aggregate import SpendRecord, spend_increments
from stream.batch import DecodedBatch
from stream.keys import KeySpace, Retention

APPLY_BATCH: Final = r"""
local p = ARGV[1]
local oldest_minute, oldest_hour = tonumber(ARGV[2]), tonumber(ARGV[3])
local minute_ttl, hour_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local dedupe_ttl, order_ttl, click_ttl, spend_ttl = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local checks, events, spend = cjson.decode(ARGV[10]), cjson.decode(ARGV[11]), cjson.decode(ARGV[12])
for j = 1, #checks, 3 do
  if (redis.call('GET', p .. 's:' .. checks[j]) or '') ~= checks[j + 1] then
    return {-1, checks[j]}
  end
end
for j = 1, #checks, 3 do
  redis.call('SET', p .. 's:' .. checks[j], checks[j + 2], 'EX', spend_ttl)
end

-- Per event, only the minute is summed; hours and totals are derived at the end. A sum that
-- would leave the doubles' exact range (2^53) is set aside whole and routed on its own.
local minutes, spilled = {}, {}
local function add(minute, name, delta)
  local sums = minutes[minute]
  if sums == nil then sums = {}; minutes[minute] = sums end
  local sum = (sums[name] or 0) + delta
  if sum > 4e15 then spilled[#spilled + 1] = {minute, name, sums[name]}; sum = delta end
  sums[name] = sum
end

local applied, duplicates, late = 0, 0, 0
for j = 1, #events, 10 do
  local kind, id, minute, channel, click, coupon, grouped, order, value, campaign =
    unpack(events, j, j + 9)
  if not redis.call('SET', p .. 'e:' .. id, '1', 'NX', 'EX', dedupe_ttl) then
    duplicates = duplicates + 1
  elseif order ~= '' and not redis.call('SET', p .. 'o:' .. order, '1', 'NX', 'EX', order_ttl) then
    duplicates = duplicates + 1
  else
    if channel == '' and click ~= '' and kind == 'c' then
      local stored = redis.call('GET', p .. 'k:' .. click)
      if stored then channel = string.match(stored, '^[^\t]*') end
    end
    if channel == '' and coupon ~= '' then
      channel = redis.call('HGET', p .. 'coupons', coupon) or ''
    end
    if channel == '' then channel = grouped end
    if kind == 'k' and click ~= '' and channel ~= 'unattributed' then
      redis.call('SET', p .. 'k:' .. click, channel .. '\t' .. campaign, 'EX', click_ttl)
    end
    applied = applied + 1
    if minute < oldest_minute then late = late + 1 end
    add(minute, channel .. ':' .. kind, 1)
    if value > 0 then add(minute, channel .. ':v', value) end
  end
end

local writes, expiry = {}, {}
local function put(key, name, delta)
  local sums = writes[key]
  if sums == nil then sums = {}; writes[key] = sums end
  local sum = (sums[name] or 0) + delta
  if sum > 4e15 then
    redis.call('HINCRBY', key, name, string.format('%d', delta))
  else
    sums[name] = sum
  end
end
local function route(minute, name, delta)
  if minute >= oldest_minute then
    local key = p .. 'm:' .. minute
    expiry[key] = (minute + 1) * 60 + minute_ttl
    put(key, name, delta)
  end
  local hour = math.floor(minute / 60)
  if hour >= oldest_hour then
    local key = p .. 'h:' .. hour
    expiry[key] = (hour + 1) * 3600 + hour_ttl
    put(key, name, delta)
  end
  put(p .. 't', name, delta)
end
for minute, sums in pairs(minutes) do
  for name, sum in pairs(sums) do route(minute, name, sum) end
end
for _, entry in ipairs(spilled) do route(entry[1], entry[2], entry[3]) end
for key, sums in pairs(writes) do
  for name, sum in pairs(sums) do
    redis.call('HINCRBY', key, name, string.format('%d', sum))
  end
  if expiry[key] then redis.call('EXPIREAT', key, string.format('%d', expiry[key])) end
end
for j = 1, #spend, 4 do
  redis.call('HINCRBY', spend[j], spend[j + 1], spend[j + 2])
  if spend[j + 3] ~= '0' then redis.call('EXPIREAT', spend[j], spend[j + 3]) end
end
local stats = p .. 'stats'
if applied > 0 then redis.call('HINCRBY', stats, 'applied', applied) end
if duplicates > 0 then redis.call('HINCRBY', stats, 'duplicates', duplicates) end
if late > 0 then redis.call('HINCRBY', stats, 'late', late) end
return {applied, duplicates, late}
"""

SPEND_CONFLICT: Final = -1


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
) -> EncodedBatch:
    """The arguments of `APPLY_BATCH` for a decoded batch.

    `stored_spend` holds the spend records in Redis for the batch's spend ids (absent: none);
    the script checks they are still the same before it writes.
    """
    encoded = EncodedBatch()
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
            increments = spend_increments(record, keys, retention, now_seconds)
            if old:
                old_record = SpendRecord.decode(old)
                increments += spend_increments(old_record, keys, retention, now_seconds, -1)
            for key, name, delta, expire_at in increments:
                entry = deltas.setdefault((key, name), [0, expire_at])
                entry[0] += delta
        for spend_id, record_text in records.items():
            if record_text != stored_spend.get(spend_id, ""):
                checks += (spend_id, stored_spend.get(spend_id, ""), record_text)

    argv = encoded.argv
    argv += (
        keys.prefix,
        retention.oldest_minute(now_seconds),
        retention.oldest_hour(now_seconds),
        retention.minute_seconds,
        retention.hour_seconds,
        int(retention.dedupe.total_seconds()),
        int(retention.order.total_seconds()),
        int(retention.attribution.total_seconds()),
        int(retention.spend_record.total_seconds()),
        orjson.dumps(checks),
        orjson.dumps(batch.rows),
        orjson.dumps(
            [
                str(part)
                for (key, name), (delta, expire_at) in deltas.items()
                if delta
                for part in (key, name, delta, expire_at)
            ]
        ),
    )
    return encoded
