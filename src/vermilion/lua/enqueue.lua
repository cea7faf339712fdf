-- enqueue.lua: add, update or requeue a batch of messages, or refuse each one,
-- following Carmine's enqueue branch table (carmine-mq.md section 5.3).
--
-- KEYS: the queue keys listed in _common.lua.
-- ARGV: the options shared by every message of the call, then one pair per message:
--   1 delay_ms   integer ms >= 0 before the messages may be handled (0: ready now)
--   2 lock_ms    integer ms > 0 for a per-message lease, or '' for the worker default
--   3 flags      integer bit set: 1 can_update, 2 can_requeue, 4 reset_delay
--   then, for each message: mid (non-empty string), payload (opaque bytes)
-- Reply: one entry per message, in order: 'added' | 'updated' | 'already-queued'
--   | 'locked' | 'backoff'.
--
-- Branches, by the mid's state as of now (see state_of):
--   unknown, failed, expired without requeue   -> fresh life: 'added'
--   queued (ready, due, lapsed, delayed)        -> can_update: new content (and
--       reset_delay: new delay) 'updated'; reset_delay alone: new delay 'updated';
--       else 'already-queued'
--   expired with a pending requeue              -> can_update replaces the
--       requeue ('updated'), else 'already-queued'
--   locked                                      -> can_requeue: pending requeue; else 'locked'
--   done (inside its window)                    -> can_requeue: pending requeue; else 'backoff'
--   A pending requeue exists already: can_update replaces it ('updated'), else
--   'already-queued'.
-- A call of one mid the queue does not know, ready now with the default lease,
-- is answered first, with four commands (TIME, SADD, RPUSH, LPUSH) and before
-- any helper is defined. A batch of unknown mids is written with one command
-- per key.
-- Invariants: every argument is checked before the first write; a fresh life
-- clears every trace of a former one (failure record, done entry); a new
-- message waiting in `ready` has a fresh entry and no record; every message made
-- ready or delayed, or given a pending requeue, pushes one wake-up token (at
-- most 64 wait). The one-message path checks key types by undoing its writes
-- when one of its commands meets a key of the wrong type.

local CAN_UPDATE, CAN_REQUEUE, RESET_DELAY = 1, 2, 4
local FIRST_PAIR = 4

-- The usual call, answered before any helper is defined (defining them costs
-- more server time than the call itself): one message, ready now, with the
-- worker's lease, whose mid the queue does not know. SADD both tells that the
-- mid is new and records it. A command refused here is undone and the call
-- goes on to the full path below, which names a wrong-typed key or a denied
-- command by its line; an out-of-memory refusal (only ever the first write:
-- Redis lets a script that wrote finish) is answered as it is, so that the
-- server counts it once, as it does every other refused call.
if #ARGV == FIRST_PAIR + 1 and ARGV[1] == '0' and ARGV[2] == '' and #ARGV[3] < 16
  and string.find(ARGV[3], '^%d+$') and #ARGV[4] > 0 and #ARGV[4] < 255 then
  local mid = ARGV[FIRST_PAIR]
  local entry = '\1' .. string.char(#mid) .. mid .. struct.pack('>I6', now_ms()) .. ARGV[FIRST_PAIR + 1]
  local added = redis.pcall('SADD', K_MIDS, mid)
  if type(added) == 'table' and string.sub(added.err, 1, 4) == 'OOM ' then return added end
  if added == 1 then
    local length = redis.pcall('RPUSH', K_READY, entry)
    if type(length) == 'number' then
      -- Only the message that makes `ready` non-empty wakes a worker: whoever
      -- takes it takes what follows, or passes a token on (see dequeue.lua).
      local tokens = length == 1 and redis.pcall('LPUSH', K_NOTIFY, '1') or 0
      if type(tokens) == 'number' then
        if tokens > MAX_NOTIFY_TOKENS then redis.call('LTRIM', K_NOTIFY, 0, MAX_NOTIFY_TOKENS - 1) end
        return { 'added' }
      end
      redis.call('LREM', K_READY, -1, entry)
    end
    redis.call('SREM', K_MIDS, mid)
  end
end

--#include _layout

if #ARGV < FIRST_PAIR - 1 or (#ARGV - FIRST_PAIR + 1) % 2 ~= 0 then
  return fail('enqueue expects delay_ms, lock_ms, flags, then (mid, payload) pairs')
end
local delay = to_int(ARGV[1], 'delay_ms', 0)
local lock = nil
if ARGV[2] ~= '' then
  lock = to_int(ARGV[2], 'lock_ms', 1)
  if lock > MAX_LOCK_MS then return fail('lock_ms above ten years') end
end
local flags = to_int(ARGV[3], 'flags', 0)
local can_update = flags % 2 == 1
local can_requeue = math.floor(flags / CAN_REQUEUE) % 2 == 1
local reset_delay = math.floor(flags / RESET_DELAY) % 2 == 1
for i = FIRST_PAIR, #ARGV, 2 do
  if ARGV[i] == '' then return fail('empty mid') end
end

local now = now_ms()
local due = now + delay
local due_text = int_str(due)

local function new_delayed_record(payload)
  return pack_record({ state = DELAYED, flags = 0, enqueued = now, due = due, attempts = 0,
    lock = lock or 0, token = 0, payload = payload })
end

check_key_types()
--#include _state
--#include _history

local woken = 0

-- Start a life for each mid (none of them live, and no trace of a former life
-- left): a fresh entry in `ready`, or a record and a place in `delayed`.
local function write_fresh(mids, payloads, unknown)
  if #unknown > 0 then call_in_slices('SADD', K_MIDS, unknown) end
  if delay == 0 then
    local entries = {}
    for i, mid in ipairs(mids) do entries[i] = fresh_entry(mid, now, lock, payloads[i]) end
    call_in_slices('RPUSH', K_READY, entries)
  else
    local records, scored = {}, {}
    for i, mid in ipairs(mids) do
      records[2 * i - 1], records[2 * i] = mid, new_delayed_record(payloads[i])
      scored[2 * i - 1], scored[2 * i] = due_text, mid
    end
    call_in_slices('HSET', K_RECORDS, records)
    call_in_slices('ZADD', K_DELAYED, scored)
  end
  woken = woken + #mids
end

-- Fresh messages of this call, written together by flush_fresh().
local fresh_mids, fresh_payloads, fresh_unknown, fresh_set = {}, {}, {}, {}

local function flush_fresh()
  if #fresh_mids == 0 then return end
  write_fresh(fresh_mids, fresh_payloads, fresh_unknown)
  fresh_mids, fresh_payloads, fresh_unknown, fresh_set = {}, {}, {}, {}
end

local function add_fresh(mid, payload, state)
  if state ~= nil then
    -- A former life ended (failed, or its window ended): clear its traces.
    if state == 'failed' then
      forget_failure(mid)
    else
      redis.call('ZREM', K_DONE, mid)
    end
  else
    fresh_unknown[#fresh_unknown + 1] = mid
  end
  fresh_mids[#fresh_mids + 1] = mid
  fresh_payloads[#fresh_payloads + 1] = payload
  fresh_set[mid] = true
  return 'added'
end

-- A queued message's record, made from its fresh entry when it has none: the
-- entry leaves `ready` (its place is about to change).
local function take_fresh_entry(mid, record)
  local entry, e = find_fresh_entry(mid)
  if entry then redis.call('LREM', K_READY, 1, entry) end
  if e == nil then e = { enqueued = now, lock = 0, payload = '' } end
  if record == nil then
    return { state = READY, flags = 0, enqueued = e.enqueued, due = e.enqueued, attempts = 0,
      lock = e.lock, token = 0, payload = e.payload }
  end
  record.flags = record.flags - OVERRIDES
  record.enqueued, record.due = e.enqueued, e.enqueued
  return record
end

-- Move a queued mid to its new due time. `state` says where it is now.
local function reschedule(mid, state, record)
  if delay == 0 and (state == 'ready' or state == 'due' or state == 'lapsed') then
    return -- ready already (or about to be reclaimed as ready)
  end
  if state == 'ready' then
    if record == nil or has_flag(record.flags, OVERRIDES) then
      record = take_fresh_entry(mid, record)
    else
      redis.call('LREM', K_READY, 1, pointer_entry(mid))
    end
  elseif state == 'lapsed' then
    redis.call('ZREM', K_LOCKS, mid)
    record.token = 0
  end
  record.due = due
  if delay > 0 then
    record.state = DELAYED
    redis.call('ZADD', K_DELAYED, due_text, mid)
  else
    record.state = READY
    redis.call('ZREM', K_DELAYED, mid)
    redis.call('RPUSH', K_READY, pointer_entry(mid))
  end
  redis.call('HSET', K_RECORDS, mid, pack_record(record))
  woken = woken + 1
end

local function pending_requeue(mid, payload)
  local exists = has_requeue(mid)
  if exists and not can_update then return 'already-queued' end
  redis.call('HSET', K_REQUEUE, mid, struct.pack('>I5', lock or 0) .. payload)
  woken = woken + 1 -- idle workers must now also wait for the end of a de-dup window
  if exists then return 'updated' end
  return 'added'
end

local function update_queued(mid, payload, state, record)
  if can_update then
    if record == nil then
      record = { state = READY, flags = OVERRIDES, enqueued = 0, due = 0, attempts = 0,
        lock = lock or 0, token = 0, payload = payload }
    else
      record.payload, record.lock = payload, lock or 0
    end
    redis.call('HSET', K_RECORDS, mid, pack_record(record))
    if reset_delay then reschedule(mid, state, record) end
    return 'updated'
  end
  if reset_delay then
    reschedule(mid, state, record)
    return 'updated'
  end
  return 'already-queued'
end

local function enqueue_in_state(mid, payload, state, record)
  if state == nil or state == 'failed' then return add_fresh(mid, payload, state) end
  if state == 'expired' then
    if has_requeue(mid) then
      if not can_update then return 'already-queued' end
      return pending_requeue(mid, payload)
    end
    return add_fresh(mid, payload, state)
  end
  if state == 'locked' then
    if can_requeue then return pending_requeue(mid, payload) end
    return 'locked'
  end
  if state == 'done' then
    if can_requeue then return pending_requeue(mid, payload) end
    return 'backoff'
  end
  return update_queued(mid, payload, state, record)
end

-- Which mids of the call the queue knows: one SMISMEMBER for the whole batch.
local mids = {}
for i = FIRST_PAIR, #ARGV, 2 do mids[#mids + 1] = ARGV[i] end
local known = fetch_in_slices('SMISMEMBER', K_MIDS, mids)

-- The usual batch (enqueue_many with random mids): no mid known to the queue,
-- none twice. It is written at once, without the branch table per mid.
local function every_mid_unknown_and_once()
  local seen = {}
  for i, mid in ipairs(mids) do
    if known[i] == 1 or seen[mid] then return false end
    seen[mid] = true
  end
  return true
end

if every_mid_unknown_and_once() then
  local payloads, replies = {}, {}
  for i = 1, #mids do
    payloads[i] = ARGV[FIRST_PAIR + 2 * i - 1]
    replies[i] = 'added'
  end
  write_fresh(mids, payloads, mids)
  wake_workers(woken)
  return replies
end

local replies = {}
local seen = {}
for i, mid in ipairs(mids) do
  local payload = ARGV[FIRST_PAIR + 2 * i - 1]
  local state, record = nil, nil
  if seen[mid] then
    -- An earlier message of this call changed this mid: read it afresh.
    if fresh_set[mid] then flush_fresh() end
    state, record = state_of(mid, now)
  elseif known[i] == 1 then
    state, record = state_of(mid, now)
  end
  seen[mid] = true
  replies[i] = enqueue_in_state(mid, payload, state, record)
end
flush_fresh()
wake_workers(woken)
return replies
