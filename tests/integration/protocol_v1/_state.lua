-- _state.lua: helpers for the scripts that read or change messages' states.
--
-- A script that needs them has the line `--#include _state` where they are to
-- be defined, and _scripts.py puts this text there. They are kept apart from
-- _common.lua (which every script starts with) because defining a helper costs
-- server time on every call: enqueue's one-new-message path returns before
-- these are defined, and counts and clear never need them. Like _common.lua,
-- it performs no command when loaded.

-- int_str(base + offset) for offsets that repeat within a call (leases and
-- windows of the same length): each distinct value is formatted once.
local function offset_strings(base)
  local cache = {}
  return function(offset)
    local text = cache[offset]
    if text == nil then
      text = int_str(base + offset)
      cache[offset] = text
    end
    return text
  end
end

-- The mid's state as of `now`:
--   'locked'  lease running        'lapsed'  lease ended, not yet reclaimed
--   'delayed' waiting for its time 'due'     delay ended, not yet moved to ready
--   'ready'   in the ready list
--   'done'    inside its de-dup window          'expired' window ended, not yet collected
--   'failed'  failed and kept in the history   nil       unknown
local function state_of(mid, now)
  if redis.call('HEXISTS', K_MESSAGES, mid) == 1 then
    local lease_end = redis.call('ZSCORE', K_LOCKS, mid)
    if lease_end then
      if tonumber(lease_end) > now then return 'locked' end
      return 'lapsed'
    end
    local due = redis.call('ZSCORE', K_DELAYED, mid)
    if due then
      if tonumber(due) > now then return 'delayed' end
      return 'due'
    end
    return 'ready'
  end
  local window_end = redis.call('ZSCORE', K_DONE, mid)
  if window_end then
    if tonumber(window_end) > now then return 'done' end
    return 'expired'
  end
  if redis.call('ZSCORE', K_FAILED, mid) then return 'failed' end
  return nil
end

local function has_requeue(mid)
  return redis.call('HEXISTS', K_REQUEUE, mid) == 1
end

-- The public MessageStatus string for a state (nil for an unknown mid).
local function public_status(state, mid)
  if state == nil then return nil end
  if state == 'ready' or state == 'due' or state == 'lapsed' then return 'queued' end
  if state == 'delayed' then return 'queued-with-backoff' end
  if state == 'failed' then return 'failed' end
  local requeue = has_requeue(mid)
  if state == 'locked' then
    if requeue then return 'locked-with-requeue' end
    return 'locked'
  end
  if state == 'done' then
    if requeue then return 'done-with-requeue' end
    return 'done-with-backoff'
  end
  -- 'expired': the window ended; the next dequeue collects the mid, or starts
  -- its pending requeue. Until then it still counts as done.
  if requeue then return 'done-with-requeue' end
  return 'done-awaiting-gc'
end

-- Run `command key item...` over a list in slices: Lua's unpack() fails
-- beyond a few thousand values.
local function call_in_slices(command, key, items)
  local slice = 1000
  for first = 1, #items, slice do
    redis.call(command, key, unpack(items, first, math.min(first + slice - 1, #items)))
  end
end

-- Like call_in_slices, for a read: the replies of the slices, joined in order.
local function fetch_in_slices(command, key, items)
  local slice = 1000
  local out = {}
  for first = 1, #items, slice do
    local part = redis.call(command, key, unpack(items, first, math.min(first + slice - 1, #items)))
    for _, value in ipairs(part) do out[#out + 1] = value end
  end
  return out
end

-- One token per message that became ready or changed what is due, so that
-- as many idle workers wake as there is work for (at most 64 tokens wait).
local function wake_workers(count)
  if count <= 0 then return end
  local tokens = {}
  for i = 1, math.min(count, MAX_NOTIFY_TOKENS) do tokens[i] = '1' end
  if redis.call('LPUSH', K_NOTIFY, unpack(tokens)) > MAX_NOTIFY_TOKENS then
    redis.call('LTRIM', K_NOTIFY, 0, MAX_NOTIFY_TOKENS - 1)
  end
end

-- Start a new life for a mid from its pending requeue: ready now, attempt 1.
-- Pre: the mid is in no live set and `requeue[mid]` exists.
local function apply_requeue(mid, now)
  local payload = redis.call('HGET', K_REQUEUE, mid)
  local lock = redis.call('HGET', K_REQUEUE_LOCK_MS, mid)
  redis.call('HDEL', K_REQUEUE, mid)
  redis.call('HDEL', K_REQUEUE_LOCK_MS, mid)
  redis.call('HDEL', K_ATTEMPTS, mid)
  if lock then
    redis.call('HSET', K_LOCK_MS, mid, lock)
  else
    redis.call('HDEL', K_LOCK_MS, mid)
  end
  redis.call('HSET', K_MESSAGES, mid, payload)
  redis.call('HSET', K_ENQUEUED, mid, int_str(now))
  redis.call('HSET', K_DUE, mid, int_str(now))
  redis.call('RPUSH', K_READY, mid)
end
