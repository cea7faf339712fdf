"""Calls over many queues at once: ``queue_names`` and ``clear_queues``; and
``queue_shards``, for tools that open any queue.

Each makes its own ``ScriptClient`` on the caller's client and closes only
what it opened (a cluster's node connections), never the client itself.
"""

from __future__ import annotations

from ._keys import QueueKeys
from ._protocol import ScriptClient
from ._redis_internals import RedisClient
from ._shards import shard_keys, stored_shards
from ._validation import check_queue_name

__all__ = ["clear_queues", "queue_names", "queue_shards"]


async def queue_names(redis: RedisClient, pattern: str = "*") -> list[str]:
    """The sorted names of the queues that have any key in Redis, matching ``pattern``.

    ``pattern`` is a Redis glob over queue names (``*``, ``?``, ``[abc]``).
    On a Redis Cluster every master is scanned.
    A key that looks like vermilion's but holds no valid queue name (written by
    hand or by another tool, or not UTF-8) is skipped with a warning.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    if not pattern or "{" in pattern or "}" in pattern:
        raise ValueError("pattern must be a non-empty glob without braces")
    connection = ScriptClient(redis)
    try:
        return sorted([name async for name in connection.scan_queue_names(pattern)])
    finally:
        await connection.aclose()  # a cluster's node connections; never the user's client


async def clear_queues(redis: RedisClient, *names: str) -> int:
    """Delete every key of the named queues. Returns how many live messages were removed.

    Every name is checked before anything is deleted; names are exact, never patterns.
    """
    checked = [check_queue_name(name) for name in names]
    connection = ScriptClient(redis)
    removed = 0
    try:
        for name in checked:
            count = await stored_shards(connection.transport, QueueKeys.for_queue(name))
            for keys in shard_keys(name, count):  # a sharded queue: every shard
                removed += await connection.clear(keys)
    finally:
        await connection.aclose()
    return removed


async def queue_shards(redis: RedisClient, name: str) -> int:
    """The shard count a queue keeps in Redis: 1 for an unsharded (or unknown) queue.

    For tools that serve any queue: ``Queue(name, redis=client, shards=await
    queue_shards(client, name))`` is refused by no queue.
    """
    keys = QueueKeys.for_queue(check_queue_name(name))
    connection = ScriptClient(redis)
    try:
        return await stored_shards(connection.transport, keys)
    finally:
        await connection.aclose()
