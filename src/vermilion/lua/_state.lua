-- _state.lua: helpers for the scripts that read or change messages' states.
--
-- A script that needs them has the line `--#include _state` where they are to
-- be defined, and _scripts.py puts this text there. They are kept apart from
-- _common.lua because defining a helper costs server time on every call:
-- enqueue's one-new-message path returns before these are defined. Like
-- _common.lua, it performs no command when loaded.

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

-- The mid's state as of `now`, and its record (if any):
--   'locked'  lease running        'lapsed'  lease ended, not yet reclaimed
--   'delayed' waiting for its time 'due'     delay ended, not yet moved to ready
--   'ready'   waiting in `ready` (record nil: a fresh entry holds it all)
--   'done'    inside its de-dup window          'expired' window ended, not yet collected
--   'failed'  failed and kept in the history   nil       unknown
local function state_of(mid, now)
  local record = parse_record(redis.call('HGET', K_RECORDS, mid))
  if record then
    if record.state == LEASED then
      local lease_end = tonumber(redis.call('ZSCORE', K_LOCKS, mid))
      if lease_end and lease_end <= now then return 'lapsed', record end
      return 'locked', record
    end
    if record.state == DELAYED then
      local due = tonumber(redis.call('ZSCORE', K_DELAYED, mid))
      if due and due <= now then return 'due', record end
      return 'delayed', record
    end
    return 'ready', record
  end
  if redis.call('SISMEMBER', K_MIDS, mid) == 0 then return nil end
  local window_end = redis.call('ZSCORE', K_DONE, mid)
  if window_end then
    if tonumber(window_end) > now then return 'done' end
    return 'expired'
  end
  if redis.call('ZSCORE', K_FAILED, mid) then return 'failed' end
  return 'ready'
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
-- beyond a few thousand values. A refused command is raised again with its
-- name added: Redis 7.0 names no command it denies, only the script line that
-- called it, and this line names none; _error_mapping.py reads the name to say
-- which ACL rule is missing. The reply keeps Redis's error code, and its mark
-- that errorstats already counted the refusal. redis.pcall costs what
-- redis.call does, and the check is one per slice.
local function call_in_slices(command, key, items)
  local slice = 1000
  for first = 1, #items, slice do
    local reply = redis.pcall(command, key, unpack(items, first, math.min(first + slice - 1, #items)))
    if type(reply) == 'table' and reply.err then
      reply.err = reply.err .. ' (calling ' .. command .. ')'
      error(reply)
    end
  end
end

-- Like call_in_slices, for a read: the replies of the slices, joined in order
-- (a single slice's reply as it is: an ack's batch is copied no further).
local function fetch_in_slices(command, key, items)
  local slice = 1000
  local out = nil
  for first = 1, #items, slice do
    local part = redis.pcall(command, key, unpack(items, first, math.min(first + slice - 1, #items)))
    if part.err then
      part.err = part.err .. ' (calling ' .. command .. ')'
      error(part)
    end
    if out == nil then
      out = part
    else
      local n = #out
      for i = 1, #part do out[n + i] = part[i] end
    end
  end
  return out or {}
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

local function pending_requeue_of(mid)
  local bytes = redis.call('HGET', K_REQUEUE, mid)
  if not bytes then return nil end
  if #bytes < 5 then return { lock = 0, payload = bytes } end
  local lock = struct.unpack('>I5', bytes)
  return { lock = lock, payload = string.sub(bytes, 6) }
end

-- Start a new life for a mid from its pending requeue: a fresh entry at the
-- tail of `ready`, attempt 1. Pre: the mid has no record and is in no live set
-- nor in `done`, and `requeue[mid]` exists; it stays in `mids`.
local function apply_requeue(mid, now)
  local requeue = pending_requeue_of(mid)
  redis.call('HDEL', K_REQUEUE, mid)
  local lock = nil
  if requeue.lock > 0 then lock = requeue.lock end
  redis.call('RPUSH', K_READY, fresh_entry(mid, now, lock, requeue.payload))
end

-- The index and bytes of the fresh entry of `mid` in `ready`, found by reading
-- the list in slices (O(n), as LREM is): only a reschedule of a message that
-- was never handed out needs it.
local function find_fresh_entry(mid)
  local prefix_len = #mid_prefix(mid) + 1
  local slice = 1000
  local first = 0
  while true do
    local part = redis.call('LRANGE', K_READY, first, first + slice - 1)
    for _, entry in ipairs(part) do
      if string.byte(entry, 1) ~= POINTER and #entry >= prefix_len then
        local e = parse_entry(entry)
        if e and e.mid == mid then return entry, e end
      end
    end
    if #part < slice then return nil end
    first = first + slice
  end
end

-- The payload, lease and enqueue time of a ready message whose entry is fresh,
-- with its overriding record (if any) applied.
local function merge_fresh(entry, record)
  if record then return record.payload, record.lock end
  return entry.payload, entry.lock
end
