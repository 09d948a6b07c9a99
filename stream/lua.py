"""The apply-batch Lua script and the arguments it reads.

One EVALSHA applies a whole batch or nothing: dedupe (event id, lead id for leads; a
conversion of an order already counted restates it, see `stream.orders`, or is a duplicate when
it changes nothing), attribution lookups (click registry, coupon registry), click registration,
the counter increments and the spend replacement. Because the script does the per-event work, a
click and its conversion in the same batch attribute correctly, and a retried batch is counted
once. It mirrors `aggregate.Aggregate`, the reference the tests compare it with; key names
follow `keys.KeySpace`.

Event, order, lead and caller ids and click ids reach the script as 64-bit fingerprints
(`stream.fingerprints`, computed by `encode_batch`) and are kept in generations
(`keys.KeySpace.generation`) of small buckets Redis encodes compactly (`keys`, "Remembered
ids"), read and written with one variadic command per bucket and generation for the whole
batch.

Arguments: prefix, oldest minute, oldest hour, minute and hour retention seconds, now (Unix
seconds), dedupe, order, attribution and spend-record TTLs, then three arrays, flat, so
that the client sends four arguments per batch instead of ten per event (packing 50,000
arguments cost redis-py more than the script's run); the events in MessagePack (redis-server
unpacks it in fewer instructions than the same rows in JSON: no text to parse into numbers),
the others in JSON:

- spend checks, (spend id, stored record expected or "", new record) triples, all verified
  before anything is written: a mismatch returns ``{-1, id}`` and writes nothing (another
  worker replaced the record; re-read and retry);
- events, one `batch.ROW` each: kind (k, r, c, l, p, or b for a bot's click), event id, minute,
  then the other fields the counters read in the contract's order (channel, coupon, revenue
  micros, campaign, click id, order id, status, customer id, lead id, grouped channel, a call's
  caller hash, answered and qualified, then the minute a signed click id carried, see
  `batch.ROW`); "", 0 or false for absent. A call counts ``p``, ``a``
  when answered and ``l`` (a lead) when qualified and its caller was not a lead within the
  dedupe window (``callers:`` generations). The script's Lua reads the row's positions from
  `batch.ROW` (the `@ROW_NAMES@` and `@AT_name@` marks below), so the two cannot disagree;
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

then (redelivery) a JSON array of (topic partition, first row, the offsets of its rows) per
part of the batch from one partition (`DecodedBatch.sources`): a row at or below the offset
its partition last applied is skipped and counted as redelivered, once the script has checked
that it reads the same log (`keys`, "Redelivery").

Returns ``{applied, duplicates, late, unlisted, other_campaigns, redelivered}`` (restatements
count as applied, and in the stats hash's ``restated``; forged signed click ids in its
``click_ids_rejected``); unlisted: events counted
under "unlisted" because the channel set was full; other_campaigns: events counted under
campaign "other" because their channel's campaign set for the month was full.

Lua numbers are doubles: a sum is never carried past 4e15, so every figure stays an exact
integer; single amounts are at most `batch.MAX_AMOUNT_MICROS`, which decoding checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import msgspec
import orjson

from stream.aggregate import SpendRecord, spend_increments
from stream.batch import ROW, DecodedBatch
from stream.days import LocalDays, minute_rows
from stream.fingerprints import fingerprint_rows
from stream.keys import (
    DEFAULT_LAYOUT,
    DEFAULT_MAX_CAMPAIGNS,
    DEFAULT_MAX_CHANNELS,
    IdLayout,
    KeySpace,
    Retention,
)
from stream.lag import DELAY_EDGE_MINUTES

_SOURCE: Final = r"""
local p = ARGV[1]
local oldest_minute, oldest_hour = tonumber(ARGV[2]), tonumber(ARGV[3])
local minute_ttl, hour_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = tonumber(ARGV[6])
local dedupe_ttl, order_ttl, click_ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local customer_ttl = tonumber(ARGV[18])
local spend_ttl = ARGV[10]
local checks, spend = cjson.decode(ARGV[11]), cjson.decode(ARGV[13])
local events = cmsgpack.unpack(ARGV[12])
local max_channels = tonumber(ARGV[14])
-- Day buckets (see `stream.days`): the local day and month of each minute of the batch, computed
-- by the worker (the script knows no time zone); a minute whose day is no longer kept is absent.
local max_campaigns = tonumber(ARGV[15])
local day_of = {}
do
  local table_ = cjson.decode(ARGV[16])
  for j = 1, #table_, 5 do
    local day, month = string.format('%d', table_[j + 1]), string.format('%d', table_[j + 3])
    day_of[table_[j]] = {
      p .. 'd:' .. day, table_[j + 2], p .. 'mo:' .. month, table_[j + 4],
      p .. 'dc:' .. day, p .. 'mc:' .. month, month,
    }
  end
end
for j = 1, #checks, 3 do
  if (redis.call('GET', p .. 's:' .. checks[j]) or '') ~= checks[j + 1] then
    return {-1, checks[j]}
  end
end
for j = 1, #checks, 3 do
  redis.call('SET', p .. 's:' .. checks[j], checks[j + 2], 'EX', spend_ttl)
end

-- Ids live in generations: a set or hash per quarter of their window, named by the quarter an
-- id was last written in. A look-up reads every generation that may hold an id seen within
-- the window, one variadic command per bucket, generation and chunk for the whole batch
-- (unpack takes at most a few thousand values).
local CHUNK = 1000 -- even: a chunk of a hash's flat (field, value) list holds whole pairs
local function chunks(values, call)
  for first = 1, #values, CHUNK do
    call(first, math.min(first + CHUNK - 1, #values))
  end
end

-- Remembered ids (`keys`, "Remembered ids"): event, order, lead, caller, customer and click ids
-- arrive as 64-bit fingerprints in decimal (`stream.fingerprints`). A generation of them is a
-- linear hash of buckets ``{name}{gen}:{bucket}`` (sets, or hashes for ids with a value), its
-- layout in ``{name}{gen}:m`` (n buckets, split pointer s, c ids), so that every bucket stays
-- small enough for Redis's compact encodings (intset, listpack): `fingerprints.bucket_of`.
-- The generation before the window is unlinked whole, every bucket, with variadic UNLINKs
-- (freed off the main thread); as a backstop each key expires a quarter later.
local SET_LOAD, HASH_LOAD = tonumber(ARGV[19]), tonumber(ARGV[20])
local place_values = {} -- id -> the number its bucket is taken from, read once per batch
local function place(id, n, s)
  local value = place_values[id]
  if value == nil then
    value = tonumber(string.sub(id, -12))
    place_values[id] = value
  end
  local bucket = value % n
  if bucket < s then bucket = value % (2 * n) end
  return bucket
end
local function layout(base)
  local stored = redis.call('HMGET', base .. ':m', 'n', 's', 'c', 'x')
  if not stored[1] then return nil end
  return {tonumber(stored[1]), tonumber(stored[2]), tonumber(stored[3]), tonumber(stored[4] or 0)}
end
local function window_of(name, window)
  local period = math.ceil(window / 4)
  local oldest = math.floor((now - window) / period)
  local base = p .. name .. (oldest - 1)
  local shape = layout(base)
  if shape then
    local names = {base .. ':m', base .. ':names', base .. ':refs'}
    for bucket = 0, shape[1] + shape[2] - 1 do
      names[#names + 1] = base .. ':' .. bucket
      if #names == CHUNK then redis.call('UNLINK', unpack(names)); names = {} end
    end
    if #names > 0 then redis.call('UNLINK', unpack(names)) end
  end
  return period, math.floor(now / period), oldest
end
local function by_bucket(ids, shape, skip)
  local groups = {}
  for _, id in ipairs(ids) do
    if not skip[id] then
      local bucket = place(id, shape[1], shape[2])
      local group = groups[bucket]
      if group == nil then group = {}; groups[bucket] = group end
      group[#group + 1] = id
    end
  end
  return groups
end
-- Of `ids`, those in a generation of `name` within the window: id -> true (sets) or its stored
-- value (hashes, `hash` true), newest generation first; `where`: id -> its generation.
local function look_up(name, window, ids, hash)
  local found, where = {}, {}
  local period, newest, oldest = window_of(name, window)
  if #ids == 0 then return found, period, newest, where end
  for generation = newest, oldest, -1 do
    local base = p .. name .. generation
    local shape = layout(base)
    if shape then
      for bucket, group in pairs(by_bucket(ids, shape, found)) do
        local key = base .. ':' .. bucket
        chunks(group, function(first, last)
          if hash then
            local stored = redis.call('HMGET', key, unpack(group, first, last))
            for i = 1, last - first + 1 do
              local id = group[first + i - 1]
              if stored[i] then found[id] = stored[i]; where[id] = generation end
            end
          else
            local flags = redis.call('SMISMEMBER', key, unpack(group, first, last))
            for i = 1, #flags do
              if flags[i] == 1 then found[group[first + i - 1]] = true end
            end
          end
        end)
      end
    end
  end
  return found, period, newest, where
end
-- Split bucket s of a generation in two (`fingerprints.bucket_of`). A bucket gets its expiry
-- when it is created (the generation's first, or a split's new one), not on every write; a
-- split that leaves either bucket empty (a key Redis then does not have) is counted in x, and
-- a generation with any such bucket sets the expiry on every write instead.
local function split(base, shape, hash, expire_at)
  local n, s = shape[1], shape[2]
  local from, to = base .. ':' .. s, base .. ':' .. (s + n)
  local gone, moved, size = {}, {}, 0
  if hash then
    local flat = redis.call('HGETALL', from)
    size = #flat / 2
    for i = 1, #flat, 2 do
      if tonumber(string.sub(flat[i], -12)) % (2 * n) ~= s then
        gone[#gone + 1] = flat[i]
        moved[#moved + 1] = flat[i]
        moved[#moved + 1] = flat[i + 1]
      end
    end
  else
    local members = redis.call('SMEMBERS', from)
    size = #members
    for _, id in ipairs(members) do
      if tonumber(string.sub(id, -12)) % (2 * n) ~= s then
        gone[#gone + 1] = id
        moved[#moved + 1] = id
      end
    end
  end
  if #gone > 0 then
    chunks(gone, function(first, last)
      redis.call(hash and 'HDEL' or 'SREM', from, unpack(gone, first, last))
    end)
    chunks(moved, function(first, last)
      redis.call(hash and 'HSET' or 'SADD', to, unpack(moved, first, last))
    end)
    redis.call('EXPIREAT', to, expire_at)
  end
  if #gone == 0 or #gone == size then shape[4] = shape[4] + 1 end
  s = s + 1
  if s == n then shape[1], s = 2 * n, 0 end
  shape[2] = s
end
-- Write `ids` into the newest generation of `name`: a set, or with `values` (id -> value) a
-- hash; then split buckets while the generation holds more than its load per bucket.
local function remember_ids(name, window, period, newest, ids, values)
  if #ids == 0 then return end
  local base = p .. name .. newest
  local expire_at = string.format('%d', (newest + 2) * period + window)
  local shape = layout(base)
  local fresh = shape == nil
  shape = shape or {1, 0, 0, 0}
  local hash = values ~= nil
  for bucket, group in pairs(by_bucket(ids, shape, {})) do
    local key = base .. ':' .. bucket
    local arguments = group
    if hash then
      arguments = {}
      for _, id in ipairs(group) do
        arguments[#arguments + 1] = id
        arguments[#arguments + 1] = values[id]
      end
    end
    chunks(arguments, function(first, last)
      local added = redis.call(hash and 'HSET' or 'SADD', key, unpack(arguments, first, last))
      shape[3] = shape[3] + added
    end)
    if fresh or shape[4] > 0 then redis.call('EXPIREAT', key, expire_at) end
  end
  local load = SET_LOAD
  if hash then load = HASH_LOAD end
  while shape[3] > load * (shape[1] + shape[2]) do split(base, shape, hash, expire_at) end
  redis.call('HSET', base .. ':m', 'n', string.format('%d', shape[1]),
    's', string.format('%d', shape[2]), 'c', string.format('%d', shape[3]),
    'x', string.format('%d', shape[4]))
  redis.call('EXPIREAT', base .. ':m', expire_at)
end

-- Dictionaries: texts many ids share (a click's "channel\tcampaign", an order's and its
-- customer's LTV share) are stored once per generation, ``{name}{gen}:names`` (reference ->
-- text) and ``{name}{gen}:refs`` (text -> reference), and an id's value names them by
-- reference (1, 2, ...). `texts_of`: id -> its texts, from the references `wanted` (id -> a
-- list of references) in the generation `where` holds it in; a text not found is false.
local function texts_of(name, where, wanted)
  local by_generation = {}
  for id, refs in pairs(wanted) do
    local list = by_generation[where[id]]
    if list == nil then list = {}; by_generation[where[id]] = list end
    for _, ref in ipairs(refs) do list[#list + 1] = ref end
  end
  local known = {}
  for generation, refs in pairs(by_generation) do
    local texts = {}
    local key = p .. name .. generation .. ':names'
    chunks(refs, function(first, last)
      local stored = redis.call('HMGET', key, unpack(refs, first, last))
      for i = 1, last - first + 1 do texts[refs[first + i - 1]] = stored[i] end
    end)
    known[generation] = texts
  end
  local found = {}
  for id, refs in pairs(wanted) do
    local texts = {}
    for i, ref in ipairs(refs) do texts[i] = known[where[id]][ref] or false end
    found[id] = texts
  end
  return found
end
-- The references of `texts` (a list) in the newest generation's dictionary, added if new:
-- text -> reference.
local function refer(name, period, newest, window, texts)
  local base = p .. name .. newest
  local refs_key, names_key = base .. ':refs', base .. ':names'
  local ref_of, added, reverse, count = {}, {}, {}, nil
  local listed = {}
  for _, text in ipairs(texts) do
    if not listed[text] then listed[text] = true; listed[#listed + 1] = text end
  end
  if #listed == 0 then return ref_of end
  chunks(listed, function(first, last)
    local refs = redis.call('HMGET', refs_key, unpack(listed, first, last))
    for i = 1, last - first + 1 do
      local text, ref = listed[first + i - 1], refs[i]
      if not ref then
        count = count or redis.call('HLEN', names_key)
        count = count + 1
        ref = string.format('%d', count)
        added[#added + 1] = ref
        added[#added + 1] = text
        reverse[#reverse + 1] = text
        reverse[#reverse + 1] = ref
      end
      ref_of[text] = ref
    end
  end)
  if #added > 0 then
    local expire_at = string.format('%d', (newest + 2) * period + window)
    chunks(added, function(first, last)
      redis.call('HSET', names_key, unpack(added, first, last))
    end)
    chunks(reverse, function(first, last)
      redis.call('HSET', refs_key, unpack(reverse, first, last))
    end)
    redis.call('EXPIREAT', names_key, expire_at)
    redis.call('EXPIREAT', refs_key, expire_at)
  end
  return ref_of
end

-- Each event is a row of @ROW_WIDTH@ values (`batch.ROW`); each kind is counted by some of them
-- only: a click is registered by its click id, a redemption attributed by its coupon, a
-- conversion or lead by its click id and coupon, a conversion restates its order (order id), a
-- lead is deduplicated by its lead id, and only a conversion's value is revenue. A bot's click
-- (b) is counted apart under its own channel or grouping, and registers nothing.
local ids, orders, clicks, customers = {}, {}, {}, {}
local leads, callers = {}, {}
for j = 1, #events, @ROW_WIDTH@ do
  local kind = events[j + @AT_kind@]
  ids[#ids + 1] = events[j + @AT_event_id@]
  -- Calls (issue 14): a qualified call's caller hash, to count a repeat caller as one lead.
  if kind == 'p' and events[j + @AT_qualified@] == true and events[j + @AT_caller@] ~= '' then
    callers[#callers + 1] = events[j + @AT_caller@]
  end
  if kind == 'c' or kind == 'l' then
    local order_id, click_id = events[j + @AT_order_id@], events[j + @AT_click_id@]
    if order_id ~= '' and kind == 'c' then orders[#orders + 1] = order_id end
    local customer_id = events[j + @AT_customer_id@]
    if customer_id ~= '' then customers[#customers + 1] = customer_id end
    if events[j + @AT_channel@] == '' and click_id ~= '' then clicks[#clicks + 1] = click_id end
  end
  -- Leads: deduplicated by their CRM's lead id too, remembered as long as order ids.
  local lead_id = events[j + @AT_lead_id@]
  if kind == 'l' and lead_id ~= '' then leads[#leads + 1] = lead_id end
end
local seen_ids, id_period, id_generation = look_up('ids:', dedupe_ttl, ids, false)

-- Orders (`stream.orders`): the state of each order the batch's conversions name, stored as
-- "{status}{value}:{minute}:{ref}:{LTV ref}" (see the writes below); {status, minute, value,
-- channel, campaign, changed in this batch, ltv} here.
local order_state, order_period, order_generation, order_where = look_up(
  'ord:', order_ttl, orders, true)
do
  local wanted = {}
  for order_id, text in pairs(order_state) do
    local status, value, minute, ref, ltv = string.match(text, '^(%a)(%d+):(%-?%d+):(%d+):(%d*)$')
    order_state[order_id] = {status, tonumber(minute), tonumber(value)}
    wanted[order_id] = {ref}
    if ltv ~= '' then wanted[order_id][2] = ltv end
  end
  for order_id, texts in pairs(texts_of('ord:', order_where, wanted)) do
    local order = order_state[order_id]
    local channel, campaign = string.match(texts[1] or '', '^([^\t]*)\t(.*)$')
    if channel == nil or texts[2] == false then
      order_state[order_id] = nil -- its dictionary is gone: as if forgotten
    else
      order[4], order[5], order[7] = channel, campaign, texts[2] or ''
    end
  end
end
-- Customers (`stream.customers`): {acquisition channel, first minute, cohort month, changed}
-- of each customer the batch's conversions name, stored "{channel ref}:{minute}:{cohort}".
local customer_state, customer_period, customer_generation, customer_where = look_up(
  'cust:', customer_ttl, customers, true)
do
  local wanted = {}
  for customer_id, text in pairs(customer_state) do
    local ref, minute, cohort = string.match(text, '^(%d+):(%-?%d+):(%d*)$')
    customer_state[customer_id] = {false, tonumber(minute), cohort}
    wanted[customer_id] = {ref}
  end
  for customer_id, texts in pairs(texts_of('cust:', customer_where, wanted)) do
    if texts[1] then
      customer_state[customer_id][1] = texts[1]
    else
      customer_state[customer_id] = nil -- its dictionary is gone: as if forgotten
    end
  end
end
local seen_leads, lead_period, lead_generation = look_up('leads:', order_ttl, leads, false)
local seen_callers, caller_period, caller_generation = look_up(
  'callers:', dedupe_ttl, callers, false)

-- Clicks: the newest registration of each click id the batch's conversions name, stored as
-- one integer, its (channel, campaign) reference then its minute in ten digits; a
-- generation's references are in ``clicks:{gen}:names`` (-> "channel\tcampaign") and
-- ``clicks:{gen}:refs`` (the reverse). Here "channel\tcampaign\tminute", as registered.
local registered, click_period, click_newest, click_where = look_up(
  'clicks:', click_ttl, clicks, true)
-- The minute is kept as six digits from the generation's origin, 600,000 minutes (about 417
-- days) before its start, so that the whole value fits Redis's 32-bit listpack integers; a
-- click minute outside those million minutes is kept whole, ten digits after a "-".
local CLICK_SPAN = 1000000
local function click_origin(generation)
  return math.floor(generation * click_period / 60) - 600000
end
do
  local wanted = {}
  for click, packed in pairs(registered) do
    if string.sub(packed, 1, 1) == '-' then
      wanted[click] = {string.sub(packed, 2, -11)}
    else
      wanted[click] = {string.sub(packed, 1, -7)}
    end
  end
  for click, texts in pairs(texts_of('clicks:', click_where, wanted)) do
    if texts[1] then
      local packed, minute = registered[click], nil
      if string.sub(packed, 1, 1) == '-' then
        minute = tonumber(string.sub(packed, -10))
      else
        minute = click_origin(click_where[click]) + tonumber(string.sub(packed, -6))
      end
      registered[click] = texts[1] .. '\t' .. string.format('%d', minute)
    else
      registered[click] = nil
    end
  end
end

-- The channel an event counts under: its own while the channel set knows it or has room, else
-- "unlisted"; the fixed buckets are never in the set. One look-up per channel and batch.
local channel_set = p .. 'channels'
local kept_channels = {unattributed = 'unattributed', unlisted = 'unlisted'}
local channel_count = nil
local function admit(channel)
  local kept = kept_channels[channel]
  if kept == nil then
    if redis.call('SISMEMBER', channel_set, channel) == 1 then
      kept = channel
    else
      channel_count = channel_count or redis.call('SCARD', channel_set)
      if channel_count < max_channels then
        redis.call('SADD', channel_set, channel)
        channel_count = channel_count + 1
        kept = channel
      else
        kept = 'unlisted'
      end
    end
    kept_channels[channel] = kept
  end
  return kept
end

-- The campaign an event counts under in its month: its own while its channel's campaign set for
-- the month knows it or has room, else "other"; "" and "other" are never in a set.
local kept_campaigns, campaign_counts = {}, {}
local function admit_campaign(month, month_expiry, channel, campaign)
  if campaign == '' or campaign == 'other' then return campaign end
  local by_channel = kept_campaigns[month]
  if by_channel == nil then by_channel = {}; kept_campaigns[month] = by_channel end
  local known = by_channel[channel]
  if known == nil then known = {}; by_channel[channel] = known end
  local kept = known[campaign]
  if kept == nil then
    local set = p .. 'cs:' .. month .. ':' .. channel
    if redis.call('SISMEMBER', set, campaign) == 1 then
      kept = campaign
    else
      local count = campaign_counts[set] or redis.call('SCARD', set)
      if count < max_campaigns then
        redis.call('SADD', set, campaign)
        redis.call('EXPIREAT', set, string.format('%d', month_expiry))
        count = count + 1
        kept = campaign
      else
        kept = 'other'
      end
      campaign_counts[set] = count
    end
    known[campaign] = kept
  end
  return kept
end

local delay_edges = {@DELAY_EDGES@}
local function delay_bin(delay)
  for index = #delay_edges - 2, 1, -1 do
    if delay >= delay_edges[index + 1] then return index end
  end
  return 0
end

local minutes, spilled = {}, {}
local function add(minute, name, delta)
  local sums = minutes[minute]
  if sums == nil then sums = {}; minutes[minute] = sums end
  local sum = (sums[name] or 0) + delta
  if sum > 4e15 or sum < -4e15 then
    spilled[#spilled + 1] = {minute, name, sums[name]}
    sum = delta
  end
  sums[name] = sum
end

-- What an order in a status counts (`stream.orders.order_counts`): net (c, v) while pending or
-- approved, and the status's own count and amount; `sign` -1 takes a previous state back out.
local STATUS_LETTERS = {[''] = 'a', approved = 'a', pending = 'p', declined = 'd', refunded = 'r'}
local STATUS_COUNTERS = {p = {'e', 'E'}, d = {'d', 'D'}, r = {'f', 'F'}}
local function count_order(minute, name, status, value, sign)
  if status == 'a' or status == 'p' then
    add(minute, name .. 'c', sign)
    if value ~= 0 then add(minute, name .. 'v', sign * value) end
  end
  local counters = STATUS_COUNTERS[status]
  if counters then
    add(minute, name .. counters[1], sign)
    if value ~= 0 then add(minute, name .. counters[2], sign * value) end
  end
end
local function net_value(status, value)
  if status == 'a' or status == 'p' then return value end
  return 0
end
-- Lifetime value (`stream.customers`): net revenue per cohort month and acquisition channel
-- within 30, 90 and 365 days of the acquisition; `ltv` is "{cohort}:{first horizon}:{channel}".
local HORIZONS = {'30', '90', '365'}
local ltv_writes, ltv_expiry = {}, {}
local function add_ltv(ltv, delta)
  if ltv == '' or delta == 0 then return end
  local cohort, first, channel = string.match(ltv, '^(%d+):(%d):(.*)$')
  local key = p .. 'ltv:' .. cohort
  local sums = ltv_writes[key]
  if sums == nil then sums = {}; ltv_writes[key] = sums end
  for i = tonumber(first), #HORIZONS do
    local name = channel .. ':' .. HORIZONS[i]
    local sum = (sums[name] or 0) + delta
    if sum > 4e15 or sum < -4e15 then
      -- Past where a Lua number is exact: left to HINCRBY's 64-bit integers.
      redis.call('HINCRBY', key, name, string.format('%d', delta))
    else
      sums[name] = sum
    end
  end
end
local function horizon_of(age_minutes)
  if age_minutes < 30 * 1440 then return 1 end
  if age_minutes < 90 * 1440 then return 2 end
  if age_minutes < 365 * 1440 then return 3 end
  return 4
end
-- The day of an order's original minute, which the batch's own table may not hold: from the
-- worker's table of the local days within the order window (start minute, day, day expiry,
-- month, month expiry; the last row only closes the one before).
local window_days = nil
local function day_of_order(minute)
  local day = day_of[minute]
  if day ~= nil then return day end
  window_days = window_days or cjson.decode(ARGV[17])
  local rows = #window_days / 5
  local low, high, found = 1, rows, nil
  while low <= high do
    local middle = math.floor((low + high) / 2)
    if window_days[(middle - 1) * 5 + 1] <= minute then
      found = middle
      low = middle + 1
    else
      high = middle - 1
    end
  end
  if found == nil or found == rows then return nil end
  local j = (found - 1) * 5
  local day_number = string.format('%d', window_days[j + 2])
  local month = string.format('%d', window_days[j + 4])
  day = {
    p .. 'd:' .. day_number, window_days[j + 3], p .. 'mo:' .. month, window_days[j + 5],
    p .. 'dc:' .. day_number, p .. 'mc:' .. month, month,
  }
  day_of[minute] = day
  return day
end

-- Redelivery (`keys`, "Redelivery"): per partition, ``offsets`` holds "{offset}:{event id}"
-- of the last row applied. A row at or below that offset is skipped only once this batch shows
-- the same log: its row at that offset has that event id. A broker restarted empty numbers a
-- new log from 0 again; there the row at that offset differs (the offset is moved to the new
-- log's), or is not in the batch (nothing skipped, nothing moved), so no new record is skipped.
local skipped, redelivered, moved_offsets = {}, 0, {}
do
  local sources = cjson.decode(ARGV[21])
  if #sources > 0 then
    local names = {}
    for i, source in ipairs(sources) do names[i] = source[1] end
    local stored = redis.call('HMGET', p .. 'offsets', unpack(names))
    for i, source in ipairs(sources) do
      local first, offsets = source[2], source[3]
      local applied, identity = nil, nil
      if stored[i] then
        local offset, event_id = string.match(stored[i], '^(%d+):(.*)$')
        applied, identity = tonumber(offset), event_id
      end
      local same = false
      if applied then
        for r = 1, #offsets do
          if offsets[r] == applied then
            same = events[(first + r - 1) * @ROW_WIDTH@ + 1 + @AT_event_id@] == identity
            break
          end
        end
      end
      if same then
        for r = 1, #offsets do
          if offsets[r] <= applied then
            skipped[first + r - 1] = true
            redelivered = redelivered + 1
          end
        end
      end
      local last = offsets[#offsets]
      if last and (applied == nil or last > applied) then
        local event_id = events[(first + #offsets - 1) * @ROW_WIDTH@ + 1 + @AT_event_id@]
        moved_offsets[#moved_offsets + 1] = source[1]
        moved_offsets[#moved_offsets + 1] = string.format('%d', last) .. ':' .. event_id
      end
    end
  end
end

local applied, duplicates, late, unlisted, other_campaigns = 0, 0, 0, 0, 0
local restated = 0
local rejected_click_ids = 0
local new_ids, new_clicks, changed_orders, changed_customers = {}, {}, {}, {}
local new_click_names = {}
local new_leads = {}
local new_callers = {}
for j = 1, #events, @ROW_WIDTH@ do
  local @ROW_NAMES@ = unpack(events, j, j + @ROW_LAST@)
  if kind ~= 'c' then order_id = '' end
  if kind ~= 'l' then lead_id = '' end
  if skipped[(j - 1) / @ROW_WIDTH@] then
    -- Applied before (counted in redelivered): nothing to do.
  elseif seen_ids[event_id] then
    duplicates = duplicates + 1
  else
    seen_ids[event_id] = true
    new_ids[#new_ids + 1] = event_id
    -- Signed click ids (`batch._signed_row`): a forged one is counted, once per event.
    if carried_minute < 0 then rejected_click_ids = rejected_click_ids + 1 end
    local order = nil
    if order_id ~= '' then order = order_state[order_id] end
    local status_letter = STATUS_LETTERS[status]
    if order then
      -- A restatement: the order's new status and value replace the old ones in the buckets of
      -- its original minute, channel and campaign; no value keeps the current one.
      local new_value = order[3]
      if value_micros > 0 then new_value = value_micros end
      if status_letter == order[1] and new_value == order[3] then
        duplicates = duplicates + 1
      else
        applied = applied + 1
        restated = restated + 1
        if minute < oldest_minute then late = late + 1 end
        local name = order[4] .. '\t' .. order[5] .. ':'
        day_of_order(order[2])
        count_order(order[2], name, order[1], order[3], -1)
        count_order(order[2], name, status_letter, new_value, 1)
        -- The moment of the change, in the restatement's own minute (its month's campaign).
        local moment_campaign = order[5]
        local day = day_of[minute]
        if day then moment_campaign = admit_campaign(day[7], day[4], order[4], order[5]) end
        local moment = order[4] .. '\t' .. moment_campaign .. ':'
        add(minute, moment .. 'n', 1)
        local change = net_value(status_letter, new_value) - net_value(order[1], order[3])
        if change ~= 0 then add(minute, moment .. 'N', change) end
        add_ltv(order[7], change)
        if order[6] == nil then
          order[6] = true
          changed_orders[#changed_orders + 1] = order_id
        end
        order[1], order[3] = status_letter, new_value
      end
    elseif lead_id ~= '' and seen_leads[lead_id] then
      duplicates = duplicates + 1
    else
      if lead_id ~= '' then
        seen_leads[lead_id] = true
        new_leads[#new_leads + 1] = lead_id
      end
      local click_minute = nil
      -- A signed click id's attribution, filled in by the worker (`batch.ROW`): no look-up.
      if carried_minute > 0 then click_minute = carried_minute end
      if channel == '' and click_id ~= '' and (kind == 'c' or kind == 'l') then
        local stored = registered[click_id]
        if stored then
          -- "channel\tcampaign\tminute"; a registration older than delays has no minute.
          channel = string.match(stored, '^[^\t]*')
          local click_campaign = string.sub(stored, #channel + 2)
          local without, minute_text = string.match(click_campaign, '^(.*)\t(%d+)$')
          if without then
            click_campaign, click_minute = without, tonumber(minute_text)
          end
          -- A conversion or lead without a campaign of its own counts for its click's.
          if campaign == '' then campaign = click_campaign end
        end
      end
      if channel == '' and coupon ~= '' and kind ~= 'k' and kind ~= 'b' then
        channel = redis.call('HGET', p .. 'coupons', coupon) or ''
      end
      if channel == '' then channel = grouped_channel end
      if channel == '' then channel = 'unattributed' end
      local kept = admit(channel)
      if kept ~= channel then
        unlisted = unlisted + 1
        channel = kept
      end
      if kind == 'k' and click_id ~= '' and channel ~= 'unattributed' then
        local stored = channel .. '\t' .. campaign .. '\t' .. string.format('%d', minute)
        registered[click_id] = stored
        if new_click_names[click_id] == nil then new_clicks[#new_clicks + 1] = click_id end
        new_click_names[click_id] = {channel .. '\t' .. campaign, minute}
      end
      applied = applied + 1
      if minute < oldest_minute then late = late + 1 end
      local day = day_of[minute]
      if day then
        local kept_campaign = admit_campaign(day[7], day[4], channel, campaign)
        if kept_campaign ~= campaign then
          other_campaigns = other_campaigns + 1
          campaign = kept_campaign
        end
      end
      -- One name per (channel, campaign, counter); `route` derives the channel's from it.
      if kind == 'c' then
        -- Gross as first reported; net and the status's counters as it stands.
        local name = channel .. '\t' .. campaign .. ':'
        add(minute, name .. 'g', 1)
        if value_micros > 0 then add(minute, name .. 'G', value_micros) end
        count_order(minute, name, status_letter, value_micros, 1)
        local ltv = ''
        if customer_id ~= '' then
          -- The customer's first conversion acquires them for its channel; later ones are
          -- repeat sales of their own channel, credited to the acquisition channel's LTV.
          local customer = customer_state[customer_id]
          if customer == nil then
            local cohort = ''
            if day then cohort = day[7]; ltv_expiry[p .. 'ltv:' .. cohort] = day[4] end
            customer = {channel, minute, cohort, true}
            customer_state[customer_id] = customer
            changed_customers[#changed_customers + 1] = customer_id
            add(minute, name .. 'u', 1)
            if cohort ~= '' then
              local key = p .. 'ltv:' .. cohort
              local sums = ltv_writes[key]
              if sums == nil then sums = {}; ltv_writes[key] = sums end
              sums[channel .. ':u'] = (sums[channel .. ':u'] or 0) + 1
            end
          else
            add(minute, name .. 'y', 1)
            if value_micros > 0 then add(minute, name .. 'Y', value_micros) end
          end
          local horizon = horizon_of(minute - customer[2])
          if customer[3] ~= '' and horizon <= #HORIZONS then
            ltv = customer[3] .. ':' .. horizon .. ':' .. customer[1]
            add_ltv(ltv, net_value(status_letter, value_micros))
          end
        end
        if order_id ~= '' then
          order_state[order_id] = {
            status_letter, minute, value_micros, channel, campaign, true, ltv,
          }
          changed_orders[#changed_orders + 1] = order_id
        end
      else
        add(minute, channel .. '\t' .. campaign .. ':' .. kind, 1)
      end
      -- A conversion's delay, in its click's buckets (`keys`, "Delays"; `lag.delay_bin_minutes`).
      if click_minute and kind == 'c' then
        local bin = delay_bin(minute - click_minute)
        add(click_minute, channel .. '\t' .. campaign .. ':t' .. bin, 1)
      end
      if kind == 'p' then
        if answered == true then add(minute, channel .. '\t' .. campaign .. ':a', 1) end
        if qualified == true and (caller == '' or not seen_callers[caller]) then
          if caller ~= '' then
            seen_callers[caller] = true
            new_callers[#new_callers + 1] = caller
          end
          add(minute, channel .. '\t' .. campaign .. ':l', 1)
        end
      end
    end
  end
end
remember_ids('ids:', dedupe_ttl, id_period, id_generation, new_ids, nil)
-- An order's state: "{status}{value}:{minute}:{ref}:{LTV ref}", its "channel\tcampaign" and
-- its customer's LTV share ("" for none) by reference (`stream.orders`).
local new_orders = {}
do
  local texts = {}
  for _, order_id in ipairs(changed_orders) do
    local order = order_state[order_id]
    texts[#texts + 1] = order[4] .. '\t' .. order[5]
    if order[7] ~= '' then texts[#texts + 1] = order[7] end
  end
  local ref_of = refer('ord:', order_period, order_generation, order_ttl, texts)
  for _, order_id in ipairs(changed_orders) do
    local order = order_state[order_id]
    local ltv = ''
    if order[7] ~= '' then ltv = ref_of[order[7]] end
    new_orders[order_id] = string.format('%s%d:%d:%s:%s',
      order[1], order[3], order[2], ref_of[order[4] .. '\t' .. order[5]], ltv)
  end
end
remember_ids('ord:', order_ttl, order_period, order_generation, changed_orders, new_orders)
local new_customers = {}
do
  local texts = {}
  for _, customer_id in ipairs(changed_customers) do
    texts[#texts + 1] = customer_state[customer_id][1]
  end
  local ref_of = refer('cust:', customer_period, customer_generation, customer_ttl, texts)
  for _, customer_id in ipairs(changed_customers) do
    local customer = customer_state[customer_id]
    new_customers[customer_id] = string.format(
      '%s:%d:%s', ref_of[customer[1]], customer[2], customer[3])
  end
end
remember_ids(
  'cust:', customer_ttl, customer_period, customer_generation, changed_customers, new_customers)
for key, sums in pairs(ltv_writes) do
  for name, delta in pairs(sums) do
    if delta ~= 0 then redis.call('HINCRBY', key, name, string.format('%d', delta)) end
  end
  if ltv_expiry[key] then
    redis.call('EXPIREAT', key, string.format('%d', ltv_expiry[key]))
  end
end
remember_ids('leads:', order_ttl, lead_period, lead_generation, new_leads, nil)
remember_ids('callers:', dedupe_ttl, caller_period, caller_generation, new_callers, nil)
-- New clicks: their (channel, campaign) by reference in the newest generation's dictionary.
if #new_clicks > 0 then
  local texts = {}
  for _, click in ipairs(new_clicks) do texts[#texts + 1] = new_click_names[click][1] end
  local ref_of = refer('clicks:', click_period, click_newest, click_ttl, texts)
  local packed, origin = {}, click_origin(click_newest)
  for _, click in ipairs(new_clicks) do
    local entry = new_click_names[click]
    local offset = entry[2] - origin
    if offset >= 0 and offset < CLICK_SPAN then
      packed[click] = ref_of[entry[1]] .. string.format('%06d', offset)
    else
      packed[click] = '-' .. ref_of[entry[1]] .. string.format('%010d', entry[2])
    end
  end
  remember_ids('clicks:', click_ttl, click_period, click_newest, new_clicks, packed)
end

local writes, expiry = {}, {}
local function put(key, name, delta)
  local sums = writes[key]
  if sums == nil then sums = {}; writes[key] = sums end
  local sum = (sums[name] or 0) + delta
  if sum > 4e15 or sum < -4e15 then
    redis.call('HINCRBY', key, name, string.format('%d', delta))
  else
    sums[name] = sum
  end
end
-- A per-campaign name ("{channel}\t{campaign}:{counter}") -> its channel's ("{channel}:{counter}"),
-- and whether it is a delay's.
local channel_names, delay_names = {}, {}
local function channel_name(per_campaign)
  local name = channel_names[per_campaign]
  if name == nil then
    -- The counter is what follows the last ':' (one letter, or 't' and a delay bin).
    local counter = string.match(per_campaign, ':([^:]*)$')
    name = string.match(per_campaign, '^[^\t]*') .. ':' .. counter
    channel_names[per_campaign] = name
    delay_names[per_campaign] = string.sub(counter, 1, 1) == 't'
  end
  return name
end
-- One minute's sums into its buckets: the per-campaign names into the day's and month's
-- campaign buckets, their channel's sums (added up here first, so a channel's field is put once
-- a minute, not once per campaign) into the day, month, minute, hour and total buckets. Delays
-- count in their click's minute and hour only: no day bucket (`keys`, "Delays").
local function route(minute, sums)
  local day = day_of[minute]
  local channel_sums, channel_delay = {}, {}
  local function put_channel(name, delta, delay)
    if day and not delay then
      expiry[day[1]], expiry[day[3]] = day[2], day[4]
      put(day[1], name, delta)
      put(day[3], name, delta)
    end
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
  for per_campaign, delta in pairs(sums) do
    local name = channel_name(per_campaign)
    local delay = delay_names[per_campaign]
    if day and not delay then
      expiry[day[5]], expiry[day[6]] = day[2], day[4]
      put(day[5], per_campaign, delta)
      put(day[6], per_campaign, delta)
    end
    local sum = (channel_sums[name] or 0) + delta
    if sum > 4e15 or sum < -4e15 then
      -- Past where a Lua number is exact: what is summed so far goes first.
      put_channel(name, channel_sums[name], delay)
      sum = delta
    end
    channel_sums[name], channel_delay[name] = sum, delay
  end
  for name, sum in pairs(channel_sums) do put_channel(name, sum, channel_delay[name]) end
end
for minute, sums in pairs(minutes) do route(minute, sums) end
for _, entry in ipairs(spilled) do route(entry[1], {[entry[2]] = entry[3]}) end
-- One HMGET and one HSET per bucket and chunk instead of an HINCRBY per field: the script
-- is atomic, so reading and writing back is an increment. A figure at or past 4e15 (where a
-- Lua number stops being exact) is left to HINCRBY, which counts in 64-bit integers.
for key, sums in pairs(writes) do
  local names, deltas = {}, {}
  for name, sum in pairs(sums) do
    -- A restatement's counters may cancel out (a value changed, the count not).
    if sum ~= 0 then
      names[#names + 1] = name
      deltas[#deltas + 1] = sum
    end
  end
  chunks(names, function(first, last)
    local stored = redis.call('HMGET', key, unpack(names, first, last))
    local values = {}
    for i = 1, last - first + 1 do
      local name, delta = names[first + i - 1], deltas[first + i - 1]
      local old = tonumber(stored[i] or 0)
      local new = old + delta
      if old < 4e15 and old > -4e15 and new < 4e15 and new > -4e15 then
        values[#values + 1] = name
        values[#values + 1] = string.format('%d', new)
      else
        redis.call('HINCRBY', key, name, string.format('%d', delta))
      end
    end
    if #values > 0 then redis.call('HSET', key, unpack(values)) end
  end)
  if expiry[key] then redis.call('EXPIREAT', key, string.format('%d', expiry[key])) end
end
for j = 1, #spend, 4 do
  local name = spend[j + 1]
  local channel = string.sub(name, 1, -3) -- without ':s'
  local of_channel, campaign = string.match(channel, '^([^\t]*)\t(.*)$')
  if of_channel == nil then
    local kept = admit(channel)
    if kept ~= channel then name = kept .. ':s' end
  else
    -- A campaign's day ("dc:YYYYMMDD") or month ("mc:YYYYMM") field.
    local kept = admit(of_channel)
    local number = string.match(spend[j], '(%d+)$')
    local month = number
    if string.sub(spend[j], #p + 1, #p + 3) == 'dc:' then month = string.sub(number, 1, 6) end
    name = kept .. '\t' .. admit_campaign(month, spend[j + 3], kept, campaign) .. ':s'
  end
  redis.call('HINCRBY', spend[j], name, spend[j + 2])
  if spend[j + 3] ~= '0' then redis.call('EXPIREAT', spend[j], spend[j + 3]) end
end
local stats = p .. 'stats'
if applied > 0 then redis.call('HINCRBY', stats, 'applied', applied) end
if duplicates > 0 then redis.call('HINCRBY', stats, 'duplicates', duplicates) end
if late > 0 then redis.call('HINCRBY', stats, 'late', late) end
if unlisted > 0 then redis.call('HINCRBY', stats, 'unlisted', unlisted) end
if other_campaigns > 0 then redis.call('HINCRBY', stats, 'other_campaigns', other_campaigns) end
if restated > 0 then redis.call('HINCRBY', stats, 'restated', restated) end
if rejected_click_ids > 0 then
  redis.call('HINCRBY', stats, 'click_ids_rejected', rejected_click_ids)
end
if redelivered > 0 then redis.call('HINCRBY', stats, 'redelivered', redelivered) end
if #moved_offsets > 0 then redis.call('HSET', p .. 'offsets', unpack(moved_offsets)) end
return {applied, duplicates, late, unlisted, other_campaigns, redelivered}
"""

# The row fields the script reads by name: each must be in `batch.ROW`.
_READS: Final = frozenset(
    {"kind", "minute", "event_id", "channel", "coupon", "value_micros", "campaign"}
    | {"click_id", "order_id", "lead_id", "grouped_channel", "status", "customer_id"}
    | {"caller", "answered", "qualified", "carried_minute"}
)


def _with_row(source: str) -> str:
    """The script with the row's names and width from `batch.ROW`."""
    missing = _READS - set(ROW)
    if missing:
        raise ValueError(f"the apply-batch script reads {sorted(missing)}, not in batch.ROW")
    if not all(name.isidentifier() for name in ROW):
        raise ValueError(f"batch.ROW names must be Lua identifiers: {ROW}")
    source = (
        source.replace("@ROW_NAMES@", ", ".join(ROW))
        .replace("@ROW_LAST@", str(len(ROW) - 1))
        .replace("@ROW_WIDTH@", str(len(ROW)))
        .replace("@DELAY_EDGES@", ", ".join(str(edge) for edge in DELAY_EDGE_MINUTES))
    )
    for offset, name in enumerate(ROW):
        source = source.replace(f"@AT_{name}@", str(offset))
    if "@" in source:
        raise ValueError(f"the apply-batch script names a row field not in batch.ROW: {source}")
    return source


APPLY_BATCH: Final = _with_row(_SOURCE)
_pack_rows: Final = msgspec.msgpack.Encoder().encode
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
    max_channels: int = DEFAULT_MAX_CHANNELS,
    days: LocalDays | None = None,
    max_campaigns: int = DEFAULT_MAX_CAMPAIGNS,
    layout: IdLayout = DEFAULT_LAYOUT,
) -> EncodedBatch:
    """The arguments of `APPLY_BATCH` for a decoded batch.

    `stored_spend` holds the spend records in Redis for the batch's spend ids (absent: none);
    the script checks they are still the same before it writes.
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
        # Ids as their fingerprints (`stream.fingerprints`): what the script remembers.
        _pack_rows(fingerprint_rows(batch.rows)),
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
    argv.append(orjson.dumps(batch.sources))
    return encoded
