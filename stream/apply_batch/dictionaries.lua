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
