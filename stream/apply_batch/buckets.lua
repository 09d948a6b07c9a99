local writes, expiry = {}, {}
-- A per-campaign name ("{channel}\t{campaign}:{counter}") -> its channel's ("{channel}:{counter}").
local channel_names = {}
local function channel_name(per_campaign)
  local name = channel_names[per_campaign]
  if name == nil then
    -- The counter is what follows the last ':' (one letter, or 't' and a delay bin).
    local counter = string.match(per_campaign, ':([^:]*)$')
    name = string.match(per_campaign, '^[^\t]*') .. ':' .. counter
    channel_names[per_campaign] = name
  end
  return name
end
-- A bucket's sums: the first table of sums routed to it is its own as it is, shared (a batch is
-- mostly one minute's: its day's and month's campaign buckets take the minute's sums, its day,
-- month, minute, hour and total buckets its channels' sums); another is added to a copy.
local shared = {}
local function add_sums(key, sums)
  local held = writes[key]
  if held == nil then
    writes[key], shared[key] = sums, true
    return
  end
  if shared[key] then
    local copy = {}
    for name, sum in pairs(held) do copy[name] = sum end
    held, writes[key], shared[key] = copy, copy, nil
  end
  for name, delta in pairs(sums) do add_held(held, key, name, delta) end
end
-- One minute's sums into its buckets: the per-campaign names into the day's and month's
-- campaign buckets, their channel's sums (added up here first, so a channel's field is put once
-- a minute, not once per campaign) into the day, month, minute, hour and total buckets. Delays
-- (`day` nil) count in their click's minute, hour and total buckets: no day bucket (`keys`,
-- "Delays").
local function route(minute, sums, day)
  local keys = {}
  if day then
    expiry[day[5]], expiry[day[6]] = day[2], day[4]
    add_sums(day[5], sums)
    add_sums(day[6], sums)
    expiry[day[1]], expiry[day[3]] = day[2], day[4]
    keys[1], keys[2] = day[1], day[3]
  end
  if minute >= oldest_minute then
    local key = p .. 'm:' .. minute
    expiry[key] = (minute + 1) * 60 + minute_ttl
    keys[#keys + 1] = key
  end
  local hour = math.floor(minute / 60)
  if hour >= oldest_hour then
    local key = p .. 'h:' .. hour
    expiry[key] = (hour + 1) * 3600 + hour_ttl
    keys[#keys + 1] = key
  end
  keys[#keys + 1] = p .. 't'
  local channel_sums = {}
  for per_campaign, delta in pairs(sums) do
    local name = channel_names[per_campaign] or channel_name(per_campaign)
    local sum = (channel_sums[name] or 0) + delta
    if sum > 4e15 or sum < -4e15 then
      -- Past where a Lua number is exact: what is summed so far goes first.
      local so_far = {[name] = channel_sums[name]}
      for _, key in ipairs(keys) do add_sums(key, so_far) end
      sum = delta
    end
    channel_sums[name] = sum
  end
  for _, key in ipairs(keys) do add_sums(key, channel_sums) end
end
for minute, sums in pairs(minutes) do route(minute, sums, day_of[minute]) end
for _, entry in ipairs(spilled) do
  route(entry[1], {[entry[2]] = entry[3]}, day_of[entry[1]])
end
for minute, sums in pairs(delay_minutes) do route(minute, sums, nil) end
-- One HMGET and one HSET per bucket and chunk instead of an HINCRBY per field: the script
-- is atomic, so reading and writing back is an increment. A figure at or past 4e15 (where a
-- Lua number stops being exact) is left to HINCRBY, which counts in 64-bit integers.
-- (Lists filled through a count: `#` searches a table for its end each time; the functions
-- called once a field are locals, not a global's and a table's look-up each time.) A stored
-- figure is read by the addition itself (Lua converts the text, once; `tonumber` would convert
-- it twice), and only the sum is checked: every delta is within 4e15 (`add_sums`, and `add`
-- and `route` for a table of sums written as it is), so a sum within 4e15 comes from a stored
-- figure within 8e15, which a Lua number holds exactly.
local format = string.format
-- The names and sums of a table of sums, listed once for the buckets that share it.
local listed = {}
for key, sums in pairs(writes) do
  local names, deltas = nil, nil
  if listed[sums] then
    names, deltas = listed[sums][1], listed[sums][2]
  else
    local count = 0
    names, deltas = {}, {}
    for name, sum in pairs(sums) do
      -- A restatement's counters may cancel out (a value changed, the count not).
      if sum ~= 0 then
        count = count + 1
        names[count], deltas[count] = name, sum
      end
    end
    listed[sums] = {names, deltas}
  end
  chunks(names, function(first, last)
    local stored = redis.call('HMGET', key, unpack(names, first, last))
    local values, filled = {}, 0
    for i = 1, last - first + 1 do
      local name, delta = names[first + i - 1], deltas[first + i - 1]
      local new = (stored[i] or 0) + delta
      if new < 4e15 and new > -4e15 then
        values[filled + 1], values[filled + 2] = name, format('%d', new)
        filled = filled + 2
      else
        redis.call('HINCRBY', key, name, string.format('%d', delta))
      end
    end
    if filled > 0 then redis.call('HSET', key, unpack(values, 1, filled)) end
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
return {applied, duplicates, late, unlisted, other_campaigns, redelivered, outbox, confirmed,
  fact_gaps}
