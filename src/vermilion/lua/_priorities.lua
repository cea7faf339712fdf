-- _priorities.lua: dequeue's hand-out on a queue with priority messages.
--
-- dequeue.lua has the line `--#include _priorities` after pop_candidates(),
-- whose state (the chosen messages, `seen`, `dead`, `held_back`) these
-- functions share, and _scripts.py puts this text there. Only dequeue
-- includes it: no other script pays for defining these helpers. Priority
-- messages wait in `delayed` with scores below 0 (see _layout.lua); the
-- hand-out takes, of the head of `ready` and the next priority message, the
-- one with the earlier virtual time. It performs no command when loaded.

-- The priority message to hand out next (the lowest score below 0 in
-- `delayed`): its mid and virtual time, or nil.
local function priority_head()
  local head = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', '(0', 'WITHSCORES', 'LIMIT', 0, 1)
  if head[1] == nil then return nil end
  return head[1], tonumber(head[2]) + PRIORITY_BASE
end

-- The virtual time of the head of `ready`: when it became ready (nil: empty).
-- Bytes no script wrote come first, for pop_candidates to drop them.
local function ready_head_time()
  local head = redis.call('LINDEX', K_READY, 0)
  if not head then return nil end
  local kind, mid, e = entry_fields(head)
  if kind == nil then return -1 end
  if kind ~= POINTER then return e end
  local raw = redis.call('HGET', K_RECORDS, mid)
  if is_record(raw) then return (struct.unpack('>I6', raw, 9)) end
  return -1
end

-- Take the priority message `mid` out of `delayed` and consider it. A mid
-- whose record says it is not ready is dropped (no message stands behind
-- that place), and bytes no script wrote are handed out, as from `ready`.
local function take_priority(mid)
  redis.call('ZREM', K_DELAYED, mid)
  local raw = redis.call('HGET', K_RECORDS, mid)
  if seen[mid] or not raw then
    dead = dead + 1
    return
  end
  local r = parse_record(raw)
  if r == nil then return consider(mid, 0, now, now, 0, 0, raw) end
  if r.state ~= READY then
    dead = dead + 1
    return
  end
  consider(mid, r.flags, r.enqueued, r.due, r.attempts, r.lock, r.payload, r.key)
end

-- Of the head of `ready` and the next priority message, hand out the earlier
-- virtual time first (see _layout.lua), until max_messages are chosen.
local function pop_with_priorities()
  while #mids < max_messages and dead < DEAD_ENTRY_BUDGET and #held_back < max_messages do
    local mid, time = priority_head()
    if mid == nil then return pop_candidates(max_messages) end
    local head = ready_head_time()
    if head ~= nil and head < time then
      pop_candidates(#mids + 1)
    else
      take_priority(mid)
    end
  end
end
