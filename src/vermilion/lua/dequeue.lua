-- dequeue.lua: bounded housekeeping, then lease up to N ready messages.
--
-- KEYS: the queue keys listed in _common.lua.
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
-- An idle queue (no ready, delayed, leased or done message, no wake-up token)
-- is answered by one EXISTS: an idle worker's poll costs two commands.
-- Housekeeping, in order: delayed mids whose time has come join the tail of
-- `ready` (a priority message: its place among the priorities, see
-- _layout.lua); lapsed leases are reclaimed to the head of `ready` (they are the
-- oldest work) and marked suspect; mids whose de-dup window ended are
-- forgotten, or start their pending requeue. Hand-out pops entries from the
-- head of `ready` (FIFO; on a queue with `meta`'s `priorities`, the earlier
-- virtual time of the head of `ready` and of the next priority message, one
-- message at a time), drops entries no message stands behind, moves
-- suspects beyond max_suspects to the tail (popping on in their place), and
-- leases each: attempt + 1, a fresh token, `locks` score = now + lease.
-- Per-key concurrency: a message with a key whose `held:<key>` count in `meta`
-- (its leases) has reached `max_per_key` is skipped to the tail of `ready`
-- (other keys go on; skips count against the dead-entry budget); each message
-- with a key handed out adds 1 to its count, and a reclaimed lapsed lease takes
-- 1 away.
-- Flow control, from the one HMGET of `meta`: while `paused_until` is ahead
-- nothing is handed out; with `rate_limit`, at most what the current window
-- (server ms / rate_interval_ms) has left, counted in `rate_window` and
-- `rate_count`. Held back, ready work makes the next due event the pause's end
-- or the next window, so that workers sleep until then.
-- A record no script wrote (bytes written by hand) is handed out as the
-- payload of its message, which the worker then fails as undecodable: it costs
-- that message only, and strands nothing.
-- Invariants: arguments and `seq` are checked before the first write; no mid is
-- handed out twice by one call; when fewer than max_messages could be handed
-- out the wake-up tokens are replaced by one per held-back suspect (the others
-- announced work that is gone), so an idle worker blocks instead of spinning.

--#include _layout

local max_messages = to_int(ARGV[1], 'max_messages', 0)
local default_lock = to_int(ARGV[2], 'default_lock_ms', 1)
local limit = to_int(ARGV[3], 'housekeeping_limit', 1)
local max_suspects = to_int(ARGV[4] or '1', 'max_suspects', 0)
if max_messages > 1000 then return fail('max_messages above 1000') end

if redis.call('EXISTS', K_READY, K_DELAYED, K_LOCKS, K_DONE, K_NOTIFY) == 0 then
  return { now_ms(), 0, -1, 0, 0 }
end

--#include _state

check_key_types()
-- HINCRBY fails on a `seq` that is no integer or would pass 2^63, and only
-- after the housekeeping and the LPOPs below have written: check it first.
-- One read of `meta` for the counter and every flow-control field (absent on
-- a queue that uses none of them).
local seq, priorities, rate_limit, rate_interval, rate_window, rate_count, paused_until, max_per_key = unpack(
  redis.call('HMGET', K_META, 'seq', 'priorities', 'rate_limit', 'rate_interval_ms', 'rate_window',
    'rate_count', 'paused_until', 'max_per_key'))
if seq and not (string.find(seq, '^%d+$') and stored_int(seq, 0, MAX_TOKEN)) then
  return fail('queue key ' .. K_META .. ' holds seq ' .. string.format('%q', string.sub(seq, 1, 40))
    .. ', not a lease counter below 2^53: the queue is damaged (clear() resets the counter)')
end

local now = now_ms()

-- Flow control: a pause (a handler's RateLimited) hands out nothing until it
-- ends; a rate limit hands out at most rate_limit messages per window of
-- rate_interval_ms (windows aligned on multiples of it, by server time).
local requested = max_messages
local resume_at = nil -- when a held-back hand-out may go on
local window, used = nil, 0
local function meta_int(name, value, min)
  if not value then return nil end
  local n = stored_int(value, min, MAX_EXACT)
  if n == nil then error(fail('queue key ' .. K_META .. ' holds ' .. name .. ' '
    .. string.format('%q', string.sub(value, 1, 40)) .. ', not a whole number: set it again with configure()'))
  end
  return n
end
local pause_end = meta_int('paused_until', paused_until, 0)
local per_key = meta_int('max_per_key', max_per_key, 1)
local per_window = meta_int('rate_limit', rate_limit, 1)
if pause_end and pause_end > now then
  max_messages, resume_at = 0, pause_end
elseif per_window then
  local interval = meta_int('rate_interval_ms', rate_interval, 1) or 1000
  window = math.floor(now / interval)
  if meta_int('rate_window', rate_window, 0) == window then used = meta_int('rate_count', rate_count, 0) or 0 end
  local allowed = math.max(per_window - used, 0)
  if allowed < max_messages then max_messages, resume_at = allowed, (window + 1) * interval end
end

local function records_of(mids)
  if #mids == 0 then return {} end
  return fetch_in_slices('HMGET', K_RECORDS, mids)
end

-- Housekeeping rewrites a record's header in place, by byte offsets (see
-- RECORD_HEADER), instead of parsing it into a table and packing it again: a
-- backlog moves `limit` records of each kind per call, and the table and the
-- repacking were most of that call's time. Bytes no script wrote keep their
-- pointer in `ready`, so that the hand-out fails them as undecodable.
local READY_BYTE, NO_TOKEN = string.char(READY), string.rep('\0', 7)

-- A record's priority level, read from its flags byte (0: bytes no script wrote).
local function level_of(raw)
  if is_record(raw) then return priority_of(string.byte(raw, 2)) end
  return 0
end

-- Scores below 0 are ready priority messages, not delays (see _layout.lua).
local function move_due_delays()
  local due = redis.call('ZRANGEBYSCORE', K_DELAYED, 0, now, 'LIMIT', 0, limit)
  if #due == 0 then return end
  local records = records_of(due)
  local writes, pointers, leaving, ranked = {}, {}, {}, {}
  for i, mid in ipairs(due) do
    local raw = records[i]
    if is_record(raw) then
      writes[#writes + 1], writes[#writes + 2] = mid, READY_BYTE .. string.sub(raw, 2)
    end
    local level = level_of(raw)
    if level > 0 then
      ranked[#ranked + 1], ranked[#ranked + 2] = priority_score(struct.unpack('>I6', raw, 9), level), mid
    else
      leaving[#leaving + 1], pointers[#pointers + 1] = mid, pointer_entry(mid)
    end
  end
  call_in_slices('ZREM', K_DELAYED, leaving)
  call_in_slices('HSET', K_RECORDS, writes)
  call_in_slices('RPUSH', K_READY, pointers)
  call_in_slices('ZADD', K_DELAYED, ranked)
end

-- A lapsed lease's record made ready: suspect, due when the lease lapsed, no token.
local function reclaimed_record(raw, lapsed_at)
  local flags = string.byte(raw, 2)
  if not has_flag(flags, SUSPECT) then flags = flags + SUSPECT end
  return READY_BYTE .. string.char(flags) .. string.sub(raw, 3, 8) .. struct.pack('>I6', lapsed_at)
    .. string.sub(raw, 15, 23) .. NO_TOKEN .. string.sub(raw, RECORD_HEADER_BYTES + 1)
end

local function reclaim_lapsed_leases()
  local lapsed = redis.call('ZRANGEBYSCORE', K_LOCKS, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
  local n = #lapsed / 2
  if n == 0 then return 0 end
  local mids = {}
  for i = 1, n do mids[i] = lapsed[2 * i - 1] end
  call_in_slices('ZREM', K_LOCKS, mids)
  local records = records_of(mids)
  local writes, pointers, ranked, freed = {}, {}, {}, {}
  -- Latest first, so that one LPUSH leaves the earliest lapsed at the head.
  for i = n, 1, -1 do
    local raw, lapsed_at = records[i], tonumber(lapsed[2 * i])
    local key = key_of(raw)
    if key then freed[#freed + 1] = key end -- its key's slot is free again
    if is_record(raw) then
      writes[#writes + 1], writes[#writes + 2] = mids[i], reclaimed_record(raw, lapsed_at)
    end
    local level = level_of(raw)
    if level > 0 then
      ranked[#ranked + 1], ranked[#ranked + 2] = priority_score(lapsed_at, level), mids[i]
    else
      pointers[#pointers + 1] = pointer_entry(mids[i])
    end
  end
  call_in_slices('HSET', K_RECORDS, writes)
  call_in_slices('LPUSH', K_READY, pointers)
  call_in_slices('ZADD', K_DELAYED, ranked)
  if #freed > 0 then count_held(freed, -1) end
  return n
end

-- One command per key for the whole slice, as the moves above: a backlog of
-- ended windows must not cost three commands a mid.
local function collect_ended_windows()
  local ended = redis.call('ZRANGEBYSCORE', K_DONE, '-inf', now, 'LIMIT', 0, limit)
  if #ended == 0 then return end
  call_in_slices('ZREM', K_DONE, ended)
  local forgotten = ended
  if redis.call('EXISTS', K_REQUEUE) == 1 then
    forgotten = {}
    for _, mid in ipairs(ended) do
      if has_requeue(mid) then apply_requeue(mid, now) else forgotten[#forgotten + 1] = mid end
    end
  end
  call_in_slices('SREM', K_MIDS, forgotten)
end

local function first_score(key)
  local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if head[2] then return tonumber(head[2]) end
  return nil
end

-- The earliest time something becomes ready without an enqueue: a delay or
-- backoff ending, a lease lapsing, or a de-dup window ending with a requeue.
local function next_due_ms()
  local delay = redis.call('ZRANGEBYSCORE', K_DELAYED, 0, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  local best = delay[2] and tonumber(delay[2]) or nil
  local lease = first_score(K_LOCKS)
  if lease and (best == nil or lease < best) then best = lease end
  if redis.call('EXISTS', K_REQUEUE) == 1 then
    local window = first_score(K_DONE)
    if window and (best == nil or window < best) then best = window end
  end
  return best or -1
end

-- The messages chosen by pop_candidates(), in parallel arrays (no table per
-- message: the hand-out is the hot path, and Lua's garbage is its cost).
local mids, flags, enqueued, dues, attempts, locks, payloads, keys = {}, {}, {}, {}, {}, {}, {}, {}
local held_keys = {} -- the key of each chosen message that has one (its lease takes a slot)

local function choose(mid, f, e, d, a, l, p, k)
  local i = #mids + 1
  mids[i], flags[i], enqueued[i], dues[i], attempts[i], locks[i], payloads[i] = mid, f, e, d, a, l, p
  keys[i] = k
  if k then held_keys[#held_keys + 1] = k end
end

-- Pop from the head of `ready` until max_messages messages are chosen. An
-- entry no message stands behind (pushed by hand, or whose message moved on)
-- is dropped, and a suspect beyond max_suspects is held back (moved to the
-- tail); popping goes on in their place, so that neither hides the work
-- behind. Bounded per call: at most DEAD_ENTRY_BUDGET dead entries, and at
-- most max_messages held-back suspects (a long run of suspects is walked over
-- by successive calls). A poison message kills its worker, and the messages
-- it held lapse with it: all become suspects. Handing out at most
-- max_suspects of them per call (the worker asks for none while it holds one)
-- keeps a poison message from taking its former neighbours down with it.
-- A record whose bytes no script wrote is handed out with those bytes as the
-- payload: the worker fails it as undecodable, and nothing is stranded.
local DEAD_ENTRY_BUDGET = 1000
local held_back, seen = {}, {}
local suspects_taken, dead = 0, 0
-- Per-key concurrency: messages whose key holds max_per_key leases already
-- wait at the tail of `ready` (`key_waiting`): they block no other key.
local key_waiting, held_now = {}, {}

local function key_is_full(k)
  if not per_key then return false end
  local held = held_now[k]
  if held == nil then
    held = tonumber(redis.call('HGET', K_META, held_field(k)) or '0') or 0
    held_now[k] = held
  end
  return held >= per_key
end

-- Choose a ready message, or hold it back: a suspect beyond max_suspects, or
-- a message whose key has no free slot (which counts against the call's
-- budget of skipped entries).
local function consider(mid, f, e, d, a, l, p, k)
  seen[mid] = true
  local is_suspect = has_flag(f, SUSPECT)
  if is_suspect and suspects_taken >= max_suspects then
    held_back[#held_back + 1] = pointer_entry(mid)
  elseif k and key_is_full(k) then
    key_waiting[#key_waiting + 1] = pointer_entry(mid)
    dead = dead + 1
  else
    if is_suspect then suspects_taken = suspects_taken + 1 end
    if k and per_key then held_now[k] = (held_now[k] or 0) + 1 end
    choose(mid, f, e, d, a, l, p, k)
  end
end

-- Pop from `ready` until `target` messages are chosen in all.
local function pop_candidates(target)
  while #mids < target do
    local wanted = target - #mids
    local popped = redis.call('LPOP', K_READY, wanted)
    if not popped then break end
    local kinds, pmids, penq, plock, ppay = {}, {}, {}, {}, {}
    for i, raw in ipairs(popped) do
      local kind, mid, e, l, p = entry_fields(raw)
      kinds[i], pmids[i], penq[i], plock[i], ppay[i] = kind or -1, mid or '', e, l, p
    end
    local records = redis.call('HMGET', K_RECORDS, unpack(pmids))
    for i = 1, #popped do
      local kind, mid, raw = kinds[i], pmids[i], records[i]
      local ok, f, e, d, a, l, p, k = false, 0, penq[i], penq[i], 0, plock[i], ppay[i], nil
      if kind == -1 or seen[mid] then
        ok = false
      elseif not raw then
        ok = kind ~= POINTER
      else
        local r = parse_record(raw)
        if r == nil then
          ok = true
          if kind == POINTER then e, d, l, p = now, now, 0, raw end
        elseif kind == POINTER then
          ok = r.state == READY and not has_flag(r.flags, OVERRIDES)
          f, e, d, a, l, p, k = r.flags, r.enqueued, r.due, r.attempts, r.lock, r.payload, r.key
        else
          ok = r.state == READY and has_flag(r.flags, OVERRIDES)
          f, a, l, p = r.flags - OVERRIDES, r.attempts, r.lock, r.payload
        end
      end
      if not ok then
        dead = dead + 1
      else
        consider(mid, f, e, d, a, l, p, k)
      end
    end
    if #popped < wanted or dead >= DEAD_ENTRY_BUDGET or #held_back >= max_messages then return false end
  end
  return true
end

--#include _priorities

local held_back_count = 0

local function hand_out()
  -- The reply's first five entries are set last (see below); the messages
  -- follow them, so that no copy of the whole reply is made.
  local out = { 0, 0, 0, 0, 0 }
  if max_messages == 0 then return out, 0 end
  if priorities then pop_with_priorities() else pop_candidates(max_messages) end
  -- Held-back suspects wait behind the work that is ready now.
  call_in_slices('RPUSH', K_READY, held_back)
  call_in_slices('RPUSH', K_READY, key_waiting)
  held_back_count = #held_back
  local n = #mids
  if n == 0 then return out, 0 end
  if not seq then redis.call('HSETNX', K_META, 'version', '2') end
  local token = redis.call('HINCRBY', K_META, 'seq', n) - n
  local lease_end = offset_strings(now)
  local writes, lock_args = {}, {}
  for i = 1, n do
    local lock = stored_int(locks[i], 1, MAX_LOCK_MS) or default_lock
    local attempt = math.min(attempts[i] + 1, 4294967295)
    token = token + 1
    writes[2 * i - 1] = mids[i]
    writes[2 * i] = struct.pack(RECORD_HEADER, LEASED, flags[i], enqueued[i], dues[i], attempt,
      locks[i], token) .. (keys[i] and key_prefix(keys[i]) or '') .. payloads[i]
    lock_args[2 * i - 1] = lease_end(lock)
    lock_args[2 * i] = mids[i]
    local at = 7 * i - 1
    out[at], out[at + 1], out[at + 2], out[at + 3] = mids[i], payloads[i], attempt, lock
    out[at + 4], out[at + 5], out[at + 6] = enqueued[i], token, has_flag(flags[i], SUSPECT) and 1 or 0
  end
  redis.call('HSET', K_RECORDS, unpack(writes))
  redis.call('ZADD', K_LOCKS, unpack(lock_args))
  if #held_keys > 0 then count_held(held_keys, 1) end
  if window then redis.call('HSET', K_META, 'rate_window', int_str(window), 'rate_count', int_str(used + n)) end
  return out, n
end

move_due_delays()
local reclaimed = reclaim_lapsed_leases()
collect_ended_windows()
local reply, handed = hand_out()
local left = redis.call('LLEN', K_READY)
if priorities then left = left + redis.call('ZCOUNT', K_DELAYED, '-inf', '(0') end
if handed < requested then
  -- The tokens announced work that is gone, except for held-back suspects:
  -- those are announced again, for idle workers that hold no suspect.
  redis.call('DEL', K_NOTIFY)
  wake_workers(held_back_count)
elseif left > 0 and redis.call('EXISTS', K_NOTIFY) == 0 then
  -- This worker took its fill and left work behind: pass a token on, since an
  -- enqueue announces only the message that makes `ready` non-empty.
  redis.call('LPUSH', K_NOTIFY, '1')
end

local due_next = next_due_ms()
if resume_at and left > 0 and (due_next < 0 or resume_at < due_next) then due_next = resume_at end
reply[1], reply[2], reply[3], reply[4], reply[5] = now, left, due_next, reclaimed, held_back_count
return reply
