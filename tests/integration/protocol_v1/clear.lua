-- clear.lua: delete every key of one queue.
--
-- KEYS: the seventeen queue keys listed in _common.lua.
-- ARGV: none.
-- Reply: the number of messages that were live (queued, delayed or locked).
--
-- Workers holding leases of cleared messages find their acks and extends
-- stale. The lease-token counter `seq` is kept (one small string), so that
-- tokens keep growing and an old holder's token can never match a new lease;
-- queue_names() does not count a queue that has only this key.
-- A damaged `seq` (another type, no integer, beyond 2^53: dequeue refuses it)
-- is replaced by the server time in microseconds: beyond any token the damaged
-- counter can have handed out in practice, so the fence still holds.
-- Invariants: deletes only the exact keys passed, never a pattern; writes
-- nothing but deletions, and the one INCRBY of a damaged `seq` after them (so
-- it runs even when memory is full).

-- A damaged queue (a key overwritten with another type) is cleared too: this
-- is its repair.
local live = 0
if redis.call('TYPE', K_MESSAGES)['ok'] == 'hash' then live = redis.call('HLEN', K_MESSAGES) end

local function seq_is_damaged()
  local found = redis.call('TYPE', K_SEQ)['ok']
  if found == 'none' then return false end
  if found ~= 'string' then return true end
  local seq = redis.call('MGET', K_SEQ)[1]  -- MGET: in the ACL list already (docs/redis-layout.md)
  return not (string.find(seq, '^%d+$') and stored_int(seq, 0, MAX_TOKEN))
end

local reseed = seq_is_damaged()
local doomed = {}
for _, key in ipairs(KEYS) do
  if key ~= K_SEQ or reseed then doomed[#doomed + 1] = key end
end
redis.call('DEL', unpack(doomed))
if reseed then redis.call('INCRBY', K_SEQ, int_str(now_ms() * 1000)) end
return live
