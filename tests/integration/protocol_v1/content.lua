#!lua flags=no-writes
-- content.lua: every message of a queue with its state (read-only, O(n)).
--
-- For debugging and small queues only: the script runs to completion while the
-- server waits, so do not call it on a queue with millions of messages.
-- KEYS: the seventeen queue keys listed in _common.lua.
-- ARGV: none.
-- Reply: [now_ms, then eight entries per message:
--   mid, status, attempts, enqueued_ms (or -1), backoff_end_ms (or -1),
--   has_content (1/0), content (payload bytes, or '' when has_content is 0),
--   error (the failure reason of a failed message, else '')]
-- Live messages show their payload; finished ones show their pending requeue
-- payload, if any; failed ones show their reason.
-- A stored number that is not a whole number in range (written by hand) is
-- answered as absent (0 attempts, -1 times) rather than failing the listing.
-- Invariants: writes nothing (flags=no-writes).

--#include _state

check_key_types()
local now = now_ms()
local reply = { now }

local function add(mid)
  local state = state_of(mid, now)
  local status = public_status(state, mid)
  if status == nil then return end
  local payload = redis.call('HGET', K_MESSAGES, mid) or redis.call('HGET', K_REQUEUE, mid)
  local backoff_end = -1
  if state == 'delayed' then
    backoff_end = stored_int(redis.call('ZSCORE', K_DELAYED, mid), 0, MAX_EXACT) or -1
  elseif state == 'done' then
    backoff_end = stored_int(redis.call('ZSCORE', K_DONE, mid), 0, MAX_EXACT) or -1
  end
  reply[#reply + 1] = mid
  reply[#reply + 1] = status
  reply[#reply + 1] = stored_int(redis.call('HGET', K_ATTEMPTS, mid), 0, MAX_EXACT) or 0
  reply[#reply + 1] = stored_int(redis.call('HGET', K_ENQUEUED, mid), 0, MAX_EXACT) or -1
  reply[#reply + 1] = backoff_end
  if payload then
    reply[#reply + 1] = 1
    reply[#reply + 1] = payload
  else
    reply[#reply + 1] = 0
    reply[#reply + 1] = ''
  end
  if state == 'failed' then
    reply[#reply + 1] = redis.call('HGET', K_ERRORS, mid) or ''
  else
    reply[#reply + 1] = ''
  end
end

for _, mid in ipairs(redis.call('HKEYS', K_MESSAGES)) do add(mid) end
for _, mid in ipairs(redis.call('ZRANGE', K_DONE, 0, -1)) do add(mid) end
for _, mid in ipairs(redis.call('ZRANGE', K_FAILED, 0, -1)) do add(mid) end
return reply
