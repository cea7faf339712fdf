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
-- Invariants: deletes only the exact keys passed, never a pattern; writes
-- nothing but deletions (so it runs even when memory is full).

-- A damaged queue (a key overwritten with another type) is cleared too: this
-- is its repair.
local live = 0
if redis.call('TYPE', K_MESSAGES)['ok'] == 'hash' then live = redis.call('HLEN', K_MESSAGES) end
local data_keys = {}
for _, key in ipairs(KEYS) do
  if key ~= K_SEQ then data_keys[#data_keys + 1] = key end
end
redis.call('DEL', unpack(data_keys))
return live
