-- The channel an event counts under: its own while the channel set knows it or has room, else
-- "unlisted"; the fixed buckets are never in the set. One look-up per channel and batch.
local channel_set = p .. 'channels'
local kept_channels = {unattributed = 'unattributed', unlisted = 'unlisted'}
local channel_count = nil
local function admit(channel)
  local kept = kept_channels[channel]
  if kept == nil then
    if redis.call('SISMEMBER', channel_set, channel) == 1 then
      kept = channel
    else
      channel_count = channel_count or redis.call('SCARD', channel_set)
      if channel_count < max_channels then
        redis.call('SADD', channel_set, channel)
        channel_count = channel_count + 1
        kept = channel
      else
        kept = 'unlisted'
      end
    end
    kept_channels[channel] = kept
  end
  return kept
end

-- The campaign an event counts under in its month: its own while its channel's campaign set for
-- the month knows it or has room, else "other"; "" and "other" are never in a set.
local kept_campaigns, campaign_counts = {}, {}
local function admit_campaign(month, month_expiry, channel, campaign)
  if campaign == '' or campaign == 'other' then return campaign end
  local by_channel = kept_campaigns[month]
  if by_channel == nil then by_channel = {}; kept_campaigns[month] = by_channel end
  local known = by_channel[channel]
  if known == nil then known = {}; by_channel[channel] = known end
  local kept = known[campaign]
  if kept == nil then
    local set = p .. 'cs:' .. month .. ':' .. channel
    if redis.call('SISMEMBER', set, campaign) == 1 then
      kept = campaign
    else
      local count = campaign_counts[set] or redis.call('SCARD', set)
      if count < max_campaigns then
        redis.call('SADD', set, campaign)
        redis.call('EXPIREAT', set, string.format('%d', month_expiry))
        count = count + 1
        kept = campaign
      else
        kept = 'other'
      end
      campaign_counts[set] = count
    end
    known[campaign] = kept
  end
  return kept
end
