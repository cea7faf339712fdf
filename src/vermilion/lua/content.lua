#!lua flags=no-writes
-- content.lua: every message of a queue with its state (read-only, O(n)).
--
-- For debugging and small queues only: the script runs to completion while the
-- server waits, so do not call it on a queue with millions of messages.
-- KEYS: the queue keys listed in _common.lua.
-- ARGV: none.
-- Reply: [now_ms, then eight entries per message:
--   mid, status, attempts (of the current life, or of the one that failed),
--   enqueued_ms (or -1), backoff_end_ms (or -1),
--   has_content (1/0), content (payload bytes, or '' when has_content is 0),
--   error (the failure reason of a failed message, else '')]
-- Live messages show their payload; finished ones show their pending requeue
-- payload, if any; failed ones show their reason, and the payload and attempts
-- their failure record keeps.
-- Invariants: writes nothing (flags=no-writes).

--#include _layout
--#include _state
--#include _history

check_key_types()
local now = now_ms()
local reply = { now }

-- The fresh entries of `ready`, by mid: a new message's payload is only there.
local fresh = {}
for _, entry in ipairs(redis.call('LRANGE', K_READY, 0, -1)) do
  local e = parse_entry(entry)
  if e and e.kind ~= POINTER then fresh[e.mid] = e end
end

local function add(mid)
  local state, record = state_of(mid, now)
  local status = public_status(state, mid)
  if status == nil then return end
  local payload, attempts, enqueued = nil, 0, -1
  local entry = fresh[mid]
  local failure = nil
  if state == 'failed' then
    failure = parse_failure(redis.call('HGET', K_ERRORS, mid))
    payload, attempts = failure.payload, failure.attempts
  elseif record then
    payload, attempts, enqueued = record.payload, record.attempts, record.enqueued
    if has_flag(record.flags, OVERRIDES) and entry then enqueued = entry.enqueued end
  elseif entry then
    payload, enqueued = entry.payload, entry.enqueued
  else
    local requeue = pending_requeue_of(mid)
    if requeue then payload = requeue.payload end
  end
  local backoff_end = -1
  if state == 'delayed' then
    backoff_end = stored_int(redis.call('ZSCORE', K_DELAYED, mid), 0, MAX_EXACT) or -1
  elseif state == 'done' then
    backoff_end = stored_int(redis.call('ZSCORE', K_DONE, mid), 0, MAX_EXACT) or -1
  end
  reply[#reply + 1] = mid
  reply[#reply + 1] = status
  reply[#reply + 1] = attempts
  reply[#reply + 1] = enqueued
  reply[#reply + 1] = backoff_end
  if payload then
    reply[#reply + 1] = 1
    reply[#reply + 1] = payload
  else
    reply[#reply + 1] = 0
    reply[#reply + 1] = ''
  end
  if failure then
    reply[#reply + 1] = failure.reason
  else
    reply[#reply + 1] = ''
  end
end

for _, mid in ipairs(redis.call('SMEMBERS', K_MIDS)) do add(mid) end
return reply
