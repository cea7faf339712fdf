-- _layout.lua: the key-type check, argument checks and the encodings of
-- entries and records (documented in _common.lua), for the scripts that need
-- them: a line `--#include _layout` stands for this text. It performs no
-- command when loaded.

local KEY_TYPES = { 'set', 'list', 'hash', 'zset', 'zset', 'zset', 'hash', 'zset', 'hash',
  'list', 'hash' }

local function name_wrong_typed_key()
  for i = 1, 11 do
    local found = redis.call('TYPE', KEYS[i])['ok']
    if found ~= 'none' and found ~= KEY_TYPES[i] then
      error(fail('queue key ' .. KEYS[i] .. ' holds a ' .. found .. ', not a ' .. KEY_TYPES[i]
        .. ': the queue is damaged (clear() deletes its keys)'))
    end
  end
end

local function read_every_length()
  local LENGTH_OF = { hash = 'HLEN', list = 'LLEN', zset = 'ZCARD', set = 'SCARD' }
  for i = 1, 11 do redis.call(LENGTH_OF[KEY_TYPES[i]], KEYS[i]) end
end

-- Refuse a queue one of whose keys was overwritten with another type, before
-- the first write: Redis would raise WRONGTYPE only at the command touching
-- that key, after the script's earlier writes had been kept. A length read per
-- key finds it (WRONGTYPE) more cheaply than TYPE, which then names it.
local function check_key_types()
  if not pcall(read_every_length) then name_wrong_typed_key() end
end

-- A number if it is a whole number within [min, max]; else nil.
local function stored_int(value, min, max)
  local n = tonumber(value)
  if n == nil or n ~= n or n < min or n > max or n ~= math.floor(n) then return nil end
  return n
end

-- Bounds: times in ms and leases stay exact in a double (and fit their fields);
-- ten years is the longest lease the client sends; a lease token stays exact
-- after a full batch is added.
local MAX_EXACT = 9007199254740991
local MAX_LOCK_MS = 315360000000
local MAX_TOKEN = MAX_EXACT - 1000

local function to_int(value, name, min)
  local n = tonumber(value)
  if n == nil or n ~= math.floor(n) or n < min or n > MAX_EXACT then
    error(fail('bad ' .. name .. ': ' .. tostring(value)))
  end
  return n
end

-- Priorities. A message of the default level 0 waits in `ready`. One of level
-- 1..9 (bits 4-7 of its record's flags) waits, while ready, in `delayed` under
-- a negative score, below every due time: its virtual time minus
-- PRIORITY_BASE, the virtual time being the ms it became ready minus level *
-- PRIORITY_STEP_MS. The hand-out takes, of the head of `ready` (whose virtual
-- time is when it became ready) and the lowest such score, the earlier virtual
-- time: each level is a head start of PRIORITY_STEP_MS, and no level starves.
-- `meta`'s `priorities` (1) says that a queue has had such messages: a dequeue
-- of a queue without it reads none of this.
local PRIORITY_UNIT, MAX_PRIORITY = 16, 9
local PRIORITY_STEP_MS = 10000
local PRIORITY_BASE = 4503599627370496 -- 2^52: every score of a ready message is below 0

local function priority_of(flags)
  return math.floor(flags / PRIORITY_UNIT)
end

local function priority_score(ready_ms, level)
  return int_str(ready_ms - level * PRIORITY_STEP_MS - PRIORITY_BASE)
end

-- A queue setting `meta[name]` (written by configure.lua) as an integer, or
-- nil when it is not set; a value no script wrote is refused by name.
local function setting(name)
  local value = redis.call('HGET', K_META, name)
  if not value then return nil end
  local n = stored_int(value, 0, MAX_EXACT)
  if n == nil then
    error(fail('queue key ' .. K_META .. ' holds ' .. name .. ' ' .. string.format('%q', string.sub(value, 1, 40))
      .. ', not a whole number: set it again with configure()'))
  end
  return n
end

-- How many messages are live: ready, delayed or leased (what max_size bounds).
local function live_count()
  return redis.call('LLEN', K_READY) + redis.call('ZCARD', K_DELAYED) + redis.call('ZCARD', K_LOCKS)
end

local function mid_prefix(mid)
  local n = #mid
  if n < 255 then return string.char(n) .. mid end
  return '\255' .. struct.pack('>I2', n) .. mid
end

-- The `ready` entry of a message that was never handed out.
local function fresh_entry(mid, enqueued, lock, payload)
  if lock then
    return '\2' .. mid_prefix(mid) .. struct.pack('>I6I5', enqueued, lock) .. payload
  end
  return '\1' .. mid_prefix(mid) .. struct.pack('>I6', enqueued) .. payload
end

local function pointer_entry(mid)
  return '\0' .. mid_prefix(mid)
end

local function parse_entry_unsafe(entry)
  local kind, n = string.byte(entry, 1, 2)
  local at = 3
  if n == 255 then
    n = struct.unpack('>I2', entry, 3)
    at = 5
  end
  local mid = string.sub(entry, at, at + n - 1)
  if #mid ~= n or n == 0 then error('short entry') end
  at = at + n
  if kind == POINTER then
    if at <= #entry then error('long pointer') end
    return { kind = kind, mid = mid }
  end
  if kind ~= FRESH and kind ~= FRESH_WITH_LEASE then error('bad kind') end
  if #entry < at + 5 then error('short entry') end
  local e = { kind = kind, mid = mid, lock = 0 }
  e.enqueued, at = struct.unpack('>I6', entry, at)
  if kind == FRESH_WITH_LEASE then
    if #entry < at + 4 then error('short entry') end
    e.lock, at = struct.unpack('>I5', entry, at)
  end
  e.payload = string.sub(entry, at)
  return e
end

-- An entry of `ready` as a table (kind, mid; a fresh one's enqueued, lock,
-- payload), or nil for bytes no script wrote (pushed by hand).
local function parse_entry(entry)
  local ok, e = pcall(parse_entry_unsafe, entry)
  if ok then return e end
  return nil
end

-- Whether bytes are a record a script wrote: a whole header and a known state.
local function is_record(bytes)
  if not bytes or #bytes < RECORD_HEADER_BYTES then return false end
  local state = string.byte(bytes, 1)
  return state == READY or state == DELAYED or state == LEASED
end

-- Per-key concurrency: a message enqueued with a key has the flag KEYED (4)
-- and its record holds the key before the payload ([>I2] length, the key);
-- parse_record returns it as r.key and the payload without it, pack_record
-- puts it back. `meta`'s `held:<key>` counts the messages of the key leased now.
local KEYED = 4

local function key_prefix(key)
  return struct.pack('>I2', #key) .. key
end

-- A record as a table, or nil for bytes no script wrote.
local function parse_record(bytes)
  if not is_record(bytes) then return nil end
  local r = {}
  r.state, r.flags, r.enqueued, r.due, r.attempts, r.lock, r.token = struct.unpack(RECORD_HEADER, bytes)
  local at = RECORD_HEADER_BYTES + 1
  if math.floor(r.flags / KEYED) % 2 == 1 and #bytes >= at + 1 then
    local n = struct.unpack('>I2', bytes, at)
    r.key = string.sub(bytes, at + 2, at + 1 + n)
    at = at + 2 + n
  end
  r.payload = string.sub(bytes, at)
  return r
end

local function pack_record(r)
  return struct.pack(RECORD_HEADER, r.state, r.flags, r.enqueued, r.due, r.attempts, r.lock, r.token)
    .. (r.key and key_prefix(r.key) or '') .. r.payload
end

-- The key of a record's bytes (nil: none, or bytes no script wrote). The flags
-- byte is read first: an ack or a reclaim asks this of every message, and
-- most have no key, so parsing (a table, a copy of the payload) is skipped.
local function key_of(bytes)
  if not bytes or #bytes < RECORD_HEADER_BYTES or math.floor(string.byte(bytes, 2) / KEYED) % 2 == 0 then
    return nil
  end
  local r = parse_record(bytes)
  return r and r.key
end

local function held_field(key)
  return 'held:' .. key
end

-- Count `delta` more (or fewer) leased messages for each key of `keys` (a list,
-- one entry per message); a count that reaches 0 is removed.
local function count_held(keys, delta)
  local per = {}
  for _, key in ipairs(keys) do per[key] = (per[key] or 0) + delta end
  for key, n in pairs(per) do
    if redis.call('HINCRBY', K_META, held_field(key), n) <= 0 then redis.call('HDEL', K_META, held_field(key)) end
  end
end

local function has_flag(flags, bit)
  return math.floor(flags / bit) % 2 == 1
end

-- The fields of an entry without building a table (the hand-out's hot path):
-- kind, mid, and for a fresh entry its enqueue time, own lease (0: default)
-- and payload; nil for bytes no script wrote.
local function entry_fields(entry)
  local kind, n = string.byte(entry, 1, 2)
  if n == nil or n == 0 or n == 255 or kind > FRESH_WITH_LEASE then
    local e = parse_entry(entry)
    if e == nil then return nil end
    return e.kind, e.mid, e.enqueued, e.lock, e.payload
  end
  local mid = string.sub(entry, 3, 2 + n)
  if kind == POINTER then
    if #entry ~= 2 + n then return nil end
    return kind, mid
  end
  local at = 3 + n
  if kind == FRESH then
    if #entry < at + 5 then return nil end
    return kind, mid, (struct.unpack('>I6', entry, at)), 0, string.sub(entry, at + 6)
  end
  if #entry < at + 10 then return nil end
  local enqueued, lock = struct.unpack('>I6I5', entry, at)
  return kind, mid, enqueued, lock, string.sub(entry, at + 11)
end

-- A record's state byte and lease token, without copying its payload; nil for
-- bytes no script wrote.
local function record_state_and_token(bytes)
  if not bytes or #bytes < RECORD_HEADER_BYTES then return nil end
  local state = string.byte(bytes, 1)
  if state ~= READY and state ~= DELAYED and state ~= LEASED then return nil end
  return state, (struct.unpack('>I7', bytes, 24))
end
