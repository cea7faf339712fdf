#!lua flags=no-writes
-- version.lua: the protocol version of a queue's data, checked by every client
-- before its first call on the queue.
--
-- KEYS: 1 meta (vermilion:{<queue>}:v2:meta), then the sixteen keys of protocol
--   version 1 but its counter `seq` (vermilion:{<queue>}:messages and so on).
-- ARGV: none.
-- Reply: [stored version (0: none), number of version-1 keys that exist,
--   the shard count `meta` keeps (0: none, an unsharded queue)].
--
-- The version is in the key names (`v2:`), and also in `meta`'s `version`
-- field, which the first hand-out and `migrate` write: a later protocol looks
-- for it. Version-1 keys found beside version-2 data (a version-1 client still
-- running) are reported too: `vermilion migrate` moves them. The shard count
-- (`meta`'s `shards`, written by a client of `Queue(..., shards=N)`) is read
-- here so that an unsharded client refuses a sharded queue at no extra call.
-- Invariants: writes nothing (flags=no-writes).

if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' and redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('VERMILION queue key ' .. KEYS[1] .. ' is not a hash: the queue is damaged')
end
local v1 = redis.call('EXISTS', unpack(KEYS, 2))
local fields = redis.call('HMGET', KEYS[1], 'version', 'shards')
local version = tonumber(fields[1] or '0') or -1
local shards = tonumber(fields[2] or '0') or -1
return { version, v1, shards }
