"""The apply-batch Lua script and the arguments it reads.

One EVALSHA applies a whole batch or nothing: dedupe (event id, lead id for leads; a
conversion of an order already counted restates it, see `stream.orders`, or is a duplicate when
it changes nothing), attribution lookups (click registry, coupon registry), click registration,
the counter increments and the spend replacement. Because the script does the per-event work, a
click and its conversion in the same batch attribute correctly, and a retried batch is counted
once. It mirrors `aggregate.Aggregate`, the reference the tests compare it with; key names
follow `keys.KeySpace`.

Event ids, order ids and clicks are kept in generations (`keys.KeySpace.generation`) and read
and written with one variadic command per generation for the whole batch, not one command
per event: that halves redis-server's time and cuts its memory per event by 40 %
(bench/README.md, "Contract", has the figures and how they were taken).

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
  caller hash, answered and qualified); "", 0 or false for absent. A call counts ``p``, ``a``
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

Returns ``{applied, duplicates, late, unlisted, other_campaigns}`` (restatements count as
applied, and in the stats hash's ``restated``); unlisted: events counted
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
from stream.keys import DEFAULT_MAX_CAMPAIGNS, DEFAULT_MAX_CHANNELS, KeySpace, Retention
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

-- Ids live in generations: a set (clicks: a hash) per quarter of their window, named by the
-- quarter an id was last written in. A look-up reads every generation that may hold an id
-- seen within the window, one variadic command per generation and chunk for the whole batch
-- (unpack takes at most a few thousand values); the generation before those is unlinked
-- (freed off the main thread) and, as a backstop, expires a quarter later.
local CHUNK = 1000 -- even: a chunk of the clicks' flat (field, value) list holds whole pairs
local function generations(name, window)
  local period = math.ceil(window / 4)
  local newest = math.floor(now / period)
  local oldest = math.floor((now - window) / period)
  redis.call('UNLINK', p .. name .. (oldest - 1))
  return period, newest, oldest
end
local function chunks(values, call)
  for first = 1, #values, CHUNK do
    call(first, math.min(first + CHUNK - 1, #values))
  end
end
local function seen_before(name, window, values)
  local found = {}
  local period, newest, oldest = generations(name, window)
  if #values == 0 then return found, period, newest end
  for generation = newest, oldest, -1 do
    local key = p .. name .. generation
    if redis.call('EXISTS', key) == 1 then
      chunks(values, function(first, last)
        local flags = redis.call('SMISMEMBER', key, unpack(values, first, last))
        for i = 1, #flags do
          if flags[i] == 1 then found[values[first + i - 1]] = true end
        end
      end)
    end
  end
  return found, period, newest
end
local function remember(name, window, period, newest, values, command)
  if #values == 0 then return end
  local key = p .. name .. newest
  chunks(values, function(first, last) redis.call(command, key, unpack(values, first, last)) end)
  redis.call('EXPIREAT', key, string.format('%d', (newest + 2) * period + window))
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
local seen_ids, id_period, id_generation = seen_before('ids:', dedupe_ttl, ids)

-- The newest stored state of each of `values` in the generations of hashes `name`, parsed.
local function stored_states(name, window, values, parse)
  local found = {}
  local period, newest, oldest = generations(name, window)
  if #values == 0 then return found, period, newest end
  for generation = newest, oldest, -1 do
    local key = p .. name .. generation
    if redis.call('EXISTS', key) == 1 then
      local missing = {}
      for _, value in ipairs(values) do
        if found[value] == nil then missing[#missing + 1] = value end
      end
      chunks(missing, function(first, last)
        local stored = redis.call('HMGET', key, unpack(missing, first, last))
        for i = 1, last - first + 1 do
          if stored[i] then found[missing[first + i - 1]] = parse(stored[i]) end
        end
      end)
    end
  end
  return found, period, newest
end

-- Orders (`stream.orders`): the state of each order the batch's conversions name, as stored
-- "{status}\t{minute}\t{value}\t{channel}\t{ltv}\t{campaign}"; {status, minute, value,
-- channel, campaign, changed in this batch, ltv} here.
local order_state, order_period, order_generation = stored_states('ord:', order_ttl, orders,
  function(text)
    local status, minute, value, channel, ltv, campaign =
      string.match(text, '^(%a)\t(%-?%d+)\t(%d+)\t([^\t]*)\t([^\t]*)\t(.*)$')
    return {status, tonumber(minute), tonumber(value), channel, campaign, nil, ltv}
  end)
-- Customers (`stream.customers`): {acquisition channel, first minute, cohort month, changed}
-- of each customer the batch's conversions name, stored "{channel}\t{minute}\t{cohort}".
local customer_state, customer_period, customer_generation = stored_states(
  'cust:', customer_ttl, customers,
  function(text)
    local channel, minute, cohort = string.match(text, '^([^\t]*)\t(%-?%d+)\t(%d*)$')
    return {channel, tonumber(minute), cohort}
  end)
local seen_leads, lead_period, lead_generation = seen_before('leads:', order_ttl, leads)
local seen_callers, caller_period, caller_generation = seen_before('callers:', dedupe_ttl, callers)

-- Clicks: the newest registration of each click id the batch's conversions name.
local click_period, click_newest, click_oldest = generations('clicks:', click_ttl)
local registered = {}
if #clicks > 0 then
  for generation = click_newest, click_oldest, -1 do
    local key = p .. 'clicks:' .. generation
    if redis.call('EXISTS', key) == 1 then
      local missing = {}
      for _, click in ipairs(clicks) do
        if registered[click] == nil then missing[#missing + 1] = click end
      end
      chunks(missing, function(first, last)
        local stored = redis.call('HMGET', key, unpack(missing, first, last))
        for i = 1, last - first + 1 do
          if stored[i] then registered[missing[first + i - 1]] = stored[i] end
        end
      end)
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

local applied, duplicates, late, unlisted, other_campaigns = 0, 0, 0, 0, 0
local restated = 0
local new_ids, new_clicks, changed_orders, changed_customers = {}, {}, {}, {}
local new_leads = {}
local new_callers = {}
for j = 1, #events, @ROW_WIDTH@ do
  local @ROW_NAMES@ = unpack(events, j, j + @ROW_LAST@)
  if kind ~= 'c' then order_id = '' end
  if kind ~= 'l' then lead_id = '' end
  if seen_ids[event_id] then
    duplicates = duplicates + 1
  else
    seen_ids[event_id] = true
    new_ids[#new_ids + 1] = event_id
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
        new_clicks[#new_clicks + 1] = click_id
        new_clicks[#new_clicks + 1] = stored
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
remember('ids:', dedupe_ttl, id_period, id_generation, new_ids, 'SADD')
local new_orders = {}
for _, order_id in ipairs(changed_orders) do
  local order = order_state[order_id]
  new_orders[#new_orders + 1] = order_id
  new_orders[#new_orders + 1] = string.format(
    '%s\t%d\t%d\t%s\t%s\t%s', order[1], order[2], order[3], order[4], order[7], order[5])
end
remember('ord:', order_ttl, order_period, order_generation, new_orders, 'HSET')
local new_customers = {}
for _, customer_id in ipairs(changed_customers) do
  local customer = customer_state[customer_id]
  new_customers[#new_customers + 1] = customer_id
  new_customers[#new_customers + 1] = string.format(
    '%s\t%d\t%s', customer[1], customer[2], customer[3])
end
remember('cust:', customer_ttl, customer_period, customer_generation, new_customers, 'HSET')
for key, sums in pairs(ltv_writes) do
  for name, delta in pairs(sums) do
    if delta ~= 0 then redis.call('HINCRBY', key, name, string.format('%d', delta)) end
  end
  if ltv_expiry[key] then
    redis.call('EXPIREAT', key, string.format('%d', ltv_expiry[key]))
  end
end
remember('leads:', order_ttl, lead_period, lead_generation, new_leads, 'SADD')
remember('clicks:', click_ttl, click_period, click_newest, new_clicks, 'HSET')
remember('callers:', dedupe_ttl, caller_period, caller_generation, new_callers, 'SADD')

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
return {applied, duplicates, late, unlisted, other_campaigns}
"""

# The row fields the script reads by name: each must be in `batch.ROW`.
_READS: Final = frozenset(
    {"kind", "minute", "event_id", "channel", "coupon", "value_micros", "campaign"}
    | {"click_id", "order_id", "lead_id", "grouped_channel", "status", "customer_id"}
    | {"caller", "answered", "qualified"}
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
        _pack_rows(batch.rows),
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
    return encoded
