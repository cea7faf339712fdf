-- clear.lua: delete every key of one queue.
--
-- KEYS: the queue keys listed in _common.lua.
-- ARGV: none.
-- Reply: the number of messages that were live (queued, delayed or locked).
--
-- Workers holding leases of cleared messages find their acks and extends
-- stale. `meta` is kept (one small hash, without the failure history's byte
-- total, which the history takes with it): its lease-token counter keeps
-- growing, so an old holder's token can never match a new lease, and the
-- protocol version stays recorded; queue_names() does not count a queue that
-- has only this key.
-- A damaged `seq` (no integer, beyond 2^53: dequeue refuses it) is replaced by
-- the server time in microseconds: beyond any token the damaged counter can
-- have handed out in practice, so the fence still holds. A `meta` of another
-- type is deleted and written again.
-- Invariants: deletes only the exact keys passed, never a pattern; writes
-- nothing but deletions, and the reseeding of a damaged `meta` after them (so
-- it runs even when memory is full).

--#include _layout

-- A damaged queue (a key overwritten with another type) is cleared too: this
-- is its repair.
local function count_of(key, expected, length)
  if redis.call('TYPE', key)['ok'] == expected then return redis.call(length, key) end
  return 0
end
local live = count_of(K_MIDS, 'set', 'SCARD') - count_of(K_DONE, 'zset', 'ZCARD')
  - count_of(K_FAILED, 'zset', 'ZCARD')
if live < 0 then live = 0 end

local function meta_is_damaged()
  local found = redis.call('TYPE', K_META)['ok']
  if found == 'none' then return false end
  if found ~= 'hash' then return true end
  local seq = redis.call('HGET', K_META, 'seq')
  return seq ~= false and not (string.find(seq, '^%d+$') and stored_int(seq, 0, MAX_TOKEN))
end

local reseed = meta_is_damaged()
local doomed = {}
for i = 1, 10 do doomed[#doomed + 1] = KEYS[i] end
if reseed then doomed[#doomed + 1] = K_META end
redis.call('DEL', unpack(doomed))
if not reseed and redis.call('TYPE', K_META)['ok'] == 'hash' then
  -- The history is gone, and its byte total with it; the drop counter stays.
  redis.call('HDEL', K_META, 'failed_bytes')
end
if reseed then
  redis.call('HSET', K_META, 'version', '2', 'seq', int_str(now_ms() * 1000))
end
return live
