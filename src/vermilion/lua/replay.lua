-- replay.lua: put failed messages back in `ready`, each as a new life.
--
-- KEYS: the queue keys listed in _common.lua.
-- ARGV, one of:
--   'mids', then mids (non-empty strings): replay these
--   'all', limit (integer 1-1000), up_to (integer ms, or '' for now), skip
--     (integer >= 0): replay the oldest `limit` entries that failed at or
--     before up_to, after skipping the `skip` oldest of them (entries that
--     cannot be replayed, left in place by earlier calls)
-- Reply:
--   'mids': one string per mid, in order: 'ok' (replayed), 'live' (the mid is
--     not in the history but the queue knows it: it lives again, or waits out
--     a de-dup window), 'unknown' (the queue does not know it), 'no-content'
--     (its failure, migrated from protocol version 1, kept no payload; it
--     stays in the history)
--   'all': [replayed, not replayable (left in place), up_to]
-- A replayed mid leaves the history (its bytes with it) and gets a fresh entry
-- at the tail of `ready`: attempt 1 when next handed out, its payload and own
-- lease as they were when it failed, enqueued now. Each pushes a wake-up token
-- (at most 64 wait), as an enqueue does.
-- Invariants: every argument is checked before the first write; the mid stays
-- in `mids` (a failed mid is in it already); a mid in the history is not live,
-- so a replay never makes a second copy of a message.

--#include _layout
--#include _state
--#include _history

check_key_types()
local mode, limit, up_to = parse_selection(1000, 1,
  "replay expects 'mids' then mids, or 'all', limit, up_to, skip")
local skip = 0
if mode == 'all' then skip = to_int(ARGV[4], 'skip', 0) end
local now = now_ms()

local woken = 0

-- Replay one mid of the history from its record; false if it kept no payload.
local function replay_one(mid, record)
  local f = parse_failure(record)
  if f.payload == nil then return false end
  remove_from_history({ mid }, { #(record or '') })
  local lock = nil
  if f.lock > 0 then lock = f.lock end
  redis.call('RPUSH', K_READY, fresh_entry(mid, now, lock, f.payload))
  woken = woken + 1
  return true
end

local reply
if mode == 'mids' then
  reply = {}
  for i = 2, #ARGV do
    local mid = ARGV[i]
    local answer
    if redis.call('ZSCORE', K_FAILED, mid) then
      answer = replay_one(mid, redis.call('HGET', K_ERRORS, mid) or nil) and 'ok' or 'no-content'
    elseif redis.call('SISMEMBER', K_MIDS, mid) == 1 then
      answer = 'live'
    else
      answer = 'unknown'
    end
    reply[#reply + 1] = answer
  end
else
  local mids = redis.call('ZRANGEBYSCORE', K_FAILED, '-inf', int_str(up_to), 'LIMIT', skip, limit)
  local replayed, kept = 0, 0
  if #mids > 0 then
    local records = fetch_in_slices('HMGET', K_ERRORS, mids)
    for i, mid in ipairs(mids) do
      if replay_one(mid, records[i] or nil) then replayed = replayed + 1 else kept = kept + 1 end
    end
  end
  reply = { replayed, kept, up_to }
end
wake_workers(woken)
return reply
