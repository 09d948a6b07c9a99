local applied, duplicates, late, unlisted, other_campaigns = 0, 0, 0, 0, 0
local restated = 0
local rejected_click_ids = 0
local new_ids, new_clicks, changed_orders, changed_customers = {}, {}, {}, {}
local new_click_names = {}
local new_leads = {}
local new_callers = {}
-- The customer's first conversion acquires them for its channel; later ones are repeat sales
-- of their own channel, credited to the acquisition channel's LTV. Returns the conversion's LTV
-- share ("{cohort}:{first horizon}:{channel}", '' for none).
local function count_customer(customer_id, channel, campaign, minute, day, status, value_micros)
  local name = channel .. '\t' .. campaign .. ':'
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
    local ltv = customer[3] .. ':' .. horizon .. ':' .. customer[1]
    add_ltv(ltv, net_value(STATUS_LETTERS[status], value_micros))
    return ltv
  end
  return ''
end
-- Cluster mode's customer facts (`keys`, "Customers across parts"): what the customer's part
-- needs of a conversion ('n') or of a restatement's change of net value ('x', at the order's
-- minute), sent there by the worker from this part's outbox.
local facts = {}
local function emit_fact(
    kind, customer_id, minute, channel, campaign, status, value, event_id, row)
  facts[#facts + 1] = {kind, customer_id, minute, channel, campaign, status, value, event_id, row}
end
-- Each (minute, channel, campaign) the batch's events count in: {its campaign as admitted in the
-- minute's month, "{channel}\t{that campaign}:" (its counters' names but the letter), the
-- batch's counts per kind of a counter counted once per event (added after the loop: one `add`
-- per group and kind, not per event), and for a click registered in it its registration
-- "{channel}\t{campaign}\t{minute}" and "{channel}\t{campaign}", minute, and its clicks' stored
-- value (made after the loop, false until then)}. The first event of a group admits its
-- campaign, in the events' order as before, so the same campaigns are kept.
local groups = {}
-- A coupon's channel, read once a batch (the script alone writes while it runs).
local coupon_channels = {}
-- Appended to once per event: counted here, as `#` searches the table for its end each time.
local new_id_count, new_click_count = 0, 0
local function group_of(minute, channel, campaign)
  local by_channel = groups[minute]
  if by_channel == nil then by_channel = {}; groups[minute] = by_channel end
  local by_campaign = by_channel[channel]
  if by_campaign == nil then by_campaign = {}; by_channel[channel] = by_campaign end
  local group = by_campaign[campaign]
  if group == nil then
    local kept, day = campaign, day_of[minute]
    if day then kept = admit_campaign(day[7], day[4], channel, campaign) end
    local name = channel .. '\t' .. campaign
    group = {
      kept, channel .. '\t' .. kept .. ':', {}, name .. '\t' .. string.format('%d', minute), name,
      minute, false,
    }
    by_campaign[campaign] = group
  end
  return group
end
extra_at = 1
for row = 1, row_count do
  local j = (row - 1) * @ROW_WIDTH@ + 1
  @UNPACK_ROW@
  if kind ~= 'c' then order_id = '' end
  if kind ~= 'l' then lead_id = '' end
  if skipped[row - 1] then
    -- Applied before (counted in redelivered): nothing to do.
  elseif kind == 'n' then
    count_customer(customer_id, channel, campaign, minute, day_of[minute], status, value_micros)
  elseif kind == 'x' then
    -- A restatement's change of net value, in the LTV share its order's conversion had.
    local customer = customer_state[customer_id]
    if customer then
      local horizon = horizon_of(minute - customer[2])
      if customer[3] ~= '' and horizon <= #HORIZONS then
        add_ltv(customer[3] .. ':' .. horizon .. ':' .. customer[1], value_micros)
      end
    end
  elseif seen_ids[event_id] then
    duplicates = duplicates + 1
  else
    seen_ids[event_id] = true
    new_id_count = new_id_count + 1
    new_ids[new_id_count] = event_id
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
        if string.sub(order[7] or '', 1, 1) == '=' then
          if change ~= 0 then
            emit_fact('x', string.sub(order[7], 2), order[2], '', '', '', change, event_id, row)
          end
        else
          add_ltv(order[7], change)
        end
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
        -- A click registered earlier in the batch is its newest registration.
        local newest = new_click_names[click_id]
        local stored = newest and newest[4] or registered[click_id]
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
        channel = coupon_channels[coupon]
        if channel == nil then
          channel = redis.call('HGET', p .. 'coupons', coupon) or ''
          coupon_channels[coupon] = channel
        end
      end
      if channel == '' then channel = grouped_channel end
      if channel == '' then channel = 'unattributed' end
      local kept = kept_channels[channel] or admit(channel)
      if kept ~= channel then
        unlisted = unlisted + 1
        channel = kept
      end
      local by_channel = groups[minute]
      local by_campaign = by_channel and by_channel[channel]
      local group = by_campaign and by_campaign[campaign] or group_of(minute, channel, campaign)
      if kind == 'k' and click_id ~= '' and channel ~= 'unattributed' then
        if new_click_names[click_id] == nil then
          new_click_count = new_click_count + 1
          new_clicks[new_click_count] = click_id
        end
        new_click_names[click_id] = group
      end
      applied = applied + 1
      if minute < oldest_minute then late = late + 1 end
      if group[1] ~= campaign then
        other_campaigns = other_campaigns + 1
        campaign = group[1]
      end
      -- One name per (channel, campaign, counter); `route` derives the channel's from it.
      local name = group[2]
      if kind == 'c' then
        -- Gross as first reported; net and the status's counters as it stands.
        local day = day_of[minute]
        add(minute, name .. 'g', 1)
        if value_micros > 0 then add(minute, name .. 'G', value_micros) end
        count_order(minute, name, status_letter, value_micros, 1)
        local ltv = ''
        if customer_id ~= '' and customer_mode == '1' then
          -- Cluster mode: the customer's part counts it (a fact in the outbox); the order
          -- remembers its customer, for a restatement's change of LTV.
          emit_fact(
            'n', customer_id, minute, channel, campaign, status, value_micros, event_id, row)
          ltv = '=' .. customer_id
        elseif customer_id ~= '' then
          ltv = count_customer(customer_id, channel, campaign, minute, day, status, value_micros)
        end
        if order_id ~= '' then
          order_state[order_id] = {
            status_letter, minute, value_micros, channel, campaign, true, ltv,
          }
          changed_orders[#changed_orders + 1] = order_id
        end
      else
        local counts = group[3]
        counts[kind] = (counts[kind] or 0) + 1
      end
      -- A conversion's delay, in its click's buckets (`keys`, "Delays"; `lag.delay_bin_minutes`).
      if click_minute and kind == 'c' then
        local bin = delay_bin(minute - click_minute)
        add_delay(click_minute, name .. 't' .. bin)
      end
      if kind == 'p' then
        if answered == true then add(minute, name .. 'a', 1) end
        if qualified == true and (caller == '' or not seen_callers[caller]) then
          if caller ~= '' then
            seen_callers[caller] = true
            new_callers[#new_callers + 1] = caller
          end
          add(minute, name .. 'l', 1)
        end
      end
    end
  end
end
for minute, by_channel in pairs(groups) do
  for _, by_campaign in pairs(by_channel) do
    for _, group in pairs(by_campaign) do
      for kind, count in pairs(group[3]) do add(minute, group[2] .. kind, count) end
    end
  end
end
remember_ids('ids:', dedupe_ttl, id_period, id_generation, new_ids, nil)
-- An order's state, compact (`states`, lookups): in whole cents, its "channel\tcampaign" and
-- LTV share ("" for none) by reference; in micros, its "{LTV share}\tchannel\tcampaign" by one
-- reference; one that does not fit as text, "{status}{value}:{minute}:{ref}:{LTV ref}" with the
-- references of whole cents (`stream.orders`).
local new_orders = {}
do
  local texts, origin = {}, states.origin(order_period, order_generation, states.ORDER_SPAN)
  -- Each order's dictionary text, made once: "channel\tcampaign" (whole cents, its LTV share a
  -- text of its own) or "{LTV share}\tchannel\tcampaign" (micros).
  local names = {}
  local function apart(order, name)
    texts[#texts + 1] = name
    if order[7] ~= '' then texts[#texts + 1] = order[7] end
  end
  for i, order_id in ipairs(changed_orders) do
    local order = order_state[order_id]
    local name = order[4] .. '\t' .. order[5]
    if order[3] % 10000 == 0 then
      apart(order, name)
    else
      name = order[7] .. '\t' .. name
      texts[#texts + 1] = name
    end
    names[i] = name
  end
  local ref_of = refer('ord:', order_period, order_generation, order_ttl, texts)
  -- A text's reference as a number, parsed once per text rather than once per order.
  local numbers = {}
  local loose = {}
  for i, order_id in ipairs(changed_orders) do
    local order = order_state[order_id]
    local name = names[i]
    local ref = numbers[name]
    if ref == nil then ref = tonumber(ref_of[name]); numbers[name] = ref end
    local packed = nil
    if order[3] % 10000 == 0 then
      local ltv = order[7]
      if ltv ~= '' then
        local ltv_ref = numbers[ltv]
        if ltv_ref == nil then ltv_ref = tonumber(ref_of[ltv]); numbers[ltv] = ltv_ref end
        ltv = ltv_ref
      end
      packed = states.pack_order(order[1], order[2], order[3], ref, ltv, origin)
    else
      packed = states.pack_order(order[1], order[2], order[3], ref, nil, origin)
    end
    if packed then
      new_orders[order_id] = packed
    else
      loose[#loose + 1] = i
    end
  end
  if #loose > 0 then
    texts = {}
    for _, i in ipairs(loose) do
      local order = order_state[changed_orders[i]]
      apart(order, order[4] .. '\t' .. order[5])
    end
    for text, ref in pairs(refer('ord:', order_period, order_generation, order_ttl, texts)) do
      ref_of[text] = ref
    end
    for _, i in ipairs(loose) do
      local order = order_state[changed_orders[i]]
      local ltv = ''
      if order[7] ~= '' then ltv = ref_of[order[7]] end
      new_orders[changed_orders[i]] = string.format('%s%d:%d:%s:%s',
        order[1], order[3], order[2], ref_of[order[4] .. '\t' .. order[5]], ltv)
    end
  end
end
remember_ids('ord:', order_ttl, order_period, order_generation, changed_orders, new_orders)
-- A customer's state, compact (`states`): "{ref}{minute - origin, six digits}", the reference
-- naming "channel\tcohort"; one whose minute is too far from the generation's as
-- "{channel ref}:{minute}:{cohort}".
local new_customers = {}
do
  local texts = {}
  local origin = states.origin(customer_period, customer_generation, states.CUSTOMER_SPAN)
  for _, customer_id in ipairs(changed_customers) do
    local customer = customer_state[customer_id]
    local offset = customer[2] - origin
    if offset >= 0 and offset < states.CUSTOMER_SPAN then
      texts[#texts + 1] = customer[1] .. '\t' .. customer[3]
    else
      texts[#texts + 1] = customer[1]
    end
  end
  local ref_of = refer('cust:', customer_period, customer_generation, customer_ttl, texts)
  for i, customer_id in ipairs(changed_customers) do
    local customer = customer_state[customer_id]
    local offset = customer[2] - origin
    if offset >= 0 and offset < states.CUSTOMER_SPAN then
      new_customers[customer_id] = ref_of[texts[i]] .. string.format('%06d', offset)
    else
      new_customers[customer_id] = string.format(
        '%s:%d:%s', ref_of[customer[1]], customer[2], customer[3])
    end
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
-- Every click of a group has the same value: its text, reference and value are made once per
-- group, the groups taken in their first click's order, so that new texts get the references a
-- text per click gave them.
if new_click_count > 0 then
  local texts, registering = {}, {}
  for i = 1, new_click_count do
    local group = new_click_names[new_clicks[i]]
    if not group[7] then
      group[7] = true
      registering[#registering + 1] = group
      texts[#texts + 1] = group[5]
    end
  end
  local ref_of = refer('clicks:', click_period, click_newest, click_ttl, texts)
  local origin = click_origin(click_newest)
  for _, group in ipairs(registering) do
    local ref, offset = ref_of[group[5]], group[6] - origin
    if offset >= 0 and offset < CLICK_SPAN then
      group[7] = ref .. string.format('%06d', offset)
    else
      group[7] = '-' .. ref .. string.format('%010d', group[6])
    end
  end
  -- The loop is done with the clicks' groups: the table takes their values instead (every key
  -- is there already, so it does not grow as a new table would).
  for i = 1, new_click_count do
    local click = new_clicks[i]
    new_click_names[click] = new_click_names[click][7]
  end
  remember_ids('clicks:', click_ttl, click_period, click_newest, new_clicks, new_click_names)
end
-- Cluster mode: the batch's customer facts appended to this part's outbox of their customer's
-- part (the SHA1 of the customer's fingerprint, its first 32 bits scaled to `keys.CLUSTER_PARTS`,
-- filled in by `lua.fill_marks`; with 16 parts, its first hex digit), numbered per destination,
-- atomically with the counters; returned for the worker to send at once.
local outbox = {}
if #facts > 0 then
  local by_part = {}
  for _, fact in ipairs(facts) do
    local high = tonumber(string.sub(redis.sha1hex(fact[2]), 1, 8), 16)
    local part = math.floor(high * @CLUSTER_PARTS@ / 4294967296)
    if by_part[part] == nil then by_part[part] = {} end
    local list = by_part[part]
    list[#list + 1] = fact
  end
  for part, list in pairs(by_part) do
    local name = string.format('%d', part)
    local last = redis.call('HINCRBY', p .. 'outbox', name, #list)
    local packed = {}
    for i, fact in ipairs(list) do
      -- "{number}\t{stamp}\t{kind}\t{customer}\t{minute}\t{channel}\t{campaign}\t{status}
      -- \t{value}\t{event id}\t{row}" (`cluster.read_fact`): text, exact integers.
      local entry = table.concat({
        string.format('%d', last - #list + i), batch_stamp, fact[1], fact[2],
        string.format('%d', fact[3]), fact[4], fact[5], fact[6], string.format('%d', fact[7]),
        fact[8], string.format('%d', batch_rows[fact[9]]),
      }, '\t')
      packed[i] = entry
      outbox[#outbox + 1] = part
      outbox[#outbox + 1] = entry
    end
    for first = 1, #packed, 1000 do
      local last_entry = math.min(first + 999, #packed)
      redis.call('RPUSH', p .. 'outbox:' .. name, unpack(packed, first, last_entry))
    end
  end
end
