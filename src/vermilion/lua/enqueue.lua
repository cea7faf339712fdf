-- enqueue.lua: add, update or requeue a batch of messages, or refuse each one,
-- following Carmine's enqueue branch table (carmine-mq.md section 5.3).
--
-- KEYS: the queue keys listed in _common.lua.
-- ARGV: the options shared by every message of the call, then one pair per message:
--   1 delay_ms   integer ms >= 0 before the messages may be handled (0: ready now)
--   2 lock_ms    integer ms > 0 for a per-message lease, or '' for the worker default
--   3 flags      integer: bits 1 can_update, 2 can_requeue, 4 reset_delay, plus 8 *
--                priority (0..9), plus 128 when every payload
--                starts with its message's concurrency key ([>I2] length >= 1,
--                the key), which a new life keeps in its record
--   then, for each message: mid (non-empty string), payload (opaque bytes)
-- Or, for one message with the default options ('0', '', '0'), only its mid
-- and payload (two arguments): the usual call, which the client sends so.
-- Reply: one entry per message, in order: 'added' | 'updated' | 'already-queued'
--   | 'locked' | 'backoff' | 'full'.
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
-- Priority: a new life of a priority above 0 gets a record and, ready now, a
-- place in `delayed` below every due time (see _layout.lua), and sets `meta`'s
-- `priorities`; an update keeps the priority the message has, and a requeue
-- starts its new life at the default level.
-- Bound: with `meta`'s max_size set, a new life, or a new pending requeue of a
-- done mid, is refused with 'full' (writing nothing for it) once the live
-- messages (ready + delayed + leased) reach max_size; a batch admits the first
-- messages that fit, in order.
-- A two-argument call (one message, default options) of a mid the queue does
-- not know, to a queue without max_size, is answered first, with four commands (TIME,
-- HGET meta, SADD, RPUSH; plus LPUSH when it makes `ready` non-empty) and before
-- any helper is defined. A batch of unknown mids is written with one command
-- per key.
-- Invariants: every argument is checked before the first write; a fresh life
-- clears every trace of a former one (failure record, done entry); a new
-- message waiting in `ready` has a fresh entry and no record; every message made
-- ready or delayed, or given a pending requeue, pushes one wake-up token (at
-- most 64 wait). The one-message path checks key types by undoing its writes
-- when one of its commands meets a key of the wrong type.

-- The usual call, answered before anything else is defined, even
-- _common.lua's names (defining them costs more server time than this path's
-- Lua): one message, ready now, with the worker's lease, whose mid the queue
-- does not know: the call of two arguments, mid and payload. KEYS are indexed as
-- listed in _common.lua (1 mids, 2 ready, 10 notify, 11 meta, 12 the test
-- clock). SADD both tells that the
-- mid is new and records it; a queue with a bound (meta's max_size) takes the
-- full path, which counts its live messages. A command refused here is undone and the call
-- goes on to the full path below, which names a wrong-typed key or a denied
-- command by its line; an out-of-memory refusal (only ever the first write:
-- Redis lets a script that wrote finish) is answered as it is, so that the
-- server counts it once, as it does every other refused call. A missing test
-- clock goes on to the full path too, which refuses it.
local argv, keys = ARGV, KEYS
local one_mid = argv[1]
if #argv == 2 and #one_mid > 0 and #one_mid < 255 and not redis.pcall('HGET', keys[11], 'max_size') then
  local now = nil
  if keys[12] then
    now = tonumber(redis.call('GET', keys[12]) or nil)
  else
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local added = now and redis.pcall('SADD', keys[1], one_mid)
  if type(added) == 'table' and string.sub(added.err, 1, 4) == 'OOM ' then return added end
  if added == 1 then
    local entry = '\1' .. string.char(#one_mid) .. one_mid .. struct.pack('>I6', now) .. argv[2]
    local length = redis.pcall('RPUSH', keys[2], entry)
    if type(length) == 'number' then
      -- Only the message that makes `ready` non-empty wakes a worker: whoever
      -- takes it takes what follows, or passes a token on (see dequeue.lua).
      -- At most 64 tokens wait (MAX_NOTIFY_TOKENS).
      local tokens = length == 1 and redis.pcall('LPUSH', keys[10], '1') or 0
      if type(tokens) == 'number' then
        if tokens > 64 then redis.call('LTRIM', keys[10], 0, 63) end
        return { 'added' }
      end
      redis.call('LREM', keys[2], -1, entry)
    end
    redis.call('SREM', keys[1], one_mid)
  end
end

--#include _common

-- The two-argument call, as the full form: default options, then the pair.
local ARGV = #ARGV == 2 and { '0', '', '0', ARGV[1], ARGV[2] } or ARGV

local CAN_UPDATE, CAN_REQUEUE, RESET_DELAY, PRIORITY_FLAG, KEYED_FLAG = 1, 2, 4, 8, 128
local FIRST_PAIR = 4

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
local keyed = flags >= KEYED_FLAG
if keyed then flags = flags - KEYED_FLAG end
local can_update = flags % 2 == 1
local can_requeue = math.floor(flags / CAN_REQUEUE) % 2 == 1
local reset_delay = math.floor(flags / RESET_DELAY) % 2 == 1
local priority = math.floor(flags / PRIORITY_FLAG)
if priority > MAX_PRIORITY then return fail('priority above ' .. MAX_PRIORITY .. ': ' .. priority) end
for i = FIRST_PAIR, #ARGV, 2 do
  if ARGV[i] == '' then return fail('empty mid') end
end
-- Each message's payload; with KEYED_FLAG, each payload starts with its key
-- ([>I2] length, the key), which a new life keeps in its record.
local payload_in, key_in = {}, {}
for i = FIRST_PAIR + 1, #ARGV, 2 do
  local n = #payload_in + 1
  payload_in[n] = ARGV[i]
  if keyed then
    local length = #ARGV[i] >= 2 and struct.unpack('>I2', ARGV[i]) or nil
    if length == nil or length == 0 or #ARGV[i] < 2 + length then return fail('bad key prefix') end
    key_in[n], payload_in[n] = string.sub(ARGV[i], 3, 2 + length), string.sub(ARGV[i], 3 + length)
  end
end

local now = now_ms()
local due = now + delay
local due_text = int_str(due)

local function new_record(state, payload, key)
  return pack_record({ state = state, flags = priority * PRIORITY_UNIT + (key and KEYED or 0), enqueued = now,
    due = due, attempts = 0, lock = lock or 0, token = 0, payload = payload, key = key })
end

check_key_types()
--#include _state
--#include _history

-- How many more messages the queue's bound (max_size) admits; nil: unbounded.
-- A new life takes a place; so does a pending requeue of a finished mid (it
-- starts when the window ends). A requeue of a leased mid takes none: it
-- replaces its message when that one's lease ends.
local room = setting('max_size')
if room then room = room - live_count() end

local function admit()
  if room == nil then return true end
  if room <= 0 then return false end
  room = room - 1
  return true
end

local woken = 0

-- Start a life for each mid (none of them live, and no trace of a former life
-- left): a fresh entry in `ready`, or a record and a place in `delayed`.
local function write_fresh(mids, payloads, unknown, keys)
  if #unknown > 0 then call_in_slices('SADD', K_MIDS, unknown) end
  if delay == 0 and priority == 0 and not keyed then
    local entries = {}
    for i, mid in ipairs(mids) do entries[i] = fresh_entry(mid, now, lock, payloads[i]) end
    call_in_slices('RPUSH', K_READY, entries)
  elseif delay == 0 and priority == 0 then
    -- Ready, with a key: a record (which holds the key) and a pointer.
    local records, pointers = {}, {}
    for i, mid in ipairs(mids) do
      records[2 * i - 1], records[2 * i] = mid, new_record(READY, payloads[i], keys[i])
      pointers[i] = pointer_entry(mid)
    end
    call_in_slices('HSET', K_RECORDS, records)
    call_in_slices('RPUSH', K_READY, pointers)
  else
    -- Delayed, or ready at a priority (its place in `delayed`, below every due time).
    local state, score = DELAYED, due_text
    if delay == 0 then state, score = READY, priority_score(now, priority) end
    local records, scored = {}, {}
    for i, mid in ipairs(mids) do
      records[2 * i - 1], records[2 * i] = mid, new_record(state, payloads[i], keys[i])
      scored[2 * i - 1], scored[2 * i] = score, mid
    end
    call_in_slices('HSET', K_RECORDS, records)
    call_in_slices('ZADD', K_DELAYED, scored)
    if priority > 0 then redis.call('HSET', K_META, 'priorities', '1') end
  end
  woken = woken + #mids
end

-- Fresh messages of this call, written together by flush_fresh().
local fresh_mids, fresh_payloads, fresh_unknown, fresh_set, fresh_keys = {}, {}, {}, {}, {}

local function flush_fresh()
  if #fresh_mids == 0 then return end
  write_fresh(fresh_mids, fresh_payloads, fresh_unknown, fresh_keys)
  fresh_mids, fresh_payloads, fresh_unknown, fresh_set, fresh_keys = {}, {}, {}, {}, {}
end

local function add_fresh(mid, payload, state, key)
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
  fresh_keys[#fresh_mids] = key
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
    elseif priority_of(record.flags) == 0 then
      redis.call('LREM', K_READY, 1, pointer_entry(mid))
    end -- (a priority message's place in `delayed` is overwritten below)
  elseif state == 'lapsed' then
    redis.call('ZREM', K_LOCKS, mid)
    record.token = 0
  end
  record.due = due
  if delay > 0 then
    record.state = DELAYED
    redis.call('ZADD', K_DELAYED, due_text, mid)
  elseif priority_of(record.flags) > 0 then
    record.state = READY
    redis.call('ZADD', K_DELAYED, priority_score(due, priority_of(record.flags)), mid)
  else
    record.state = READY
    redis.call('ZREM', K_DELAYED, mid)
    redis.call('RPUSH', K_READY, pointer_entry(mid))
  end
  redis.call('HSET', K_RECORDS, mid, pack_record(record))
  woken = woken + 1
end

local function pending_requeue(mid, payload, state)
  local exists = has_requeue(mid)
  if exists and not can_update then return 'already-queued' end
  if not exists and state == 'done' and not admit() then return 'full' end
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

local function start_life(mid, payload, state, key)
  if not admit() then return 'full' end
  return add_fresh(mid, payload, state, key)
end

local function enqueue_in_state(mid, payload, state, record, key)
  if state == nil or state == 'failed' then return start_life(mid, payload, state, key) end
  if state == 'expired' then
    if has_requeue(mid) then
      if not can_update then return 'already-queued' end
      return pending_requeue(mid, payload, state)
    end
    return start_life(mid, payload, state, key)
  end
  if state == 'locked' then
    if can_requeue then return pending_requeue(mid, payload, state) end
    return 'locked'
  end
  if state == 'done' then
    if can_requeue then return pending_requeue(mid, payload, state) end
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
  -- A bound admits the first `room` messages of the call, in order.
  local admitted = #mids
  if room and room < admitted then admitted = math.max(room, 0) end
  local payloads, replies, written = {}, {}, {}
  for i = 1, #mids do
    if i <= admitted then
      written[i], payloads[i], replies[i] = mids[i], payload_in[i], 'added'
    else
      replies[i] = 'full'
    end
  end
  if admitted > 0 then write_fresh(written, payloads, written, key_in) end
  wake_workers(woken)
  return replies
end

local replies = {}
local seen = {}
for i, mid in ipairs(mids) do
  local payload = payload_in[i]
  local state, record = nil, nil
  if seen[mid] then
    -- An earlier message of this call changed this mid: read it afresh.
    if fresh_set[mid] then flush_fresh() end
    state, record = state_of(mid, now)
  elseif known[i] == 1 then
    state, record = state_of(mid, now)
  end
  seen[mid] = true
  replies[i] = enqueue_in_state(mid, payload, state, record, key_in[i])
end
flush_fresh()
wake_workers(woken)
return replies
