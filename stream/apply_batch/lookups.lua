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
