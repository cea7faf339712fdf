-- _common.lua: helpers shared by every vermilion script (protocol version 2).
--
-- _scripts.py places this text after a script's optional `#!lua` line and
-- before the script's own body. It performs no command when loaded, and holds
-- only what enqueue's one-new-message path needs: defining a helper costs
-- server time on every call, so the encodings and checks are in _layout.lua
-- and the state rules in _state.lua, included by the scripts that need them.
--
-- KEYS (identical order in every script; all share the hash tag `{<queue>}`,
-- and are named vermilion:{<queue>}:v2:<part>):
--   1  mids     set    every mid the queue knows: live, inside a de-dup window, or failed
--   2  ready    list   entries of the messages ready now, handed out from the head
--   3  records  hash   mid -> record of a message that was handed out, is delayed, or was
--                      updated while ready (a fresh message waiting in `ready` has none)
--   4  delayed  zset   mid -> ms its delay or retry backoff ends
--   5  locks    zset   mid -> ms its lease lapses
--   6  done     zset   mid -> ms its de-duplication window ends
--   7  requeue  hash   mid -> pending requeue (while the mid is locked or done)
--   8  failed   zset   mid -> ms it failed (bounded history)
--   9  errors   hash   mid -> failure record (encoded in _history.lua)
--   10 notify   list   wake-up tokens for idle workers (at most 64)
--   11 meta     hash   `version` (2), `seq` (the last lease token handed out),
--                      `failed_bytes` (the sum of the failure records' lengths) and
--                      `failed_dropped` (failures the history's bounds dropped)
--   12 clock    string TESTS ONLY, optional: the time in ms the script uses instead
--                      of TIME; a script given a 12th key refuses to run without it
--
-- Encodings (big-endian integers, struct formats in brackets):
--   entry of `ready`: kind [B] (0 pointer, 1 fresh, 2 fresh with its own lease),
--     mid length [B] (255: a [>I2] length follows), mid; a fresh entry then holds
--     enqueued ms [>I6], (kind 2) lock ms [>I5], and the payload (the rest).
--     A pointer's message is in `records`.
--   record: state [B] ('r' ready, 'd' delayed, 'l' leased), flags [B] (1 suspect,
--     2 overrides: the message's fresh entry still waits in `ready`, and this
--     record's payload and lease replace the entry's), enqueued ms [>I6], due ms
--     [>I6] (when it became or becomes ready), attempts [>I4], lock ms [>I5] (0:
--     the worker's default), lease token [>I7] (0: none), then the payload.
--   pending requeue: lock ms [>I5] (0: default), then the payload.
--
-- Invariants every script keeps (tests/checker verifies them after every call):
--   * `mids` holds exactly the live mids and those in `done` or `failed`; a mid is
--     in at most one of: live, `done`, `failed`;
--   * a live mid is in exactly one of: `ready` (one entry), `delayed`, `locks`;
--     its record, if any, says which ('r', 'd', 'l'); delayed and leased mids have
--     a record; a fresh entry's mid has no record, or an overriding one;
--   * a lease token is non-zero exactly in the record of a leased mid;
--   * `requeue[mid]` exists only while the mid is live or in `done` (it waits out a retry
--     or a reclaimed lease, and starts when the life ends);
--   * `errors` has a failure record for exactly the mids of `failed`, and `failed_bytes`
--     (absent: 0) is the sum of their lengths.
-- Time is read from the server (TIME) only, in whole milliseconds.

local K_MIDS, K_READY, K_RECORDS, K_DELAYED = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_LOCKS, K_DONE, K_REQUEUE, K_FAILED = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_ERRORS, K_NOTIFY, K_META, K_CLOCK = KEYS[9], KEYS[10], KEYS[11], KEYS[12]

local MAX_NOTIFY_TOKENS = 64
local READY, DELAYED, LEASED = 114, 100, 108 -- string.byte of 'r', 'd', 'l'
local SUSPECT, OVERRIDES = 1, 2
local POINTER, FRESH, FRESH_WITH_LEASE = 0, 1, 2
local RECORD_HEADER = '>BBI6I6I4I5I7'
local RECORD_HEADER_BYTES = 30

-- Raise a script error that _protocol.py turns into a ScriptError.
local function fail(message)
  return redis.error_reply('VERMILION ' .. message)
end

local function now_ms()
  if K_CLOCK then
    local fake = redis.call('GET', K_CLOCK)
    if not fake then error(fail('test clock key ' .. K_CLOCK .. ' is not set')) end
    return tonumber(fake)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integer as the decimal string Redis would store. Hand these, not Lua
-- numbers, to redis.call: Redis formats a number argument with "%.17g", which
-- was the largest single cost of the hot scripts (found with callgrind).
local function int_str(n)
  return string.format('%d', n)
end

