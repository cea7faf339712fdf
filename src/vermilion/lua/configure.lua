-- configure.lua: set, remove or read a queue's settings (flow control).
--
-- KEYS: the queue keys listed in _common.lua (only `meta` is touched).
-- ARGV: pairs of `name`, `value`: an integer within the setting's range, or ''
--   to remove the setting. No pairs: only read.
--   max_size  integer >= 1: the most live messages (ready, delayed or leased)
--             an enqueue may leave in the queue (see enqueue.lua)
--   rate_limit        integer >= 1: the most messages dequeue hands out per window
--   rate_interval_ms  integer >= 1: the window's length (absent: 1000)
--   max_per_key       integer >= 1: the most messages of one key leased at once
-- Reply: the settings in force after the call, as a flat array of `name`,
--   `value` (integer) pairs, in the order above; an absent setting is left out.
--
-- Settings are fields of `meta`, absent unless set: a queue that uses none
-- holds none, and the scripts that read one pay nothing on a queue without it
-- (enqueue reads only whether `max_size` exists; dequeue reads the rate limit
-- in the HMGET of `meta` it makes anyway). clear() keeps them, with `meta`.
-- Invariants: every pair is checked before the first write; writes only `meta`.

--#include _layout

local SETTINGS = { 'max_size', 'rate_limit', 'rate_interval_ms', 'max_per_key' }
local MINIMUM = { max_size = 1, rate_limit = 1, rate_interval_ms = 1, max_per_key = 1 }

if #ARGV % 2 ~= 0 then return fail('configure expects (name, value) pairs') end
if redis.call('TYPE', K_META)['ok'] ~= 'hash' and redis.call('EXISTS', K_META) == 1 then
  return fail('queue key ' .. K_META .. ' is not a hash: the queue is damaged (clear() repairs it)')
end
local sets, removes = {}, {}
for i = 1, #ARGV, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  if MINIMUM[name] == nil then return fail('unknown setting ' .. string.format('%q', name)) end
  if value == '' then
    removes[#removes + 1] = name
  else
    sets[#sets + 1], sets[#sets + 2] = name, int_str(to_int(value, name, MINIMUM[name]))
  end
end
if #removes > 0 then redis.call('HDEL', K_META, unpack(removes)) end
if #sets > 0 then redis.call('HSET', K_META, unpack(sets)) end

local reply = {}
local values = redis.call('HMGET', K_META, unpack(SETTINGS))
for i, name in ipairs(SETTINGS) do
  local n = stored_int(values[i], 0, MAX_EXACT)
  if n then reply[#reply + 1], reply[#reply + 2] = name, n end
end
return reply
