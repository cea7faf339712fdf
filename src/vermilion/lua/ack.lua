-- ack.lua: record the outcomes of a batch of handled messages, each fenced by
-- its lease token.
--
-- KEYS: the queue keys listed in _common.lua.
-- ARGV:
--   1 max_failed        integer >= 0: how many entries the failure history keeps
--   2 max_failed_bytes  integer >= 0: how many bytes of failure records it keeps
--   3 count             integer >= 0: how many outcomes follow
--   then groups of three, one per outcome:
--   mid          message id
--   token        integer lease token the message was handed out with
--   outcome      's' success, 'r' retry, 'f' failure; 's' and 'r' may be followed
--                by a backoff in integer ms ('s60000': a 60 s de-dup window;
--                'r500': retry after 0.5 s)
--   then one reason (string, may be empty) per failure, in order
-- Reply: one integer per outcome: 1 applied, 0 stale (the lease is no longer
-- current: it lapsed and was reclaimed, or the message was cleared).
--
-- Effects of an applied outcome:
--   success, no window  -> the message is forgotten, or starts its pending requeue
--   success, window s   -> done for s ms (enqueue of the mid answers 'backoff')
--   retry, no backoff   -> ready again at the tail, wake-up token pushed
--   retry, backoff s    -> delayed for s ms, wake-up token pushed
--   failure             -> starts its pending requeue if there is one; else
--                          recorded in the failure history with its payload,
--                          reason, attempts and own lease (see _history.lua);
--                          the oldest entries beyond max_failed or
--                          max_failed_bytes are dropped (forgotten, and counted
--                          in meta's failed_dropped); a record larger than
--                          max_failed_bytes on its own is dropped at once
-- A retried message keeps its attempts and loses its suspect mark.
-- The batch is applied with a few commands per key, not per outcome: one HMGET
-- of the records checks every fence, then the removals of all applied
-- outcomes, then the additions.
-- Invariants: every argument is checked before the first write; all removals
-- come before any addition, so that under `noeviction` with memory full the
-- script's first write frees memory and the ack is not refused. A stale
-- outcome writes nothing.

--#include _layout
--#include _state
--#include _history

check_key_types()
local GROUP = 3
local FIRST_GROUP = 4
local max_failed = to_int(ARGV[1], 'max_failed', 0)
local max_failed_bytes = to_int(ARGV[2], 'max_failed_bytes', 0)
local count = to_int(ARGV[3], 'count', 0)
local first_reason = FIRST_GROUP + GROUP * count
if #ARGV < first_reason - 1 then
  return fail('ack expects ' .. count .. ' groups of ' .. GROUP .. ' arguments')
end

-- The outcomes in parallel arrays (no table per outcome: an ack of a batch is
-- the hot path, and Lua's garbage is its cost).
local o_mid, o_token, o_kind, o_backoff, o_reason = {}, {}, {}, {}, {}
local next_reason = first_reason
for i = FIRST_GROUP, first_reason - 1, GROUP do
  local n = #o_mid + 1
  o_mid[n], o_token[n] = ARGV[i], to_int(ARGV[i + 1], 'token', 1)
  local code = ARGV[i + 2]
  local kind = string.sub(code, 1, 1)
  if kind ~= 's' and kind ~= 'r' and kind ~= 'f' then
    return fail('bad outcome: ' .. tostring(code))
  end
  o_kind[n], o_backoff[n], o_reason[n] = kind, 0, ''
  if #code > 1 then o_backoff[n] = to_int(string.sub(code, 2), 'backoff_ms', 0) end
  if kind == 'f' then
    local reason = ARGV[next_reason]
    if reason == nil then return fail('missing failure reason') end
    o_reason[n] = reason
    next_reason = next_reason + 1
  end
end
if next_reason ~= #ARGV + 1 then return fail('extra arguments after the failure reasons') end

local now = now_ms()
local woken = 0

-- Which outcomes hold the current lease: one HMGET for the whole batch, and a
-- look at each record's state and token only. The same lease named twice in a
-- batch is applied once.
local records = {}
if #o_mid > 0 then records = fetch_in_slices('HMGET', K_RECORDS, o_mid) end
local replies, current, claimed = {}, {}, {}
for i = 1, #o_mid do
  local state, token = record_state_and_token(records[i] or nil)
  if state == LEASED and token == o_token[i] and not claimed[o_mid[i]] then
    claimed[o_mid[i]] = true
    current[#current + 1] = i
    replies[i] = 1
  else
    replies[i] = 0
  end
end

-- Which finished messages have a pending requeue (one EXISTS when none has).
local requeued = {}
if #current > 0 and redis.call('EXISTS', K_REQUEUE) == 1 then
  for _, i in ipairs(current) do
    requeued[i] = o_kind[i] ~= 'r' and has_requeue(o_mid[i])
  end
end

-- Removals first, for the whole batch: the leases, the records of messages
-- that leave, and the mids the queue forgets.
local released, leaving, forgotten = {}, {}, {}
-- A failure whose record alone is larger than the byte bound is dropped at
-- once: kept, it would push the whole history out before its own turn.
local too_large = {}
for _, i in ipairs(current) do
  local mid, kind = o_mid[i], o_kind[i]
  released[#released + 1] = mid
  if kind ~= 'r' then leaving[#leaving + 1] = mid end
  if kind == 'f' and not requeued[i] then
    local payload_bytes = #records[i] - RECORD_HEADER_BYTES
    too_large[i] = FAILURE_HEADER_BYTES + #o_reason[i] + payload_bytes > max_failed_bytes
  end
  if (kind == 's' and o_backoff[i] == 0 and not requeued[i]) or too_large[i] then
    forgotten[#forgotten + 1] = mid
  end
end
call_in_slices('ZREM', K_LOCKS, released)
call_in_slices('HDEL', K_RECORDS, leaving)
call_in_slices('SREM', K_MIDS, forgotten)

-- Then the additions.
local after = offset_strings(now)
local windows, failures, failure_records, retried, pointers, delayed = {}, {}, {}, {}, {}, {}
local added_bytes, dropped_now = 0, 0
for _, i in ipairs(current) do
  local mid, kind, backoff = o_mid[i], o_kind[i], o_backoff[i]
  if kind == 'r' then
    local r = parse_record(records[i])
    r.token, r.due = 0, now + backoff
    if has_flag(r.flags, SUSPECT) then r.flags = r.flags - SUSPECT end
    if backoff > 0 then
      r.state = DELAYED
      delayed[#delayed + 1] = after(backoff)
      delayed[#delayed + 1] = mid
    else
      r.state = READY
      pointers[#pointers + 1] = pointer_entry(mid)
    end
    retried[#retried + 1] = mid
    retried[#retried + 1] = pack_record(r)
    -- Even a delayed retry wakes idle workers: they learn its due time from
    -- their next dequeue instead of sleeping past it.
    woken = woken + 1
  elseif kind == 's' and backoff > 0 then
    windows[#windows + 1] = after(backoff)
    windows[#windows + 1] = mid
  elseif requeued[i] then
    -- The mid lives on with its new content; a failure record would claim
    -- that the new life failed too.
    apply_requeue(mid, now)
    woken = woken + 1
  elseif too_large[i] then
    dropped_now = dropped_now + 1
  elseif kind == 'f' then
    local r = parse_record(records[i])
    local failure = pack_failure(r.attempts, r.lock, o_reason[i], r.payload)
    failures[#failures + 1] = after(0)
    failures[#failures + 1] = mid
    failure_records[#failure_records + 1] = mid
    failure_records[#failure_records + 1] = failure
    added_bytes = added_bytes + #failure
  end
end
call_in_slices('HSET', K_RECORDS, retried)
call_in_slices('RPUSH', K_READY, pointers)
call_in_slices('ZADD', K_DELAYED, delayed)
call_in_slices('ZADD', K_DONE, windows)
if dropped_now > 0 then redis.call('HINCRBY', K_META, 'failed_dropped', int_str(dropped_now)) end
if #failures > 0 then
  call_in_slices('ZADD', K_FAILED, failures)
  call_in_slices('HSET', K_ERRORS, failure_records)
  add_history_bytes(added_bytes)
  trim_history(max_failed, max_failed_bytes)
end
wake_workers(woken)
return replies
