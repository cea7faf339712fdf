-- clear.lua: delete every key of one queue.
--
-- KEYS: the sixteen queue keys listed in _common.lua.
-- ARGV: none.
-- Reply: the number of messages that were live (queued, delayed or locked).
--
-- Workers holding leases of cleared messages find their acks and extends
-- stale; lease tokens restart from the clock, so they can never match again.
-- Invariants: deletes only the exact keys passed, never a pattern; writes
-- nothing but deletions (so it runs even when memory is full).

local live = redis.call('HLEN', K_MESSAGES)
redis.call('DEL', unpack(KEYS))
return live
