#!lua flags=no-writes
-- counts.lua: O(log n) counts of a queue's messages and its lag (read-only).
--
-- KEYS: the queue keys listed in _common.lua.
-- ARGV: none.
-- Reply: [nqueued, nlocked, nbackoff, ndone, nfailed, lag_ms, nfailed_dropped]
--   nqueued   ready now: in `ready`, plus ended delays and lapsed leases that a
--             dequeue has not moved yet
--   nlocked   leases still running
--   nbackoff  delays and retry backoffs still running
--   ndone     inside a de-dup window, or ended and not yet collected
--   nfailed   failures kept in the history
--   lag_ms    how long the longest-waiting ready message has been ready (0: none)
--   nfailed_dropped  failure-history entries its bounds dropped (meta's failed_dropped)
-- Invariants: writes nothing (flags=no-writes); nqueued + nlocked + nbackoff
-- equals the number of live messages (one entry in `ready` per ready message).

--#include _layout

check_key_types()
local now = now_ms()
local ready = redis.call('LLEN', K_READY)
local due = redis.call('ZCOUNT', K_DELAYED, '-inf', now)
local lapsed = redis.call('ZCOUNT', K_LOCKS, '-inf', now)
local nbackoff = redis.call('ZCARD', K_DELAYED) - due
local nlocked = redis.call('ZCARD', K_LOCKS) - lapsed

local function head_score(key)
  local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if head[2] then return stored_int(head[2], 0, MAX_EXACT) end
  return nil
end

-- When the message at the head of `ready` became ready: a fresh entry holds its
-- enqueue time, a pointer's record its due time.
local function head_ready_since()
  local head = redis.call('LINDEX', K_READY, 0)
  if not head then return nil end
  local e = parse_entry(head)
  if e == nil then return nil end
  if e.kind ~= POINTER then return e.enqueued end
  local r = parse_record(redis.call('HGET', K_RECORDS, e.mid))
  if r then return r.due end
  return nil
end

-- The oldest "ready since" among the three places a ready message can be.
local oldest = nil
local function consider(ms)
  if ms and ms <= now and (oldest == nil or ms < oldest) then oldest = ms end
end
consider(head_ready_since())
consider(head_score(K_DELAYED))
consider(head_score(K_LOCKS))
local lag = 0
if oldest then lag = now - oldest end

return {
  ready + due + lapsed,
  nlocked,
  nbackoff,
  redis.call('ZCARD', K_DONE),
  redis.call('ZCARD', K_FAILED),
  lag,
  stored_int(redis.call('HGET', K_META, 'failed_dropped'), 0, MAX_EXACT) or 0,
}
