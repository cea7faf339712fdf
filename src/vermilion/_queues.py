"""Calls over many queues at once: ``queue_names`` and ``clear_queues``; and
``queue_shards``, for tools that open any queue.

Each makes its own ``ScriptClient`` on the caller's client and closes only
what it opened (a cluster's node connections), never the client itself.
"""

from __future__ import annotations

from ._keys import QueueKeys, queue_name_of, scan_pattern, workers_index_queue_name
from ._presence_calls import live_workers
from ._protocol import ScriptClient
from ._redis_internals import RedisClient
from ._shards import shard_keys, stored_shards
from ._validation import check_queue_name

__all__ = ["clear_queues", "queue_names", "queue_shards"]


async def queue_names(redis: RedisClient, pattern: str = "*", *, with_workers: bool = False) -> list[str]:
    """The sorted names of the queues that have any key in Redis, matching ``pattern``.

    ``pattern`` is a Redis glob over queue names (``*``, ``?``, ``[abc]``).
    On a Redis Cluster every master is scanned.
    A key that looks like vermilion's but holds no valid queue name (written by
    hand or by another tool, or not UTF-8) is skipped with a warning.

    A queue's live workers are not its data, so a queue that holds no message
    is not listed even while workers wait on it; nor is a busy queue at a
    moment when its workers have handled everything. ``with_workers=True``
    also lists the queues that have a live worker (a tool that watches the
    queues, such as the dashboard, wants those); it reads the workers of each
    queue that has no other key, one script call each.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    if not pattern or "{" in pattern or "}" in pattern:
        raise ValueError("pattern must be a non-empty glob without braces")
    if not isinstance(with_workers, bool):
        raise TypeError(f"with_workers must be a bool, not {type(with_workers).__name__}")
    connection = ScriptClient(redis)
    try:
        if not with_workers:
            return sorted([name async for name in connection.scan_queue_names(pattern)])
        return sorted(await _names_with_workers(connection, pattern))
    finally:
        await connection.aclose()  # a cluster's node connections; never the user's client


async def _names_with_workers(connection: ScriptClient, pattern: str) -> set[str]:
    """Queues that have data, and queues whose only keys are their workers' presence
    but that have a live worker (an index outlives a crashed worker until it is read)."""
    with_data: set[bytes] = set()

    def name_of(key: bytes) -> bytes | None:  # sees every key the one SCAN finds
        raw = queue_name_of(key)
        if raw is not None:
            with_data.add(raw)
            return raw
        return workers_index_queue_name(key)

    names = {name async for name in connection.scan_names(scan_pattern(pattern), name_of)}
    for name in sorted(names):
        if name.encode() not in with_data and not await live_workers(connection, name):
            names.discard(name)
    return names


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
