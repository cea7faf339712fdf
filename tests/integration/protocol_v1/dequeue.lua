-- dequeue.lua: bounded housekeeping, then lease up to N ready messages.
--
-- KEYS: the seventeen queue keys listed in _common.lua.
-- ARGV:
--   1 max_messages       integer 0..1000: how many messages to hand out at most
--   2 default_lock_ms    integer ms > 0: lease for messages without their own lock_ms
--   3 housekeeping_limit integer >= 1: at most this many entries of each kind are
--                        moved per call (due delays, lapsed leases, ended windows)
--   4 max_suspects       integer >= 0 (default 1): how many suspects (mids whose
--                        lease lapsed since their last ack) this call may hand out
-- Reply: a flat array
--   [1] now_ms, [2] ready count left, [3] ms of the next due event or -1,
--   [4] leases reclaimed by this call, [5] suspects held back by max_suspects,
--   then seven entries per handed-out message:
--   mid, payload, attempt, lease ms, enqueued ms, lease token, suspect (1/0).
--
-- Housekeeping, in order: delayed mids whose time has come join the tail of
-- `ready`; lapsed leases are reclaimed to the head of `ready` (they are the
-- oldest work); mids whose de-dup window ended are collected, or start their
-- pending requeue. Hand-out pops from the head of `ready` (FIFO), skips hints
-- that lost their message, moves suspects beyond max_suspects to the tail
-- (popping on in their place), and leases each mid: attempt + 1, a fresh
-- token, `locks` score = now + lease.
-- Stored per-message numbers that are not whole numbers in range (written by
-- hand) are replaced, for that message only: a bad lock_ms by the default
-- lease, a bad attempts count by 0, a bad enqueued time by now.
-- Invariants: arguments and `seq` are checked before the first write; no mid is handed
-- out twice by one call; when fewer than max_messages could be handed out the
-- wake-up tokens are replaced by one per held-back suspect (the others
-- announced work that is gone), so an idle worker blocks instead of spinning
-- on stale tokens.

--#include _state

check_key_types()
local max_messages = to_int(ARGV[1], 'max_messages', 0)
local default_lock = to_int(ARGV[2], 'default_lock_ms', 1)
local limit = to_int(ARGV[3], 'housekeeping_limit', 1)
local max_suspects = to_int(ARGV[4] or '1', 'max_suspects', 0)
if max_messages > 1000 then return fail('max_messages above 1000') end

-- INCRBY fails on a `seq` that is no integer or would pass 2^63, and only
-- after the housekeeping and the LPOPs below have written: check it first, so
-- that a damaged counter stops hand-outs without stranding popped messages.
local seq = redis.call('MGET', K_SEQ)[1]  -- MGET: in the ACL list already (docs/redis-layout.md)
if seq and not (string.find(seq, '^%d+$') and stored_int(seq, 0, MAX_TOKEN)) then
  return fail('queue key ' .. K_SEQ .. ' holds ' .. string.format('%q', string.sub(seq, 1, 40))
    .. ', not a lease counter below 2^53: the queue is damaged (clear() resets the counter)')
end

local now = now_ms()

local function move_due_delays()
  local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, limit)
  call_in_slices('ZREM', K_DELAYED, due)
  call_in_slices('RPUSH', K_READY, due)
end

local function reclaim_lapsed_leases()
  local lapsed = redis.call('ZRANGEBYSCORE', K_LOCKS, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
  local n = #lapsed / 2
  -- Walk backwards so that the earliest lapsed lease ends up at the head.
  for i = #lapsed - 1, 1, -2 do
    local mid = lapsed[i]
    redis.call('ZREM', K_LOCKS, mid)
    redis.call('HDEL', K_LEASES, mid)
    redis.call('HSET', K_DUE, mid, lapsed[i + 1])
    redis.call('SADD', K_SUSPECTS, mid)
    redis.call('LPUSH', K_READY, mid)
  end
  return n
end

local function collect_ended_windows()
  local ended = redis.call('ZRANGEBYSCORE', K_DONE, '-inf', now, 'LIMIT', 0, limit)
  for _, mid in ipairs(ended) do
    redis.call('ZREM', K_DONE, mid)
    if has_requeue(mid) then apply_requeue(mid, now) end
  end
end

local function first_score(key)
  local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if head[2] then return tonumber(head[2]) end
  return nil
end

-- The earliest time something becomes ready without an enqueue: a delay or
-- backoff ending, a lease lapsing, or a de-dup window ending with a requeue.
local function next_due_ms()
  local best = first_score(K_DELAYED)
  local lease = first_score(K_LOCKS)
  if lease and (best == nil or lease < best) then best = lease end
  if redis.call('HLEN', K_REQUEUE) > 0 then
    local window = first_score(K_DONE)
    if window and (best == nil or window < best) then best = window end
  end
  return best or -1
end

-- Pop from the head of `ready` until max_messages mids can be handed out, with
-- their payloads and suspect flags.
-- A hint whose message is gone (evicted, or its hash deleted by hand) is
-- dropped, and a suspect beyond max_suspects is held back (moved to the tail);
-- popping goes on in their place, so that neither hides the work behind it.
-- Bounded per call: at most DEAD_HINT_BUDGET dead hints, and at most
-- max_messages held-back suspects (a long run of suspects is walked over by
-- successive calls, so each call stays cheap).
-- A poison message kills its worker, and the messages it held lapse with it:
-- all of them become suspects. Handing out at most max_suspects of them per
-- call (the worker asks for none while it holds one) keeps a poison message
-- from taking its former neighbours down with it again.
local DEAD_HINT_BUDGET = 1000
local function pop_candidates()
  local mids, payloads, suspect, held_back = {}, {}, {}, {}
  local seen = {}
  local any_suspects = redis.call('SCARD', K_SUSPECTS) > 0
  local suspects_taken, dead = 0, 0
  while #mids < max_messages do
    local wanted = max_messages - #mids
    local popped = redis.call('LPOP', K_READY, wanted)
    if not popped then break end
    local found = redis.call('HMGET', K_MESSAGES, unpack(popped))
    local flags = any_suspects and redis.call('SMISMEMBER', K_SUSPECTS, unpack(popped)) or {}
    for i, mid in ipairs(popped) do
      if not found[i] then
        dead = dead + 1
      elseif not seen[mid] then
        seen[mid] = true
        local is_suspect = flags[i] == 1
        if is_suspect and suspects_taken >= max_suspects then
          held_back[#held_back + 1] = mid
        else
          if is_suspect then suspects_taken = suspects_taken + 1 end
          mids[#mids + 1] = mid
          payloads[#mids] = found[i]
          suspect[#mids] = is_suspect
        end
      end
    end
    if #popped < wanted or dead >= DEAD_HINT_BUDGET or #held_back >= max_messages then break end
  end
  -- Held-back suspects wait behind the work that is ready now.
  call_in_slices('RPUSH', K_READY, held_back)
  return mids, payloads, suspect, #held_back
end

local held_back_count = 0

local function hand_out()
  local out = {}
  if max_messages == 0 then return out end
  local mids, payloads, suspect, held_back = pop_candidates()
  held_back_count = held_back
  if #mids == 0 then return out end
  local enqueued = redis.call('HMGET', K_ENQUEUED, unpack(mids))
  local locks = redis.call('HMGET', K_LOCK_MS, unpack(mids))
  local attempts = redis.call('HMGET', K_ATTEMPTS, unpack(mids))
  local token = redis.call('INCRBY', K_SEQ, #mids) - #mids
  local lock_args, lease_args, attempt_args = {}, {}, {}
  local lease_end = offset_strings(now)
  local small = offset_strings(0)
  for i, mid in ipairs(mids) do
    local lock = stored_int(locks[i], 1, MAX_LOCK_MS) or default_lock
    local attempt = (stored_int(attempts[i], 0, MAX_EXACT - 1) or 0) + 1
    attempt_args[#attempt_args + 1] = mid
    attempt_args[#attempt_args + 1] = small(attempt)
    token = token + 1
    lock_args[#lock_args + 1] = lease_end(lock)
    lock_args[#lock_args + 1] = mid
    lease_args[#lease_args + 1] = mid
    lease_args[#lease_args + 1] = int_str(token)
    out[#out + 1] = mid
    out[#out + 1] = payloads[i]
    out[#out + 1] = attempt
    out[#out + 1] = lock
    out[#out + 1] = stored_int(enqueued[i], 0, MAX_EXACT) or now
    out[#out + 1] = token
    out[#out + 1] = suspect[i] and 1 or 0
  end
  redis.call('HSET', K_ATTEMPTS, unpack(attempt_args))
  redis.call('ZADD', K_LOCKS, unpack(lock_args))
  redis.call('HSET', K_LEASES, unpack(lease_args))
  return out
end

move_due_delays()
local reclaimed = reclaim_lapsed_leases()
collect_ended_windows()
local handed = hand_out()
if #handed / 7 < max_messages then
  -- The tokens announced work that is gone, except for held-back suspects:
  -- those are announced again, for idle workers that hold no suspect.
  redis.call('DEL', K_NOTIFY)
  wake_workers(held_back_count)
end

local reply = { now, redis.call('LLEN', K_READY), next_due_ms(), reclaimed, held_back_count }
for _, v in ipairs(handed) do reply[#reply + 1] = v end
return reply
