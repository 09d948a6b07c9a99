-- Each event is a row of `batch.SCRIPT_ROW`'s first values (`events`, `extras`); each kind is
-- counted by some of them only: a click is registered by its click id, a redemption attributed
-- by its coupon, a conversion or lead by its click id and coupon, a conversion restates its
-- order (order id), a lead is deduplicated by its lead id, and only a conversion's value is
-- revenue. A bot's click (b) is counted apart under its own channel or grouping, and registers
-- nothing.
local ids, orders, clicks, customers = {}, {}, {}, {}
local leads, callers = {}, {}
local id_count = 0 -- `ids` filled through a count: `#` searches a table for its end each time
local extra_at = 1 -- where the row's extras start
do
  -- Each fingerprint's placing number (`place_values`): ARGV[22] holds one list per
  -- fingerprinted column (`fingerprints.PLACED`), the numbers of that column's ids in the rows'
  -- order; each column's next number goes with the next id found in it (locals
  -- ``placed_{column}``, ``next_{column}``; the common columns' ids are read into locals named
  -- after them).
  @PLACE_LOCALS@
  for j = 1, #events, @ROW_WIDTH@ do
    local kind = events[j + @AT_kind@]
    local at, width = extra_at, extra_widths[kind] or @EXTRA_ALL@
    extra_at = at + width
    @PLACE_ROW@
    if kind == 'k' then
      -- A click (most rows): its event id only; its click id is registered after the loop.
      id_count = id_count + 1
      ids[id_count] = event_id
    else
      if kind == 'n' or kind == 'x' then
        -- A customer fact (cluster mode's second call): only its customer is looked up.
        customers[#customers + 1] = extras[at + @EXTRA_customer_id@]
      else
        id_count = id_count + 1
        ids[id_count] = event_id
      end
      -- Calls (issue 14): a qualified call's caller hash, to count a repeat caller as one lead.
      if kind == 'p' and extras[at + @EXTRA_qualified@] == true
          and extras[at + @EXTRA_caller@] ~= '' then
        callers[#callers + 1] = extras[at + @EXTRA_caller@]
      end
      if kind == 'c' or kind == 'l' then
        if events[j + @AT_channel@] == '' and click_id ~= '' then
          clicks[#clicks + 1] = click_id
        end
      end
      if kind == 'c' then
        local order_id = extras[at + @EXTRA_order_id@]
        if order_id ~= '' then orders[#orders + 1] = order_id end
        local customer_id = extras[at + @EXTRA_customer_id@]
        if customer_id ~= '' and customer_mode ~= '1' then
          customers[#customers + 1] = customer_id
        end
      elseif kind == 'l' then
        -- Leads: deduplicated by their CRM's lead id too, remembered as long as order ids.
        local lead_id = extras[at + @EXTRA_lead_id@]
        if lead_id ~= '' then leads[#leads + 1] = lead_id end
      end
    end
  end
  -- A list not read to its end, or read past it (worker and script disagree on the rows' ids,
  -- a bug): every id is placed by its digits instead, as when no numbers are sent. Only the
  -- length is checked: both sides derive the lists from `batch.SCRIPT_WIDTHS` and
  -- `fingerprints.PLACED`, which keep them in the same order.
  if @PLACE_MISMATCH@ then
    redis.log(redis.LOG_WARNING, 'adpulse: placing numbers do not match the rows; ignored')
    place_values = {}
  end
end
local seen_ids, id_period, id_generation = look_up('ids:', dedupe_ttl, ids, false)

-- Compact states (`stream.states`, the same in Python): an order's or a customer's state is
-- one decimal integer, which Redis keeps as a listpack integer (an order's in 10 bytes, a
-- customer's in 6) where a text took 20 or more. Its last six digits are the minute from the
-- generation's origin (`states.origin`), an order's times four plus its status; the digits
-- before them (the head) are the customer's dictionary reference, or for an order, by the
-- head's last three bits: whole cents ((cents x width + reference) x LTV width + LTV
-- reference) x 8 + 4 + widths, the references those of the text form, or any micros (value x
-- width + reference) x 8 + width, one reference naming "{LTV share}\t{channel}\t{campaign}"; a
-- customer's names "{channel}\t{cohort}". A state that does not fit (a minute far from the
-- generation, a value of millions) is kept as text, the form older versions wrote: both are
-- read.
local states = {
  STATUS = {'a', 'p', 'd', 'r'}, INDEX = {a = 0, p = 1, d = 2, r = 3},
  WIDTHS = {2^6, 2^10, 2^14, 2^20}, CENT_WIDTHS = {2^10, 2^20}, LTV_WIDTHS = {2^6, 2^12},
  ORDER_SPAN = 250000, CUSTOMER_SPAN = 1000000,
}
-- The span of minutes a generation's compact states hold ends a day after the generation does.
function states.origin(period, generation, span)
  return math.floor((generation + 1) * period / 60) + 1440 - span
end
local function smallest(widths, ref)
  for index, width in ipairs(widths) do
    if ref < width then return index end
  end
  return nil
end
-- {status, minute, value}, reference and LTV reference ('' none; nil: the reference names
-- all three texts) of a compact order state; nil for a text.
function states.order(text, origin)
  if not string.find(text, '^%d+$') then return nil end
  local head, tail = tonumber(string.sub(text, 1, -7)), tonumber(string.sub(text, -6))
  local class = head % 8
  local rest = (head - class) / 8
  local status = tail % 4
  local order = {states.STATUS[status + 1], origin + (tail - status) / 4}
  if class < 4 then
    local width = states.WIDTHS[class + 1]
    local ref = rest % width
    order[3] = (rest - ref) / width
    return order, ref, nil
  end
  local ltv_width = states.LTV_WIDTHS[(class - 4) % 2 + 1]
  local width = states.CENT_WIDTHS[math.floor((class - 4) / 2) + 1]
  local ltv = rest % ltv_width
  rest = (rest - ltv) / ltv_width
  local ref = rest % width
  order[3] = (rest - ref) / width * 10000
  if ltv == 0 then return order, ref, '' end
  return order, ref, string.format('%d', ltv)
end
-- `ltv` nil: `ref` names all three texts; else the LTV share's reference ('' none).
function states.pack_order(status, minute, value, ref, ltv, origin)
  local offset = minute - origin
  if offset < 0 or offset >= states.ORDER_SPAN then return nil end
  local head = nil
  if ltv == nil then
    local index = smallest(states.WIDTHS, ref)
    if index == nil then return nil end
    head = (value * states.WIDTHS[index] + ref) * 8 + index - 1
  else
    local ltv_ref = tonumber(ltv) or 0
    local index, ltv_index = smallest(states.CENT_WIDTHS, ref), smallest(states.LTV_WIDTHS, ltv_ref)
    if value % 10000 ~= 0 or index == nil or ltv_index == nil then return nil end
    head = ((value / 10000 * states.CENT_WIDTHS[index] + ref) * states.LTV_WIDTHS[ltv_index]
      + ltv_ref) * 8 + 4 + 2 * (index - 1) + ltv_index - 1
  end
  if head >= 2^53 then return nil end -- past where a Lua number is exact
  return string.format('%d%06d', head, offset * 4 + states.INDEX[status])
end

-- Orders (`stream.orders`): the state of each order the batch's conversions name (compact, see
-- above, or "{status}{value}:{minute}:{ref}:{LTV ref}"); {status, minute, value, channel,
-- campaign, changed in this batch, ltv} here.
local order_state, order_period, order_generation, order_where = look_up(
  'ord:', order_ttl, orders, true)
do
  local wanted, compact = {}, {}
  for order_id, text in pairs(order_state) do
    local origin = states.origin(order_period, order_where[order_id], states.ORDER_SPAN)
    local order, ref, ltv = states.order(text, origin)
    if order then
      compact[order_id] = ltv == nil
      order_state[order_id] = order
      wanted[order_id] = {string.format('%d', ref)}
      if ltv ~= nil and ltv ~= '' then wanted[order_id][2] = ltv end
    else
      local status, value, minute, text_ref, ltv = string.match(
        text, '^(%a)(%d+):(%-?%d+):(%d+):(%d*)$')
      order_state[order_id] = {status, tonumber(minute), tonumber(value)}
      wanted[order_id] = {text_ref}
      if ltv ~= '' then wanted[order_id][2] = ltv end
    end
  end
  for order_id, texts in pairs(texts_of('ord:', order_where, wanted)) do
    local order = order_state[order_id]
    local ltv, channel, campaign = nil, nil, nil
    if compact[order_id] then
      ltv, channel, campaign = string.match(texts[1] or '', '^([^\t]*)\t([^\t]*)\t(.*)$')
    elseif texts[2] ~= false then
      channel, campaign = string.match(texts[1] or '', '^([^\t]*)\t(.*)$')
      ltv = texts[2] or ''
    end
    if channel == nil then
      order_state[order_id] = nil -- its dictionary is gone: as if forgotten
    else
      order[4], order[5], order[7] = channel, campaign, ltv
    end
  end
end
-- Customers (`stream.customers`): {acquisition channel, first minute, cohort month, changed}
-- of each customer the batch's conversions name, stored compact ("{ref}{minute - origin, six
-- digits}", see above) or as "{channel ref}:{minute}:{cohort}".
local customer_state, customer_period, customer_generation, customer_where = look_up(
  'cust:', customer_ttl, customers, true)
do
  local wanted, compact = {}, {}
  for customer_id, text in pairs(customer_state) do
    if string.find(text, '^%d+$') then
      local origin = states.origin(
        customer_period, customer_where[customer_id], states.CUSTOMER_SPAN)
      compact[customer_id] = true
      customer_state[customer_id] = {false, origin + tonumber(string.sub(text, -6))}
      wanted[customer_id] = {string.sub(text, 1, -7)}
    else
      local ref, minute, cohort = string.match(text, '^(%d+):(%-?%d+):(%d*)$')
      customer_state[customer_id] = {false, tonumber(minute), cohort}
      wanted[customer_id] = {ref}
    end
  end
  for customer_id, texts in pairs(texts_of('cust:', customer_where, wanted)) do
    local customer = customer_state[customer_id]
    if texts[1] and compact[customer_id] then
      customer[1], customer[3] = string.match(texts[1], '^([^\t]*)\t(%d*)$')
    else
      customer[1] = texts[1]
    end
    if not customer[1] then
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
