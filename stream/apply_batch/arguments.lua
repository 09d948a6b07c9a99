local p = ARGV[1]
local oldest_minute, oldest_hour = tonumber(ARGV[2]), tonumber(ARGV[3])
local minute_ttl, hour_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = tonumber(ARGV[6])
local dedupe_ttl, order_ttl, click_ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local customer_ttl = tonumber(ARGV[18])
local spend_ttl = ARGV[10]
local checks, spend = cjson.decode(ARGV[11]), cjson.decode(ARGV[13])
-- The rows (`batch.script_rows`): `events`, the common columns of every row, @ROW_WIDTH@ a
-- row; `extras`, the rest of each row that has more (`batch.SCRIPT_WIDTHS`), one after the
-- other, its own width by its kind (`extra_widths`, a kind not listed all of the rest), so that
-- a click is not unpacked with the ten values only a conversion or a call reads.
local events, extras, row_count, extra_widths = nil, nil, 0, {@EXTRA_WIDTHS@}
do
  local both = cmsgpack.unpack(ARGV[12])
  events, extras = both[1], both[2]
  row_count = #events / @ROW_WIDTH@
end
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
-- Redis Cluster's customers (`keys`, "Redis Cluster", "Customers across parts"): '1' in a
-- part's call, whose conversions leave their customer facts in the part's outbox instead of
-- counting them; '2' in a customer part's call, whose rows are those facts (their source part
-- and outbox number in ARGV[25]); absent for one instance. ARGV[24] (the batch's stamp) and in
-- a part's call ARGV[25] (each row's index in the whole batch) order the facts. ARGV[25] is
-- MessagePack (a number a row or fact, which cjson would parse from text).
local customer_mode = ARGV[23] or ''
local batch_stamp = ARGV[24] or '0'
local batch_rows = {}
if customer_mode == '1' then batch_rows = cmsgpack.unpack(ARGV[25]) end
