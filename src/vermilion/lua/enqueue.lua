-- enqueue.lua: add, update or requeue a batch of messages, or refuse each one,
-- following Carmine's enqueue branch table (carmine-mq.md section 5.3).
--
-- KEYS: the sixteen queue keys listed in _common.lua.
-- ARGV: groups of six, one per message, in order:
--   mid          message id (non-empty string)
--   payload      serialized content (opaque bytes)
--   delay_ms     integer ms >= 0 before the message may be handled (0: ready now)
--   lock_ms      integer ms > 0 for a per-message lease, or '' for the worker default
--   flags        integer bit set: 1 can_update, 2 can_requeue, 4 reset_delay
--   (reserved)   '' (keeps groups aligned for future options)
-- Reply: one entry per message, in order: 'added' | 'updated' | 'already-queued'
--   | 'locked' | 'backoff'.
--
-- Branches, by the mid's state as of now (see state_of):
--   unknown, failed, expired without requeue   -> fresh life: 'added'
--   queued (ready, due, lapsed, delayed)        -> can_update: new content (and
--       reset_delay: new delay) 'updated'; reset_delay alone: new delay 'updated';
--       else 'already-queued'
--   expired with a pending requeue              -> like done with a pending requeue:
--       can_update replaces the requeue ('updated'), else 'already-queued'
--       (reset_delay does not apply to requeues)
--   locked                                      -> can_requeue: pending requeue; else 'locked'
--   done (inside its window)                    -> can_requeue: pending requeue; else 'backoff'
--   A pending requeue exists already: can_update replaces it ('updated'), else
--   'already-queued'.
-- Invariants: every argument is checked before the first write; a fresh life
-- clears every trace of a former one (attempts, failure record, done entry);
-- every message made ready or delayed, or given a pending requeue, pushes one
-- wake-up token (at most 64 wait), so a batch wakes as many idle workers.

local CAN_UPDATE, CAN_REQUEUE, RESET_DELAY = 1, 2, 4
local GROUP = 6

if #ARGV % GROUP ~= 0 then
  return fail('enqueue expects groups of ' .. GROUP .. ' arguments')
end

local batch = {}
for i = 1, #ARGV, GROUP do
  local mid = ARGV[i]
  if mid == '' then return fail('empty mid') end
  local lock = nil
  if ARGV[i + 3] ~= '' then lock = to_int(ARGV[i + 3], 'lock_ms', 1) end
  local flags = to_int(ARGV[i + 4], 'flags', 0)
  batch[#batch + 1] = {
    mid = mid,
    payload = ARGV[i + 1],
    delay = to_int(ARGV[i + 2], 'delay_ms', 0),
    lock = lock,
    can_update = flags % 2 == 1,
    can_requeue = math.floor(flags / CAN_REQUEUE) % 2 == 1,
    reset_delay = math.floor(flags / RESET_DELAY) % 2 == 1,
  }
end

local now = now_ms()
local woken = 0

local function set_lock(hash, mid, lock)
  if lock then
    redis.call('HSET', hash, mid, lock)
  else
    redis.call('HDEL', hash, mid)
  end
end

-- Move a queued mid to its new due time. `state` says where it is now.
local function reschedule(m, state)
  local due = now + m.delay
  if m.delay == 0 and (state == 'ready' or state == 'due' or state == 'lapsed') then
    return -- ready already (or about to be reclaimed as ready)
  end
  if state == 'ready' then
    redis.call('LREM', K_READY, 1, m.mid)
  elseif state == 'lapsed' then
    redis.call('ZREM', K_LOCKS, m.mid)
    redis.call('HDEL', K_LEASES, m.mid)
  end
  redis.call('HSET', K_DUE, m.mid, due)
  if m.delay > 0 then
    redis.call('ZADD', K_DELAYED, due, m.mid)
  else
    redis.call('ZREM', K_DELAYED, m.mid)
    redis.call('RPUSH', K_READY, m.mid)
  end
  woken = woken + 1
end

local function add_fresh(m, state)
  if state ~= nil then
    redis.call('ZREM', K_DONE, m.mid)
    redis.call('ZREM', K_FAILED, m.mid)
    redis.call('HDEL', K_ERRORS, m.mid)
  end
  redis.call('HDEL', K_ATTEMPTS, m.mid)
  redis.call('HSET', K_MESSAGES, m.mid, m.payload)
  redis.call('HSET', K_ENQUEUED, m.mid, now)
  redis.call('HSET', K_DUE, m.mid, now + m.delay)
  if m.lock then redis.call('HSET', K_LOCK_MS, m.mid, m.lock) end
  if m.delay > 0 then
    redis.call('ZADD', K_DELAYED, now + m.delay, m.mid)
  else
    redis.call('RPUSH', K_READY, m.mid)
  end
  woken = woken + 1
  return 'added'
end

local function pending_requeue(m)
  local exists = has_requeue(m.mid)
  if exists and not m.can_update then return 'already-queued' end
  redis.call('HSET', K_REQUEUE, m.mid, m.payload)
  set_lock(K_REQUEUE_LOCK_MS, m.mid, m.lock)
  woken = woken + 1 -- idle workers must now also wait for the end of a de-dup window
  if exists then return 'updated' end
  return 'added'
end

local function update_queued(m, state)
  if m.can_update then
    redis.call('HSET', K_MESSAGES, m.mid, m.payload)
    set_lock(K_LOCK_MS, m.mid, m.lock)
    if m.reset_delay then reschedule(m, state) end
    return 'updated'
  end
  if m.reset_delay then
    reschedule(m, state)
    return 'updated'
  end
  return 'already-queued'
end

local function enqueue_one(m)
  local state = state_of(m.mid, now)
  if state == nil or state == 'failed' then return add_fresh(m, state) end
  if state == 'expired' then
    if has_requeue(m.mid) then
      if not m.can_update then return 'already-queued' end
      return pending_requeue(m)
    end
    return add_fresh(m, state)
  end
  if state == 'locked' then
    if m.can_requeue then return pending_requeue(m) end
    return 'locked'
  end
  if state == 'done' then
    if m.can_requeue then return pending_requeue(m) end
    return 'backoff'
  end
  return update_queued(m, state)
end

local replies = {}
for i, m in ipairs(batch) do
  replies[i] = enqueue_one(m)
end
wake_workers(woken)
return replies
