-- _common.lua: helpers shared by every vermilion script.
--
-- _scripts.py places this text after a script's optional `#!lua` line and
-- before the script's own body, so every operation sees the same key names and
-- the same state rules. It performs no command when loaded. The helpers that
-- read and change messages' states are in _state.lua, included where needed.
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

-- The type each key must have, in KEYS order ('none' is always fine). A
-- function rather than a table built with every script: enqueue's
-- one-new-message path never needs it.
local function key_types()
  return { 'hash', 'hash', 'hash', 'hash', 'hash', 'hash', 'hash', 'list', 'zset',
    'zset', 'hash', 'zset', 'zset', 'hash', 'list', 'string', 'set' }
end

local function name_wrong_typed_key()
  local types = key_types()
  for i = 1, #KEYS do
    local found = redis.call('TYPE', KEYS[i])['ok']
    if found ~= 'none' and found ~= types[i] then
      error(redis.error_reply('VERMILION queue key ' .. KEYS[i] .. ' holds a ' .. found
        .. ', not a ' .. types[i] .. ': the queue is damaged (clear() deletes its keys)'))
    end
  end
end

-- A command that reads the length of each type (and fails on any other). The
-- string `seq` has none among the commands a least-privilege user is given
-- (docs/redis-layout.md): TYPE checks it.
local function read_every_length()
  local types = key_types()
  local LENGTH_OF = { hash = 'HLEN', list = 'LLEN', zset = 'ZCARD', set = 'SCARD' }
  for i = 1, #KEYS do
    local length = LENGTH_OF[types[i]]
    if length then
      redis.call(length, KEYS[i])
    else
      local found = redis.call('TYPE', KEYS[i])['ok']
      if found ~= 'none' and found ~= types[i] then error('wrong type') end
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

-- Raise a script error that _protocol.py turns into a ScriptError.
local function fail(message)
  return redis.error_reply('VERMILION ' .. message)
end

-- A number read from a message's field or a score, if it is a whole number
-- within [min, max]; else nil. The scripts write only such numbers, but a
-- value written by hand ('oops', -100, '1e400') must cost at most its own
-- message a default, never a script error that stops the queue's neighbours.
-- (tonumber accepts 'inf' and 'nan': the comparisons refuse both.)
local function stored_int(value, min, max)
  local n = tonumber(value)
  if n == nil or n ~= n or n < min or n > max or n ~= math.floor(n) then return nil end
  return n
end

-- Bounds of the numbers the scripts store: times in ms since the epoch and
-- leases stay exact in a double; ten years is the longest lease the client
-- sends; a lease token stays exact in a double after a full batch is added.
local MAX_EXACT = 9007199254740991
local MAX_LOCK_MS = 315360000000
local MAX_TOKEN = MAX_EXACT - 1000

local function to_int(value, name, min)
  local n = tonumber(value)
  if n == nil or n ~= math.floor(n) or n < min then
    error(fail('bad ' .. name .. ': ' .. tostring(value)))
  end
  return n
end
