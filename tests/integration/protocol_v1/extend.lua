#!lua flags=allow-oom
-- extend.lua: renew a batch of leases, each fenced by its lease token.
--
-- KEYS: the seventeen queue keys listed in _common.lua.
-- ARGV: groups of three, one per lease:
--   mid        message id
--   token      integer lease token the message was handed out with
--   lock_ms    integer ms > 0: the lease now ends at now + lock_ms
-- Reply: one integer per lease: 1 renewed, 0 lost (reclaimed, acked or cleared).
--
-- A lease that lapsed but was not yet reclaimed is still the holder's, and is
-- renewed: nobody else can have been handed the message meanwhile.
-- Invariants: every argument is checked before the first write; only the
-- `locks` score of a current lease changes (ZADD XX never adds a member).
-- allow-oom: renewing a lease never grows memory (ZADD XX changes a score in
-- place), and refusing it when memory is full would let running handlers lose
-- their leases to a second worker.

--#include _state

check_key_types()
local GROUP = 3
if #ARGV % GROUP ~= 0 then
  return fail('extend expects groups of ' .. GROUP .. ' arguments')
end
local leases = {}
for i = 1, #ARGV, GROUP do
  to_int(ARGV[i + 1], 'token', 1)
  leases[#leases + 1] = {
    mid = ARGV[i],
    token = ARGV[i + 1],
    lock = to_int(ARGV[i + 2], 'lock_ms', 1),
  }
end

local now = now_ms()
local lease_end = offset_strings(now)
local replies = {}
for i, lease in ipairs(leases) do
  if redis.call('HGET', K_LEASES, lease.mid) == lease.token then
    redis.call('ZADD', K_LOCKS, 'XX', lease_end(lease.lock), lease.mid)
    replies[i] = 1
  else
    replies[i] = 0
  end
end
return replies
