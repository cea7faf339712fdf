#!lua flags=no-writes
-- failed.lua: a page of the failure history, newest first (read-only).
--
-- KEYS: the queue keys listed in _common.lua.
-- ARGV:
--   1 offset  integer >= 0: how many of the newest entries to skip
--   2 limit   integer 0-10000: at most this many entries
-- Reply: [total entries in the history, then six entries per failure:
--   mid, failed_ms, attempts, has_payload (1/0: 0 for a failure migrated from
--   protocol version 1), payload ('' when has_payload is 0), reason]
-- Entries failed in the same ms come in reverse order of their mids.
-- Invariants: writes nothing (flags=no-writes); O(log n + limit).

--#include _layout
--#include _state
--#include _history

check_key_types()
local offset = to_int(ARGV[1], 'offset', 0)
local limit = to_int(ARGV[2], 'limit', 0)
if limit > 10000 then return fail('limit above 10000') end

local reply = { redis.call('ZCARD', K_FAILED) }
if limit == 0 then return reply end
local page = redis.call('ZRANGE', K_FAILED, offset, offset + limit - 1, 'REV', 'WITHSCORES')
if #page == 0 then return reply end
local mids = {}
for i = 1, #page, 2 do mids[#mids + 1] = page[i] end
local records = fetch_in_slices('HMGET', K_ERRORS, mids)
for i, mid in ipairs(mids) do
  local f = parse_failure(records[i] or nil)
  reply[#reply + 1] = mid
  reply[#reply + 1] = stored_int(page[2 * i], 0, MAX_EXACT) or 0
  reply[#reply + 1] = f.attempts
  if f.payload then
    reply[#reply + 1] = 1
    reply[#reply + 1] = f.payload
  else
    reply[#reply + 1] = 0
    reply[#reply + 1] = ''
  end
  reply[#reply + 1] = f.reason
end
return reply
