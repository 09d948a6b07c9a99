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
