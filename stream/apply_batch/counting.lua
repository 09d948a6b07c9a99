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
-- Conversions' delays, by their click's minute, apart from `minutes`: they count in no day
-- bucket, so that a minute's other sums can go to its day's campaign buckets as they are
-- (`route`). Counts of events: never near 4e15.
local delay_minutes = {}
local function add_delay(minute, name)
  local sums = delay_minutes[minute]
  if sums == nil then sums = {}; delay_minutes[minute] = sums end
  sums[name] = (sums[name] or 0) + 1
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
-- Sums of a batch's increments, key -> field -> sum, written once at the end; a sum past where a
-- Lua number is exact is left to HINCRBY's 64-bit integers at once instead.
local function add_held(sums, key, name, delta)
  local sum = (sums[name] or 0) + delta
  if sum > 4e15 or sum < -4e15 then
    redis.call('HINCRBY', key, name, string.format('%d', delta))
  else
    sums[name] = sum
  end
end
local function add_to(writes, key, name, delta)
  local sums = writes[key]
  if sums == nil then sums = {}; writes[key] = sums end
  add_held(sums, key, name, delta)
end
local ltv_writes, ltv_expiry = {}, {}
local function add_ltv(ltv, delta)
  if ltv == '' or delta == 0 then return end
  local cohort, first, channel = string.match(ltv, '^(%d+):(%d):(.*)$')
  local key = p .. 'ltv:' .. cohort
  for i = tonumber(first), #HORIZONS do
    add_to(ltv_writes, key, channel .. ':' .. HORIZONS[i], delta)
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
