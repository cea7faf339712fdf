-- _common.lua: helpers shared by every vermilion script.
--
-- _scripts.py places this text after a script's optional `#!lua` line and
-- before the script's own body, so every operation sees the same key names and
-- the same state rules. It performs no command when loaded.
--
-- KEYS (identical order in every script; all share the hash tag `{<queue>}`):
--   1  messages         hash   mid -> payload bytes of a live (queued/delayed/locked) message
--   2  requeue          hash   mid -> payload of a pending requeue (while locked or done)
--   3  attempts         hash   mid -> times handed out in the current life
--   4  enqueued         hash   mid -> ms when the current life began (enqueue or requeue)
--   5  due              hash   mid -> ms when the message became (or becomes) ready
--   6  lock_ms          hash   mid -> per-message lease in ms (absent: worker default)
--   7  requeue_lock_ms  hash   mid -> lease in ms for the pending requeue
--   8  ready            list   mids ready now, handed out from the head (LPOP)
--   9  delayed          zset   mid -> ms its delay or retry backoff ends
--   10 locks            zset   mid -> ms its lease lapses
--   11 leases           hash   mid -> token of the current lease (the ack/extend fence)
--   12 done             zset   mid -> ms its de-duplication window ends
--   13 failed           zset   mid -> ms it failed (bounded history)
--   14 errors           hash   mid -> reason of its failure
--   15 notify           list   wake-up tokens for idle workers (at most 64)
--   16 seq              string last lease token handed out (kept by clear, so that a
--                              token is never handed out twice by a queue)
--   17 suspects         set    mids whose lease lapsed (their worker may have died on them)
--                              and that no ack has cleared since: handed out one per call
--
-- Invariants every script keeps:
--   * a live mid is in `messages` and in exactly one of `ready`, `delayed`, `locks`;
--   * a finished mid still inside its de-dup window is only in `done` (plus
--     `requeue` when a requeue is pending); its payload is gone;
--   * `leases[mid]` exists exactly while the mid is in `locks`;
--   * a mid appears in `ready` at most once.
--   * every script but clear starts with check_key_types(): a queue with a key of
--     the wrong type is refused before anything is written. (enqueue's one-message
--     fast path checks less, as cheaply: see refuse_string_keys.)
-- Time is read from the server (TIME) only, in whole milliseconds.

local K_MESSAGES, K_REQUEUE, K_ATTEMPTS, K_ENQUEUED = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_DUE, K_LOCK_MS, K_REQUEUE_LOCK_MS, K_READY = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_DELAYED, K_LOCKS, K_LEASES, K_DONE = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local K_FAILED, K_ERRORS, K_NOTIFY, K_SEQ = KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local K_SUSPECTS = KEYS[17]

local MAX_NOTIFY_TOKENS = 64

-- The type each key must have, in KEYS order ('none' is always fine), and a
-- command that reads the length of that type (and fails on any other). The
-- string `seq` has none among the commands a least-privilege user is given
-- (docs/redis-layout.md): TYPE checks it.
local KEY_TYPES = { 'hash', 'hash', 'hash', 'hash', 'hash', 'hash', 'hash', 'list', 'zset',
  'zset', 'hash', 'zset', 'zset', 'hash', 'list', 'string', 'set' }
local LENGTH_OF = { hash = 'HLEN', list = 'LLEN', zset = 'ZCARD', set = 'SCARD' }

local function name_wrong_typed_key()
  for i = 1, #KEYS do
    local found = redis.call('TYPE', KEYS[i])['ok']
    if found ~= 'none' and found ~= KEY_TYPES[i] then
      error(redis.error_reply('VERMILION queue key ' .. KEYS[i] .. ' holds a ' .. found
        .. ', not a ' .. KEY_TYPES[i] .. ': the queue is damaged (clear() deletes its keys)'))
    end
  end
end

local function read_every_length()
  for i = 1, #KEYS do
    local length = LENGTH_OF[KEY_TYPES[i]]
    if length then
      redis.call(length, KEYS[i])
    else
      local found = redis.call('TYPE', KEYS[i])['ok']
      if found ~= 'none' and found ~= KEY_TYPES[i] then error('wrong type') end
    end
  end
end

-- Refuse a queue one of whose keys was overwritten with another type, before
-- the first write: Redis would raise WRONGTYPE only at the command touching
-- that key, after the script's earlier writes had been kept, and leave the
-- queue half-changed. A length read per key finds it (WRONGTYPE), at about
-- two thirds of the cost of TYPE, whose reply is a table; TYPE then names it.
local function check_key_types()
  if not pcall(read_every_length) then name_wrong_typed_key() end
end

-- The cheap half of check_key_types, for a call that reads, before its first
-- write, every key it touches (a read of the wrong type fails it there): a key
-- overwritten with a string, the usual foreign write, is found among all 17 by
-- a single MGET, which answers nil for every other type.
local function refuse_string_keys()
  local values = redis.call('MGET', unpack(KEYS))
  for i = 1, #KEYS do
    if values[i] and KEYS[i] ~= K_SEQ then name_wrong_typed_key() end
  end
end

-- read(arg)'s result; a WRONGTYPE there is reported as check_key_types() would
-- report it, naming the key (any other error is raised as it is).
local function read_or_name_key(read, arg)
  local ok, result = pcall(read, arg)
  if not ok then
    name_wrong_typed_key()
    error(result)
  end
  return result
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integer as the decimal string Redis would store. Hand these, not Lua
-- numbers, to redis.call: Redis turns a number argument into text with a
-- "%.17g" printf, and that conversion was the largest single cost of the
-- hot scripts (found with callgrind).
local function int_str(n)
  return string.format('%d', n)
end

-- int_str(base + offset) for offsets that repeat within a call (leases and
-- windows of the same length): each distinct value is formatted once.
local function offset_strings(base)
  local cache = {}
  return function(offset)
    local text = cache[offset]
    if text == nil then
      text = int_str(base + offset)
      cache[offset] = text
    end
    return text
  end
end

-- Raise a script error that _protocol.py turns into a ScriptError.
local function fail(message)
  return redis.error_reply('VERMILION ' .. message)
end

local function to_int(value, name, min)
  local n = tonumber(value)
  if n == nil or n ~= math.floor(n) or n < min then
    error(fail('bad ' .. name .. ': ' .. tostring(value)))
  end
  return n
end

-- The mid's state as of `now`:
--   'locked'  lease running        'lapsed'  lease ended, not yet reclaimed
--   'delayed' waiting for its time 'due'     delay ended, not yet moved to ready
--   'ready'   in the ready list
--   'done'    inside its de-dup window          'expired' window ended, not yet collected
--   'failed'  failed and kept in the history   nil       unknown
local function state_of(mid, now)
  if redis.call('HEXISTS', K_MESSAGES, mid) == 1 then
    local lease_end = redis.call('ZSCORE', K_LOCKS, mid)
    if lease_end then
      if tonumber(lease_end) > now then return 'locked' end
      return 'lapsed'
    end
    local due = redis.call('ZSCORE', K_DELAYED, mid)
    if due then
      if tonumber(due) > now then return 'delayed' end
      return 'due'
    end
    return 'ready'
  end
  local window_end = redis.call('ZSCORE', K_DONE, mid)
  if window_end then
    if tonumber(window_end) > now then return 'done' end
    return 'expired'
  end
  if redis.call('ZSCORE', K_FAILED, mid) then return 'failed' end
  return nil
end

local function has_requeue(mid)
  return redis.call('HEXISTS', K_REQUEUE, mid) == 1
end

-- The public MessageStatus string for a state (nil for an unknown mid).
local function public_status(state, mid)
  if state == nil then return nil end
  if state == 'ready' or state == 'due' or state == 'lapsed' then return 'queued' end
  if state == 'delayed' then return 'queued-with-backoff' end
  if state == 'failed' then return 'failed' end
  local requeue = has_requeue(mid)
  if state == 'locked' then
    if requeue then return 'locked-with-requeue' end
    return 'locked'
  end
  if state == 'done' then
    if requeue then return 'done-with-requeue' end
    return 'done-with-backoff'
  end
  -- 'expired': the window ended; the next dequeue collects the mid, or starts
  -- its pending requeue. Until then it still counts as done.
  if requeue then return 'done-with-requeue' end
  return 'done-awaiting-gc'
end

-- Delete the per-life fields of a mid that has left the live sets.
local function forget_life(mid)
  redis.call('HDEL', K_MESSAGES, mid)
  redis.call('HDEL', K_ATTEMPTS, mid)
  redis.call('HDEL', K_ENQUEUED, mid)
  redis.call('HDEL', K_DUE, mid)
  redis.call('HDEL', K_LOCK_MS, mid)
end

-- Run `command key item...` over a list in slices: Lua's unpack() fails
-- beyond a few thousand values.
local function call_in_slices(command, key, items)
  local slice = 1000
  for first = 1, #items, slice do
    redis.call(command, key, unpack(items, first, math.min(first + slice - 1, #items)))
  end
end

-- One token per message that became ready or changed what is due, so that
-- as many idle workers wake as there is work for (at most 64 tokens wait).
-- Like call_in_slices, for a read: the replies of the slices, joined in order.
local function fetch_in_slices(command, key, items)
  local slice = 1000
  local out = {}
  for first = 1, #items, slice do
    local part = redis.call(command, key, unpack(items, first, math.min(first + slice - 1, #items)))
    for _, value in ipairs(part) do out[#out + 1] = value end
  end
  return out
end

local function wake_workers(count)
  if count <= 0 then return end
  local tokens = {}
  for i = 1, math.min(count, MAX_NOTIFY_TOKENS) do tokens[i] = '1' end
  if redis.call('LPUSH', K_NOTIFY, unpack(tokens)) > MAX_NOTIFY_TOKENS then
    redis.call('LTRIM', K_NOTIFY, 0, MAX_NOTIFY_TOKENS - 1)
  end
end

-- Start a new life for a mid from its pending requeue: ready now, attempt 1.
-- Pre: the mid is in no live set and `requeue[mid]` exists.
local function apply_requeue(mid, now)
  local payload = redis.call('HGET', K_REQUEUE, mid)
  local lock = redis.call('HGET', K_REQUEUE_LOCK_MS, mid)
  redis.call('HDEL', K_REQUEUE, mid)
  redis.call('HDEL', K_REQUEUE_LOCK_MS, mid)
  redis.call('HDEL', K_ATTEMPTS, mid)
  if lock then
    redis.call('HSET', K_LOCK_MS, mid, lock)
  else
    redis.call('HDEL', K_LOCK_MS, mid)
  end
  redis.call('HSET', K_MESSAGES, mid, payload)
  redis.call('HSET', K_ENQUEUED, mid, int_str(now))
  redis.call('HSET', K_DUE, mid, int_str(now))
  redis.call('RPUSH', K_READY, mid)
end
