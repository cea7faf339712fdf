-- purge.lua: remove entries from the failure history, and forget their mids.
--
-- KEYS: the queue keys listed in _common.lua.
-- ARGV, one of:
--   'mids', then mids (non-empty strings): remove these
--   'all', limit (integer 1-10000), up_to (integer ms, or '' for now): remove
--     the oldest `limit` entries that failed at or before up_to
-- Reply: 'mids': how many of the mids were in the history (and are removed);
--   'all': [removed, up_to].
-- A mid not in the history is left as it is (live, done or unknown).
-- Invariants: every argument is checked before the first write; the byte
-- total in `meta` falls by the length of each record removed; writes nothing
-- but deletions and that decrement (so it runs even when memory is full).

--#include _layout
--#include _state
--#include _history

check_key_types()
local mode, limit, up_to = parse_selection(10000, 0, "purge expects 'mids' then mids, or 'all', limit, up_to")

local mids = {}
if mode == 'mids' then
  local seen = {}
  for i = 2, #ARGV do
    local mid = ARGV[i]
    if not seen[mid] and redis.call('ZSCORE', K_FAILED, mid) then mids[#mids + 1] = mid end
    seen[mid] = true
  end
else
  mids = redis.call('ZRANGEBYSCORE', K_FAILED, '-inf', int_str(up_to), 'LIMIT', 0, limit)
end
if #mids > 0 then
  local sizes = {}
  for i, record in ipairs(fetch_in_slices('HMGET', K_ERRORS, mids)) do
    sizes[i] = record and #record or 0
  end
  remove_from_history(mids, sizes)
  call_in_slices('SREM', K_MIDS, mids)
end
if mode == 'mids' then return #mids end
return { #mids, up_to }
