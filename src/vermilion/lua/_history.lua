-- _history.lua: the failure history (`failed`, `errors` and two fields of
-- `meta`), for the scripts that read or change it: a line `--#include _history`
-- stands for this text, after `--#include _layout`. It performs no command
-- when loaded.
--
-- A failure record (the value of `errors[mid]`): flags [B] (1: the payload is
-- kept; 0: a failure migrated from protocol version 1, which kept none),
-- attempts [>I4], lock ms [>I5] (0: the worker's default), reason length
-- [>I4], the reason, then the payload (the rest). `failed[mid]` is the ms it
-- failed. `meta` holds `failed_bytes`, the sum of the lengths of the failure
-- records, and `failed_dropped`, how many entries the bounds dropped.

local FAILURE_HEADER = '>BI4I5I4'
local FAILURE_HEADER_BYTES = 14
local HAS_PAYLOAD = 1

local function pack_failure(attempts, lock, reason, payload)
  if payload == nil then
    return struct.pack(FAILURE_HEADER, 0, attempts, lock, #reason) .. reason
  end
  return struct.pack(FAILURE_HEADER, HAS_PAYLOAD, attempts, lock, #reason) .. reason .. payload
end

-- A failure record as a table, or one with no payload and the bytes as the
-- reason for bytes no script wrote (an entry left by hand still reads).
local function parse_failure(bytes)
  bytes = bytes or ''
  if #bytes >= FAILURE_HEADER_BYTES then
    local flags, attempts, lock, n = struct.unpack(FAILURE_HEADER, bytes)
    if (flags == 0 or flags == HAS_PAYLOAD) and #bytes >= FAILURE_HEADER_BYTES + n then
      local f = { attempts = attempts, lock = lock,
        reason = string.sub(bytes, FAILURE_HEADER_BYTES + 1, FAILURE_HEADER_BYTES + n) }
      if flags == HAS_PAYLOAD then f.payload = string.sub(bytes, FAILURE_HEADER_BYTES + n + 1) end
      return f
    end
  end
  return { attempts = 0, lock = 0, reason = bytes }
end

local function add_history_bytes(delta)
  if delta ~= 0 then redis.call('HINCRBY', K_META, 'failed_bytes', int_str(delta)) end
end

local function history_bytes()
  return stored_int(redis.call('HGET', K_META, 'failed_bytes'), 0, MAX_EXACT) or 0
end

-- Remove mids from the history (each must be in it; the caller decides
-- whether the queue forgets them), with `sizes` their records' lengths.
local function remove_from_history(mids, sizes)
  if #mids == 0 then return end
  local total = 0
  for _, size in ipairs(sizes) do total = total + size end
  call_in_slices('ZREM', K_FAILED, mids)
  call_in_slices('HDEL', K_ERRORS, mids)
  add_history_bytes(-total)
end

-- Clear the failure of a mid that starts a new life (its record and its bytes).
local function forget_failure(mid)
  local record = redis.call('HGET', K_ERRORS, mid)
  redis.call('ZREM', K_FAILED, mid)
  if record then
    redis.call('HDEL', K_ERRORS, mid)
    add_history_bytes(-#record)
  end
end

-- Drop the oldest entries (and forget their mids) until the history holds at
-- most max_count entries and max_bytes bytes; each drop is counted.
local function trim_history(max_count, max_bytes)
  local count, bytes = redis.call('ZCARD', K_FAILED), history_bytes()
  local dropped, sizes = {}, {}
  local first = 0
  while count > max_count or bytes > max_bytes do
    local batch = math.min(math.max(count - max_count, 16), 1000)
    local oldest = redis.call('ZRANGE', K_FAILED, first, first + batch - 1)
    if #oldest == 0 then break end
    local records = fetch_in_slices('HMGET', K_ERRORS, oldest)
    for i, mid in ipairs(oldest) do
      if count <= max_count and bytes <= max_bytes then break end
      local size = records[i] and #records[i] or 0
      dropped[#dropped + 1], sizes[#sizes + 1] = mid, size
      count, bytes = count - 1, bytes - size
    end
    first = first + #oldest
  end
  if #dropped == 0 then return end
  remove_from_history(dropped, sizes)
  call_in_slices('SREM', K_MIDS, dropped)
  redis.call('HINCRBY', K_META, 'failed_dropped', int_str(#dropped))
end

-- What a replay or purge call names: 'mids' then mids, or 'all', limit (1 to
-- max_limit), up_to (ms, or '' for now) and `extra` more arguments. Returns
-- the mode, the limit and up_to; raises on a bad argument, before any write.
local function parse_selection(max_limit, extra, usage)
  local mode = ARGV[1]
  if mode == 'mids' then
    for i = 2, #ARGV do
      if ARGV[i] == '' then error(fail('empty mid')) end
    end
    return mode, 0, 0
  end
  if mode ~= 'all' or #ARGV ~= 3 + extra then error(fail(usage)) end
  local limit = to_int(ARGV[2], 'limit', 1)
  if limit > max_limit then error(fail('limit above ' .. max_limit)) end
  local up_to = now_ms()
  if ARGV[3] ~= '' then up_to = to_int(ARGV[3], 'up_to', 0) end
  return mode, limit, up_to
end
