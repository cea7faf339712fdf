-- presence.lua: announce, withdraw or list the live workers of a queue.
--
-- KEYS: 1 workers  zset    worker id -> ms its presence expires (the index)
--       2 worker   string  the worker's record (`beat` and `stop` only): the JSON
--                          the worker sends, kept as given, with a PX TTL
-- ARGV: op, then per op:
--   beat  id (string), ttl_ms (integer ms > 0: the record and its index entry
--         expire this long from now), prune (0/1: also drop expired index
--         entries), record (bytes)
--   stop  id (string)
--   list  none
-- Reply: beat: now_ms; stop: 1 if the record existed, else 0; list: now_ms, then
--   id, expires_ms for each worker whose presence has not expired, earliest
--   expiry first.
-- Cost: a beat is TIME, ZADD and SET (and ZREMRANGEBYSCORE with prune): an idle
-- worker beats rarely (every 30 s by default), see docs/operating.md.
-- Invariants: touches only the keys passed (never the queue's message keys);
-- the record and its index entry expire at the same ms, so a worker that dies
-- disappears from both; an index entry may outlive its record until the next
-- prune (a `beat` with prune, or a `list`), and readers skip it.

local K_WORKERS, K_WORKER = KEYS[1], KEYS[2]
local op = ARGV[1]

if op == 'list' then
  local now = now_ms()
  redis.call('ZREMRANGEBYSCORE', K_WORKERS, '-inf', now)
  local reply = { now }
  local live = redis.call('ZRANGE', K_WORKERS, 0, -1, 'WITHSCORES')
  for i = 1, #live do reply[#reply + 1] = live[i] end
  return reply
end

local id = ARGV[2]
if id == nil or id == '' then return fail('presence: the worker id is missing') end

if op == 'stop' then
  local existed = redis.call('DEL', K_WORKER)
  redis.call('ZREM', K_WORKERS, id)
  return existed
end

if op ~= 'beat' then return fail('presence: unknown op ' .. tostring(op)) end
local ttl = tonumber(ARGV[3])
if ttl == nil or ttl < 1 or ttl ~= math.floor(ttl) then
  return fail('presence: ttl_ms must be a whole number of ms above 0, got ' .. tostring(ARGV[3]))
end
local record = ARGV[5]
if record == nil then return fail('presence: the record is missing') end
local now = now_ms()
-- ZADD first: on an index of the wrong type it fails before anything is written
-- (SET would have replaced a record of any type).
redis.call('ZADD', K_WORKERS, int_str(now + ttl), id)
redis.call('SET', K_WORKER, record, 'PX', int_str(ttl))
if ARGV[4] == '1' then redis.call('ZREMRANGEBYSCORE', K_WORKERS, '-inf', now) end
return now
