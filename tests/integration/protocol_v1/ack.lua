-- ack.lua: record the outcomes of a batch of handled messages, each fenced by
-- its lease token.
--
-- KEYS: the seventeen queue keys listed in _common.lua.
-- ARGV:
--   1 max_failed   integer >= 0: how many failures the `failed` history keeps
--   2 count        integer >= 0: how many outcomes follow
--   then groups of three, one per outcome:
--   mid          message id
--   token        integer lease token the message was handed out with
--   outcome      's' success, 'r' retry, 'f' failure; 's' and 'r' may be followed
--                by a backoff in integer ms ('s60000': a 60 s de-dup window;
--                'r500': retry after 0.5 s)
--   then one reason (string, may be empty) per failure, in order
-- (Three arguments per outcome, not five: a batch of acks is mostly successes.)
-- Reply: one integer per outcome: 1 applied, 0 stale (the lease is no longer
-- current: it lapsed and was reclaimed, or the message was cleared).
--
-- Effects of an applied outcome:
--   success, no window  -> the message is gone, or starts its pending requeue
--   success, window s   -> done for s ms (enqueue of the mid answers 'backoff')
--   retry, no backoff   -> ready again at the tail, wake-up token pushed
--   retry, backoff s    -> delayed for s ms, wake-up token pushed
--   failure             -> starts its pending requeue if there is one; else gone
--                          and recorded in `failed`/`errors` (oldest trimmed
--                          beyond max_failed)
-- The batch is applied with a few commands per key, not per outcome: one HMGET
-- checks every fence, then the removals of all applied outcomes, then the
-- additions.
-- Invariants: every argument is checked before the first write; all removals
-- (leases, then per-life fields) come before any addition, so that under
-- `noeviction` with memory full the script's first write frees memory and the
-- ack is not refused. A stale outcome writes nothing.

--#include _state

check_key_types()
local GROUP = 3
local max_failed = to_int(ARGV[1], 'max_failed', 0)
local count = to_int(ARGV[2], 'count', 0)
local first_reason = 3 + GROUP * count
if #ARGV < first_reason - 1 then
  return fail('ack expects ' .. count .. ' groups of ' .. GROUP .. ' arguments')
end

local outcomes = {}
local next_reason = first_reason
for i = 3, first_reason - 1, GROUP do
  to_int(ARGV[i + 1], 'token', 1)
  local code = ARGV[i + 2]
  local kind = string.sub(code, 1, 1)
  if kind ~= 's' and kind ~= 'r' and kind ~= 'f' then
    return fail('bad outcome: ' .. tostring(code))
  end
  local backoff, reason = 0, ''
  if #code > 1 then backoff = to_int(string.sub(code, 2), 'backoff_ms', 0) end
  if kind == 'f' then
    reason = ARGV[next_reason]
    if reason == nil then return fail('missing failure reason') end
    next_reason = next_reason + 1
  end
  outcomes[#outcomes + 1] = {
    mid = ARGV[i],
    token = ARGV[i + 1],
    kind = kind,
    backoff = backoff,
    reason = reason,
  }
end
if next_reason ~= #ARGV + 1 then return fail('extra arguments after the failure reasons') end

local function trim_failed()
  local excess = redis.call('ZCARD', K_FAILED) - max_failed
  if excess > 0 then
    local oldest = redis.call('ZRANGE', K_FAILED, 0, excess - 1)
    call_in_slices('ZREM', K_FAILED, oldest)
    call_in_slices('HDEL', K_ERRORS, oldest)
  end
end

local now = now_ms()
local woken = 0

-- Which outcomes hold the current lease: one HMGET for the whole batch. The
-- same lease named twice in a batch is applied once.
local mids = {}
for i, o in ipairs(outcomes) do mids[i] = o.mid end
local holders = fetch_in_slices('HMGET', K_LEASES, mids)
local replies, current, claimed = {}, {}, {}
for i, o in ipairs(outcomes) do
  local key = o.mid .. '\0' .. o.token
  if holders[i] == o.token and not claimed[key] then
    claimed[key] = true
    current[#current + 1] = o
    replies[i] = 1
  else
    replies[i] = 0
  end
end

-- Removals first, for the whole batch: the leases, then the per-life fields of
-- every message that leaves (finished, or done with a de-dup window).
local released, leaving = {}, {}
for _, o in ipairs(current) do
  released[#released + 1] = o.mid
  if o.kind ~= 'r' then leaving[#leaving + 1] = o.mid end
end
call_in_slices('ZREM', K_LOCKS, released)
call_in_slices('HDEL', K_LEASES, released)
call_in_slices('SREM', K_SUSPECTS, released)
for _, key in ipairs({ K_MESSAGES, K_ATTEMPTS, K_ENQUEUED, K_DUE, K_LOCK_MS }) do
  call_in_slices('HDEL', key, leaving)
end

-- Then the additions.
local any_requeue = redis.call('HLEN', K_REQUEUE) > 0
local after = offset_strings(now)
local windows, failures, reasons = {}, {}, {}
for _, o in ipairs(current) do
  if o.kind == 'r' then
    local due = after(o.backoff)
    redis.call('HSET', K_DUE, o.mid, due)
    if o.backoff > 0 then
      redis.call('ZADD', K_DELAYED, due, o.mid)
    else
      redis.call('RPUSH', K_READY, o.mid)
    end
    -- Even a delayed retry wakes idle workers: they learn its due time from
    -- their next dequeue instead of sleeping past it.
    woken = woken + 1
  elseif o.kind == 's' and o.backoff > 0 then
    windows[#windows + 1] = after(o.backoff)
    windows[#windows + 1] = o.mid
  elseif any_requeue and has_requeue(o.mid) then
    -- The mid lives on with its new content; a failure record would claim
    -- that the new life failed too.
    apply_requeue(o.mid, now)
    woken = woken + 1
  elseif o.kind == 'f' then
    failures[#failures + 1] = after(0)
    failures[#failures + 1] = o.mid
    reasons[#reasons + 1] = o.mid
    reasons[#reasons + 1] = o.reason
  end
end
call_in_slices('ZADD', K_DONE, windows)
if #failures > 0 then
  call_in_slices('ZADD', K_FAILED, failures)
  call_in_slices('HSET', K_ERRORS, reasons)
  trim_failed()
end
wake_workers(woken)
return replies
