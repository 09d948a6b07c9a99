-- Redelivery (`keys`, "Redelivery"): per partition, ``offsets`` holds "{offset}:{event id}"
-- of the last row applied. A row at or below that offset is skipped only once this batch shows
-- the same log: its row at that offset has that event id. A broker restarted empty numbers a
-- new log from 0 again; there the row at that offset differs (the offset is moved to the new
-- log's), or is not in the batch (nothing skipped, nothing moved), so no new record is skipped.
-- A source named "{partition}/{log}" (the broker's cluster id; the dev stack gives each broker
-- its own) is stored as "{offset}/{log}:{event id}" under "{partition}": a row of another log
-- is never skipped, even at the same offset with the same event id (a record both brokers of a
-- blue/green replacement hold, after records only one of them holds), and two workers on two
-- logs may interleave batches of one partition: each moves the offset to its own log's.
local skipped, redelivered, moved_offsets = {}, 0, {}
do
  local sources = cmsgpack.unpack(ARGV[21])
  if #sources > 0 then
    local names = {}
    local logs = {}
    for i, source in ipairs(sources) do
      local name, log = string.match(source[1], '^(.-)/(.*)$')
      names[i], logs[i] = name or source[1], log or ''
    end
    local stored = redis.call('HMGET', p .. 'offsets', unpack(names))
    for i, source in ipairs(sources) do
      local first, offsets = source[2], source[3]
      local applied, identity, applied_log = nil, nil, nil
      if stored[i] then
        local offset, log, event_id = string.match(stored[i], '^(%d+)/?([^:]*):(.*)$')
        applied, identity, applied_log = tonumber(offset), event_id, log
      end
      local same = false
      local other_log = applied ~= nil and applied_log ~= logs[i]
      if applied and not other_log then
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
      if last and (applied == nil or other_log or last > applied) then
        local event_id = events[(first + #offsets - 1) * @ROW_WIDTH@ + 1 + @AT_event_id@]
        local at = logs[i] == '' and '' or '/' .. logs[i]
        moved_offsets[#moved_offsets + 1] = names[i]
        moved_offsets[#moved_offsets + 1] = string.format('%d', last) .. at .. ':' .. event_id
      end
    end
  end
end
-- Customer facts (cluster mode's second call): ``offsets`` holds under "outbox:{part}" the
-- number of the last fact of that source part's outbox for this part applied. A fact at or
-- below it was applied (skipped); the next one is applied; one past a gap waits (counted in
-- `fact_gaps`: the worker then sends the whole outbox again).
local fact_gaps, confirmed = 0, {}
if customer_mode == '2' then
  local sources, names, last = cmsgpack.unpack(ARGV[25]), {}, {}
  for _, source in ipairs(sources) do
    local name = 'outbox:' .. string.format('%d', source[1])
    if last[name] == nil then
      names[#names + 1] = name
      last[name] = 0
    end
  end
  if #names > 0 then
    local stored = redis.call('HMGET', p .. 'offsets', unpack(names))
    for i, name in ipairs(names) do last[names[i]] = tonumber(stored[i] or 0) or 0 end
  end
  for r, source in ipairs(sources) do
    local name = 'outbox:' .. string.format('%d', source[1])
    if source[2] == last[name] + 1 then
      last[name] = source[2]
    else
      skipped[r - 1] = true
      if source[2] > last[name] then fact_gaps = fact_gaps + 1 end
    end
  end
  for _, name in ipairs(names) do
    moved_offsets[#moved_offsets + 1] = name
    moved_offsets[#moved_offsets + 1] = string.format('%d', last[name])
    confirmed[#confirmed + 1] = {tonumber(string.sub(name, 8)), last[name]}
  end
end
