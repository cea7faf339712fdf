-- migrate.lua: move a queue's data from protocol version 1 to version 2, a
-- bounded slice per call; `vermilion migrate` calls it until it answers 0.
--
-- KEYS: the eleven version-2 queue keys listed in _common.lua (optionally the
--   test clock after them), then the seventeen keys of version 1 in their
--   order: messages, requeue, attempts, enqueued, due, lock_ms,
--   requeue_lock_ms, ready, delayed, locks, leases, done, failed, errors,
--   notify, seq, suspects.
-- ARGV: 1 limit  integer >= 1: at most this many mids of each kind moved per call.
-- Reply: [mids moved by this call, version-1 entries still to move].
--
-- Each mid keeps its state, order, payload, attempts, times, own lease, lease
-- token, suspect mark, de-dup window, failure record and pending requeue. A
-- failure keeps its time and reason; version 1 kept no payload, so its failure
-- record has none (flags 0, attempts 0), and the history's byte total grows
-- by its length. The lease counter continues from the larger of both versions'
-- counters, so a migrated lease token is never handed out again. When nothing of version 1 is
-- left, its keys are gone and `meta` records version 2.
-- Safe to repeat and to interrupt: each call is atomic and moves whole mids.
-- A version-1 worker still holding a lease finds its ack stale (it writes to
-- the version-1 keys): the message is handed out again when its lease lapses,
-- as after a crash. Stop version-1 workers before migrating.

--#include _layout
--#include _state
--#include _history

-- KEYS[12] is the test clock only when it is given (29 keys): else it is the
-- first version-1 key, which _common.lua would read as a clock.
local V1_FIRST = 11
if #KEYS == 29 then V1_FIRST = 12 else K_CLOCK = nil end
local V1 = {}
for i, part in ipairs({ 'messages', 'requeue', 'attempts', 'enqueued', 'due', 'lock_ms',
  'requeue_lock_ms', 'ready', 'delayed', 'locks', 'leases', 'done', 'failed', 'errors', 'notify',
  'seq', 'suspects' }) do
  V1[part] = KEYS[V1_FIRST + i]
end
local limit = to_int(ARGV[1], 'limit', 1)
check_key_types()
local now = now_ms()

local function v1_field(part, mid)
  return redis.call('HGET', V1[part], mid)
end

-- Everything version 1 holds of a live mid, as a version-2 record (nil if its
-- payload is gone), and deletes it from the version-1 hashes.
local function take_live(mid, state)
  local payload = v1_field('messages', mid)
  local r = nil
  if payload then
    local lock = stored_int(v1_field('lock_ms', mid), 1, MAX_LOCK_MS) or 0
    local enqueued = stored_int(v1_field('enqueued', mid), 0, MAX_EXACT) or now
    local due = stored_int(v1_field('due', mid), 0, MAX_EXACT) or enqueued
    local attempts = stored_int(v1_field('attempts', mid), 0, 4294967295) or 0
    local flags = 0
    if redis.call('SISMEMBER', V1.suspects, mid) == 1 then flags = SUSPECT end
    r = { state = state, flags = flags, enqueued = enqueued, due = due, attempts = attempts,
      lock = lock, token = 0, payload = payload }
  end
  for _, part in ipairs({ 'messages', 'attempts', 'enqueued', 'due', 'lock_ms', 'leases' }) do
    redis.call('HDEL', V1[part], mid)
  end
  redis.call('SREM', V1.suspects, mid)
  return r
end

local function take_requeue(mid)
  local payload = v1_field('requeue', mid)
  if payload then
    local lock = stored_int(v1_field('requeue_lock_ms', mid), 1, MAX_LOCK_MS) or 0
    redis.call('HSET', K_REQUEUE, mid, struct.pack('>I5', lock) .. payload)
  end
  redis.call('HDEL', V1.requeue, mid)
  redis.call('HDEL', V1.requeue_lock_ms, mid)
end

-- Whether a live version-1 mid may be added to version 2. A mid already
-- there was enqueued again by a version-1 producer after an earlier slice had
-- moved it: it takes the place of a failure record or an ended window, as an
-- enqueue would; beside a live mid or a running window it is a duplicate
-- that an enqueue would have refused, and is dropped.
local function claim_mid(mid)
  if redis.call('SADD', K_MIDS, mid) == 1 then return true end
  if redis.call('HEXISTS', K_RECORDS, mid) == 1 or redis.call('HEXISTS', K_REQUEUE, mid) == 1 then
    return false
  end
  local window_end = tonumber(redis.call('ZSCORE', K_DONE, mid))
  if window_end and window_end > now then return false end
  if not window_end and not redis.call('ZSCORE', K_FAILED, mid) then return false end  -- fresh in `ready`
  redis.call('ZREM', K_DONE, mid)
  forget_failure(mid)
  return true
end

local moved = 0
local woken = 0

local function move_ready()
  local mids = redis.call('LRANGE', V1.ready, 0, limit - 1)
  for _, mid in ipairs(mids) do
    redis.call('LPOP', V1.ready)
    local r = take_live(mid, READY)
    if r and claim_mid(mid) then
      if r.attempts == 0 and r.flags == 0 then
        local lock = nil
        if r.lock > 0 then lock = r.lock end
        redis.call('RPUSH', K_READY, fresh_entry(mid, r.enqueued, lock, r.payload))
      else
        redis.call('HSET', K_RECORDS, mid, pack_record(r))
        redis.call('RPUSH', K_READY, pointer_entry(mid))
      end
      -- A lapsed lease reclaimed by version 1 keeps its pending requeue.
      take_requeue(mid)
      woken = woken + 1
    end
    moved = moved + 1
  end
end

local function move_scored(part, state, target)
  local entries = redis.call('ZRANGE', V1[part], 0, limit - 1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    local mid, score = entries[i], entries[i + 1]
    local token = v1_field('leases', mid)
    redis.call('ZREM', V1[part], mid)
    local r = take_live(mid, state)
    if r and claim_mid(mid) then
      if state == LEASED then r.token = stored_int(token, 1, MAX_TOKEN) or 0 end
      if state == DELAYED then r.due = tonumber(score) end
      if state == LEASED and r.token == 0 then
        -- A lease without its token cannot be acknowledged: reclaim it now.
        r.state = READY
        if not has_flag(r.flags, SUSPECT) then r.flags = r.flags + SUSPECT end
        redis.call('HSET', K_RECORDS, mid, pack_record(r))
        redis.call('LPUSH', K_READY, pointer_entry(mid))
      else
        redis.call('HSET', K_RECORDS, mid, pack_record(r))
        redis.call('ZADD', target, score, mid)
      end
      -- Leased, or (a retry of a leased mid) delayed: either keeps its requeue.
      take_requeue(mid)
      woken = woken + 1
    end
    moved = moved + 1
  end
end

local function move_finished()
  local entries = redis.call('ZRANGE', V1.done, 0, limit - 1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    local mid = entries[i]
    redis.call('ZREM', V1.done, mid)
    if redis.call('SADD', K_MIDS, mid) == 1 then
      redis.call('ZADD', K_DONE, entries[i + 1], mid)
      take_requeue(mid)
    end
    moved = moved + 1
  end
  entries = redis.call('ZRANGE', V1.failed, 0, limit - 1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    local mid = entries[i]
    local reason = v1_field('errors', mid)
    redis.call('ZREM', V1.failed, mid)
    redis.call('HDEL', V1.errors, mid)
    if redis.call('SADD', K_MIDS, mid) == 1 then
      -- Version 1 kept no payload, nor the attempts of the life that failed.
      local failure = pack_failure(0, 0, reason or '', nil)
      redis.call('ZADD', K_FAILED, entries[i + 1], mid)
      redis.call('HSET', K_ERRORS, mid, failure)
      add_history_bytes(#failure)
    end
    moved = moved + 1
  end
end

-- The counter first: a migrated lease token must stay below the next one.
local v1_seq = stored_int(redis.call('TYPE', V1.seq)['ok'] == 'string'
  and redis.call('GET', V1.seq) or nil, 0, MAX_TOKEN) or 0
local v2_seq = stored_int(redis.call('HGET', K_META, 'seq'), 0, MAX_TOKEN) or 0
if v1_seq > v2_seq then redis.call('HSET', K_META, 'seq', int_str(v1_seq)) end

move_ready()
move_scored('delayed', DELAYED, K_DELAYED)
move_scored('locks', LEASED, K_LOCKS)
move_finished()
wake_workers(woken)

local left = redis.call('LLEN', V1.ready) + redis.call('ZCARD', V1.delayed)
  + redis.call('ZCARD', V1.locks) + redis.call('ZCARD', V1.done) + redis.call('ZCARD', V1.failed)
if left == 0 then
  -- What is left of version 1 belongs to no message: orphaned fields, tokens.
  local rest = {}
  for _, key in pairs(V1) do rest[#rest + 1] = key end
  redis.call('DEL', unpack(rest))
  redis.call('HSET', K_META, 'version', '2')
end
return { moved, left }
