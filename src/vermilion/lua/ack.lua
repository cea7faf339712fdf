-- ack.lua: record the outcomes of a batch of handled messages, each fenced by
-- its lease token.
--
-- KEYS: the sixteen queue keys listed in _common.lua.
-- ARGV:
--   1 max_failed   integer >= 0: how many failures the `failed` history keeps
--   then groups of five, one per outcome:
--   mid          message id
--   token        integer lease token the message was handed out with
--   outcome      's' success | 'r' retry | 'f' failure
--   backoff_ms   integer ms >= 0: success -> de-dup window; retry -> wait before
--                the next attempt; ignored for failure
--   reason       failure reason (string, may be ''); ignored otherwise
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
-- Invariants: every argument is checked before the first write; each applied
-- outcome removes (lease, then per-life fields) before it adds, so that under
-- `noeviction` with memory full the script's first write frees memory and the
-- ack is not refused. A stale outcome writes nothing.

local GROUP = 5
local max_failed = to_int(ARGV[1], 'max_failed', 0)
if (#ARGV - 1) % GROUP ~= 0 then
  return fail('ack expects groups of ' .. GROUP .. ' arguments after max_failed')
end

local outcomes = {}
for i = 2, #ARGV, GROUP do
  to_int(ARGV[i + 1], 'token', 1)
  local kind = ARGV[i + 2]
  if kind ~= 's' and kind ~= 'r' and kind ~= 'f' then
    return fail('bad outcome: ' .. tostring(kind))
  end
  outcomes[#outcomes + 1] = {
    mid = ARGV[i],
    token = ARGV[i + 1],
    kind = kind,
    backoff = to_int(ARGV[i + 3], 'backoff_ms', 0),
    reason = ARGV[i + 4],
  }
end

local now = now_ms()
local woken = 0

local function trim_failed()
  local excess = redis.call('ZCARD', K_FAILED) - max_failed
  if excess > 0 then
    local oldest = redis.call('ZRANGE', K_FAILED, 0, excess - 1)
    call_in_slices('ZREM', K_FAILED, oldest)
    call_in_slices('HDEL', K_ERRORS, oldest)
  end
end

local function finish(o)
  forget_life(o.mid)
  if has_requeue(o.mid) then
    -- The mid lives on with its new content; a failure record would claim
    -- that the new life failed too.
    apply_requeue(o.mid, now)
    woken = woken + 1
  elseif o.kind == 'f' then
    redis.call('ZADD', K_FAILED, now, o.mid)
    redis.call('HSET', K_ERRORS, o.mid, o.reason)
    trim_failed()
  end
end

local function apply(o)
  if redis.call('HGET', K_LEASES, o.mid) ~= o.token then return 0 end
  redis.call('ZREM', K_LOCKS, o.mid)
  redis.call('HDEL', K_LEASES, o.mid)
  if o.kind == 'r' then
    local due = now + o.backoff
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
    forget_life(o.mid)
    redis.call('ZADD', K_DONE, now + o.backoff, o.mid)
  else
    finish(o)
  end
  return 1
end

local replies = {}
for i, o in ipairs(outcomes) do
  replies[i] = apply(o)
end
wake_workers(woken)
return replies
