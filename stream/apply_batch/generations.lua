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
-- The worker sends the number each of the batch's fingerprints is placed by (ARGV[22],
-- `fingerprints.script_arguments`), which the row scan (`lookups`) puts here: a table read instead
-- of a substring and a decimal parse per id; an id not in it (a member a split reads back) is
-- parsed here, from its last 12 characters' codes (a substring and `tonumber`, which calls
-- strtod, cost a third more), each code a digit plus 48.
local place_values = {}
local byte = string.byte
local DIGIT_CODES = 48 * 111111111111
local function place_value(id)
  local value = place_values[id]
  if value then return value end
  if #id <= 12 then return tonumber(id) end -- its last 12 characters are all of it
  local a, b, c, d, e, f, g, h, i, j, k, l = byte(id, -12, -1)
  return ((((((((((a * 10 + b) * 10 + c) * 10 + d) * 10 + e) * 10 + f) * 10 + g) * 10 + h)
    * 10 + i) * 10 + j) * 10 + k) * 10 + l - DIGIT_CODES
end
-- A bucket's key, its name made once per script call; a bucket number's text (":{bucket}",
-- a number formatted by sprintf) once for every generation and kind.
local bucket_keys, bucket_texts = {}, {}
local function bucket_key(base, bucket)
  local named = bucket_keys[base]
  if named == nil then named = {}; bucket_keys[base] = named end
  local key = named[bucket]
  if key == nil then
    local text = bucket_texts[bucket]
    if text == nil then text = ':' .. bucket; bucket_texts[bucket] = text end
    key = base .. text
    named[bucket] = key
  end
  return key
end
local function layout(base)
  local stored = redis.call('HMGET', base .. ':m', 'n', 's', 'c', 'x')
  if not stored[1] then return nil end
  return {tonumber(stored[1]), tonumber(stored[2]), tonumber(stored[3]), stored[4]}
end
local function window_of(name, window)
  local period = math.ceil(window / 4)
  local oldest = math.floor((now - window) / period)
  local base = p .. name .. (oldest - 1)
  local shape = layout(base)
  if shape then
    local names = {base .. ':m', base .. ':e', base .. ':names', base .. ':refs'}
    for bucket = 0, shape[1] + shape[2] - 1 do
      names[#names + 1] = base .. ':' .. bucket
      if #names == CHUNK then redis.call('UNLINK', unpack(names)); names = {} end
    end
    if #names > 0 then redis.call('UNLINK', unpack(names)) end
  end
  return period, math.floor(now / period), oldest
end
-- `ids` (but those in `skip`, if given) by bucket of the layout `shape` (n, s): its placing
-- number modulo n, or 2n below the split pointer; written out, with no call an id, as it runs
-- for every id looked up or written.
local function by_bucket(ids, shape, skip)
  local n, s = shape[1], shape[2]
  local wide = 2 * n
  local groups = {}
  for i = 1, #ids do
    local id = ids[i]
    if skip == nil or not skip[id] then
      local value = place_values[id] or place_value(id)
      local bucket = value % n
      if bucket < s then bucket = value % wide end
      local group = groups[bucket]
      if group == nil then groups[bucket] = {id} else group[#group + 1] = id end
    end
  end
  return groups
end
-- Look `group`'s ids from `first` to `last` up in one bucket (`key`) of generation `generation`:
-- what is found goes to `found` (and `where`), an id found in a newer generation kept.
local function look_in(key, group, first, last, hash, found, where, generation)
  if hash then
    local stored = redis.call('HMGET', key, unpack(group, first, last))
    for i = 1, last - first + 1 do
      local value = stored[i]
      if value then
        local id = group[first + i - 1]
        if found[id] == nil then found[id] = value; where[id] = generation end
      end
    end
  else
    local flags = redis.call('SMISMEMBER', key, unpack(group, first, last))
    for i = 1, last - first + 1 do
      if flags[i] == 1 then found[group[first + i - 1]] = true end
    end
  end
end
-- Of `ids`, those in a generation of `name` within the window: id -> true (sets) or its stored
-- value (hashes, `hash` true), newest generation first; `where`: id -> its generation. The ids
-- are grouped by bucket once per layout: generations of a steady flow share one (`remember_ids`),
-- so an id found in a newer one may be asked for again in an older one (a duplicate, rare),
-- where what is found is then not taken.
local groupings = {} -- name -> {ids looked up, layout tag -> their groups}: `remember_ids`
local function look_up(name, window, ids, hash)
  local found, where = {}, {}
  local period, newest, oldest = window_of(name, window)
  if #ids == 0 then return found, period, newest, where end
  local grouped, kept = {}, {}
  groupings[name] = {ids, kept}
  for generation = newest, oldest, -1 do
    local base = p .. name .. generation
    local shape = layout(base)
    if shape then
      local tag = shape[1] .. ':' .. shape[2]
      local groups = grouped[tag]
      if groups == nil then
        if next(found) == nil then
          -- Kept for the write only with every id in it: an id found may be written too.
          groups = by_bucket(ids, shape, nil)
          kept[tag] = groups
        else
          groups = by_bucket(ids, shape, found)
        end
        grouped[tag] = groups
      end
      for bucket, group in pairs(groups) do
        -- In chunks without a closure a bucket: a group is nearly always one chunk.
        local key, count = bucket_key(base, bucket), #group
        if count <= CHUNK then
          look_in(key, group, 1, count, hash, found, where, generation)
        else
          for first = 1, count, CHUNK do
            look_in(key, group, first, math.min(first + CHUNK - 1, count), hash, found, where,
              generation)
          end
        end
      end
    end
  end
  return found, period, newest, where
end
-- Which buckets of a generation have their expiry: ``{name}{gen}:e``, a string of bits set once
-- a bucket got it. A bucket gets its expiry when a write creates it, not on every write; a
-- generation is laid out ahead of its ids (`remember_ids`), so its first write does not create
-- every bucket, and these bits say which later writes create one: one GET a call, a byte and a
-- mask per bucket written, a SETBIT per bucket created (once in its life). Bucket b is bit
-- 1 + b % 7 (SETBIT's order, from the high bit) of byte b // 7, so that every byte stays ASCII
-- and the string is text where the key space is read as text (`stream.snapshot`). A bucket a
-- split empties (a key Redis then removes) has its bit cleared.
local band = bit.band
local MASKS = {64, 32, 16, 8, 4, 2, 1}
local function has_expiry(bits, bucket)
  local within = bucket % 7
  return band(byte(bits, (bucket - within) / 7 + 1) or 0, MASKS[within + 1]) ~= 0
end
-- The generations whose bits changed in this call: their key's expiry is set once, at the end.
local marked = {}
local function mark_expiry(base, bucket, on)
  local within = bucket % 7
  redis.call('SETBIT', base .. ':e', (bucket - within) / 7 * 8 + 1 + within, on and 1 or 0)
  marked[base] = true
end
-- Split bucket s of a generation in two (`fingerprints.bucket_of`).
-- The layout after bucket s is split: s moves on, and n doubles once every bucket is split.
local function grow(shape)
  local n, s = shape[1], shape[2] + 1
  if s == n then n, s = 2 * n, 0 end
  shape[1], shape[2] = n, s
end
local function split(base, shape, hash, expire_at)
  local n, s = shape[1], shape[2]
  local from, to = bucket_key(base, s), bucket_key(base, s + n)
  local gone, moved, size = {}, {}, 0
  if hash then
    local flat = redis.call('HGETALL', from)
    size = #flat / 2
    for i = 1, #flat, 2 do
      if place_value(flat[i]) % (2 * n) ~= s then
        gone[#gone + 1] = flat[i]
        moved[#moved + 1] = flat[i]
        moved[#moved + 1] = flat[i + 1]
      end
    end
  else
    local members = redis.call('SMEMBERS', from)
    size = #members
    for _, id in ipairs(members) do
      if place_value(id) % (2 * n) ~= s then gone[#gone + 1] = id end
    end
    moved = gone -- a set's ids move without values
  end
  if #gone > 0 then
    chunks(gone, function(first, last)
      redis.call(hash and 'HDEL' or 'SREM', from, unpack(gone, first, last))
    end)
    chunks(moved, function(first, last)
      redis.call(hash and 'HSET' or 'SADD', to, unpack(moved, first, last))
    end)
    redis.call('EXPIREAT', to, expire_at)
    mark_expiry(base, s + n, true)
    if #gone == size then mark_expiry(base, s, false) end
  end
  grow(shape)
end
-- `ids` (to write) by bucket of the layout `shape`, from the groups the look-up of `name` made
-- for that layout (steady flows keep one): nil unless `ids` are the ids looked up, in their
-- order, less some (found, duplicates, redelivered). Only groups made before anything was found
-- are kept (`look_up`), so they hold every id looked up; those left out are taken out of their
-- groups, each group they fall in filtered once, so that a batch of mostly left-out ids (a
-- replay, a catch-up of re-sent events) costs one pass, not a search per id.
local function regrouped(name, ids, shape)
  local looked = groupings[name]
  if looked == nil then return nil end
  local groups = looked[2][shape[1] .. ':' .. shape[2]]
  if groups == nil then return nil end
  local all, left, at = looked[1], {}, 0
  if #ids > #all then return nil end -- more than were looked up (new clicks): not a part of them
  for i = 1, #ids do
    local id = ids[i]
    at = at + 1
    local other = all[at]
    while other ~= id do
      if other == nil then return nil end -- not in the look-up's order: placed anew
      left[#left + 1] = other
      at = at + 1
      other = all[at]
    end
  end
  for i = at + 1, #all do left[#left + 1] = all[i] end
  if #left > 0 then
    -- Each id left out as often as it is (an id twice in the batch is written once).
    local n, s, times, touched = shape[1], shape[2], {}, {}
    for _, id in ipairs(left) do
      times[id] = (times[id] or 0) + 1
      local value = place_value(id)
      local bucket = value % n
      if bucket < s then bucket = value % (2 * n) end
      touched[bucket] = true
    end
    for bucket in pairs(touched) do
      local group = groups[bucket]
      if group ~= nil then
        local kept, count = {}, 0
        for j = 1, #group do
          local id = group[j]
          local out = times[id]
          if out and out > 0 then
            times[id] = out - 1
          else
            count = count + 1
            kept[count] = id
          end
        end
        if count > 0 then groups[bucket] = kept else groups[bucket] = nil end
      end
    end
  end
  groupings[name] = nil -- its groups are now the write's
  return groups
end
-- Write `ids` into the newest generation of `name`: a set, or with `values` (id -> value) a
-- hash. A generation's first write lays it out for as many ids as the generation before it held
-- (as growing to them would; one bucket when there is none): in a steady flow it then fills to
-- about that size without a split, where growing from one bucket read every id back and moved
-- it about twice. Beyond that, buckets are split first, for as many new ids as `ids` holds
-- (fewer when some are there already: then a bucket more than needed at most), so that every id
-- goes straight to the bucket it stays in instead of being written, read back and moved by the
-- splits after the write; a first write splits nothing (no bucket exists yet), it only lays out.
-- ``x`` is 1 (a bucket laid out may not exist yet), so that an older script, one without the
-- expiry bits, sets the expiry on every write.
local function remember_ids(name, window, period, newest, ids, values)
  if #ids == 0 then return end
  local base = p .. name .. newest
  local expire_at = string.format('%d', (newest + 2) * period + window)
  local hash = values ~= nil
  local load = SET_LOAD
  if hash then load = HASH_LOAD end
  local shape = layout(base)
  local fresh = shape == nil
  if not fresh and shape[4] ~= '1' then
    -- Written by an older script, whose splits count an emptied bucket in x but leave its bit
    -- set: the bits are learnt again, each bucket's next write setting its expiry.
    redis.call('DEL', base .. ':e')
  end
  if fresh then
    -- Laid out for the count of the generation before, not its layout: a generation after a
    -- burst is laid out for what it held, not for the burst's.
    local before = layout(p .. name .. (newest - 1))
    local buckets = math.max(1, math.ceil((before and before[3] or 0) / load))
    shape = {1, 0, 0}
    while shape[1] * 2 <= buckets do shape[1] = shape[1] * 2 end
    shape[2] = buckets - shape[1]
  end
  while shape[3] + #ids > load * (shape[1] + shape[2]) do
    if fresh then grow(shape) else split(base, shape, hash, expire_at) end
  end
  local bits = ''
  if not fresh then bits = redis.call('GET', base .. ':e') or '' end
  for bucket, group in pairs(regrouped(name, ids, shape) or by_bucket(ids, shape, nil)) do
    local key = bucket_key(base, bucket)
    local arguments = group
    if hash then
      arguments = {}
      for i = 1, #group do
        local id = group[i]
        arguments[2 * i - 1] = id
        arguments[2 * i] = values[id]
      end
    end
    local count = #arguments
    for first = 1, count, CHUNK do
      shape[3] = shape[3] + redis.call(hash and 'HSET' or 'SADD', key,
        unpack(arguments, first, math.min(first + CHUNK - 1, count)))
    end
    if not has_expiry(bits, bucket) then
      redis.call('EXPIREAT', key, expire_at)
      mark_expiry(base, bucket, true)
    end
  end
  if marked[base] then
    redis.call('EXPIREAT', base .. ':e', expire_at)
    marked[base] = nil
  end
  redis.call('HSET', base .. ':m', 'n', string.format('%d', shape[1]),
    's', string.format('%d', shape[2]), 'c', string.format('%d', shape[3]), 'x', '1')
  redis.call('EXPIREAT', base .. ':m', expire_at)
end
