-- schedule.lua: enqueue the due time slots of one recurring message (a schedule)
-- at most once each, however many schedulers call it at once.
--
-- KEYS: 1-11 the queue keys listed in _common.lua; then
--   12 schedules  hash    schedule name -> its watermark in ms: every slot at or
--                         before it was enqueued or skipped for good
--   13 clock      string  TESTS ONLY, optional: the test clock (the 12th key of
--                         the other scripts; here it follows `schedules`)
-- ARGV: 1 name (non-empty string: the schedule's field in `schedules`),
--   2 payload (bytes: the content of every slot's message), then one pair per
--   slot, in strictly ascending order: slot_ms (integer ms >= 0: the slot's
--   time), mid (non-empty string, under 255 bytes: the slot's message id).
-- Reply: now_ms, the watermark after the call, then one integer per slot:
--   1 enqueued; 0 its mid was known to the queue already (not enqueued again);
--   -1 not due (slot_ms > now) or already covered (slot_ms <= the watermark);
--   -2 refused: the queue is bounded (meta's max_size) and full, as an enqueue
--   would be refused; the slot is covered all the same (skipped for good).
--
-- A schedule without a watermark (its first call ever) gets now as its watermark
-- before its slots are read, so a new schedule starts with its first slot after
-- that moment. Each slot passed that is due (watermark < slot_ms <= now) is
-- enqueued as a new message ready now, with the worker's lease, unless the queue
-- knows its mid; either way the watermark moves to it. A scheduler passes only
-- the slots its catch-up rule wants: passing only the latest of several missed
-- slots skips the others for good.
-- Invariants: every argument and key type is checked before the first write; the
-- watermark never goes backwards, and is only ever set to now (the first call) or
-- to a due slot (a server clock set back leaves it ahead until the clock passes
-- it); a slot is enqueued at most once (after it, the watermark covers it); writes only `mids`, `ready`,
-- `notify` (one token when it made `ready` non-empty) and its own field of
-- `schedules`. The time is the server's (TIME), or the test clock.

K_CLOCK = KEYS[13]
local K_SCHEDULES = KEYS[12]
local FIRST_SLOT = 3

--#include _layout

if K_SCHEDULES == nil then return fail('schedule expects the queue keys, then the schedules key') end
if #ARGV < FIRST_SLOT - 1 or (#ARGV - FIRST_SLOT + 1) % 2 ~= 0 then
  return fail('schedule expects name, payload, then (slot_ms, mid) pairs')
end
local name, payload = ARGV[1], ARGV[2]
if name == '' then return fail('schedule: empty name') end
local previous = -1
for i = FIRST_SLOT, #ARGV, 2 do
  local slot = to_int(ARGV[i], 'slot_ms', 0)
  if slot <= previous then return fail('schedule: slots must be in strictly ascending order') end
  previous = slot
  local mid = ARGV[i + 1]
  if mid == '' or #mid >= 255 then return fail('schedule: a mid must have 1 to 254 bytes') end
end

-- HGET first: on a `schedules` key of the wrong type it fails before any write.
local stored = redis.call('HGET', K_SCHEDULES, name)
check_key_types()
local now = now_ms()
local watermark = now
if stored then
  watermark = stored_int(stored, 0, MAX_EXACT)
  if watermark == nil then
    return fail('schedule ' .. name .. ': the watermark ' .. stored .. ' is not a whole number of ms')
  end
end

-- A bounded queue refuses a new message once max_size are live, as enqueue does.
local room = setting('max_size')
if room then room = room - live_count() end

local reply = { now, 0 }
local added = 0
for i = FIRST_SLOT, #ARGV, 2 do
  local slot, mid = tonumber(ARGV[i]), ARGV[i + 1]
  if slot <= watermark or slot > now then
    reply[#reply + 1] = -1
  elseif room and room <= 0 and redis.call('SISMEMBER', K_MIDS, mid) == 0 then
    -- Skipped rather than left for a later pass: a scheduler would send it again
    -- at once, and again, for as long as the queue stays full.
    watermark = slot
    reply[#reply + 1] = -2
  elseif redis.call('SADD', K_MIDS, mid) == 1 then
    local length = redis.call('RPUSH', K_READY, fresh_entry(mid, now, nil, payload))
    if length == 1 then added = added + 1 end
    if room then room = room - 1 end
    watermark = slot
    reply[#reply + 1] = 1
  else
    watermark = slot
    reply[#reply + 1] = 0
  end
end

if stored == nil or watermark ~= tonumber(stored) then
  redis.call('HSET', K_SCHEDULES, name, int_str(watermark))
end
-- As enqueue does: only a message that made `ready` non-empty wakes a worker.
if added > 0 and redis.call('LPUSH', K_NOTIFY, '1') > MAX_NOTIFY_TOKENS then
  redis.call('LTRIM', K_NOTIFY, 0, MAX_NOTIFY_TOKENS - 1)
end
reply[2] = watermark
return reply
