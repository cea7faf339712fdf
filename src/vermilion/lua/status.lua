#!lua flags=no-writes
-- status.lua: the public status of one message (read-only).
--
-- KEYS: the queue keys listed in _common.lua.
-- ARGV:
--   1 mid   message id
-- Reply: [status] where status is one of 'queued', 'queued-with-backoff',
--   'locked', 'locked-with-requeue', 'done-awaiting-gc', 'done-with-backoff',
--   'done-with-requeue', 'failed'; or an empty array for an unknown mid.
--
-- The status is the one housekeeping would give now: a lapsed lease or an
-- ended delay reads 'queued' even before a dequeue has moved it. A de-dup
-- window that ended reads 'done-awaiting-gc' (or 'done-with-requeue') until a
-- dequeue collects it, as `counts` counts it among the done.
-- Invariants: writes nothing (flags=no-writes), so it runs on replicas and
-- during CLIENT PAUSE WRITE.

--#include _layout
--#include _state

check_key_types()
local mid = ARGV[1]
local status = public_status(state_of(mid, now_ms()), mid)
if status == nil then return {} end
return { status }
