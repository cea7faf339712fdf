"""How a queue built from a URL uses its connections: reused, replaced when dead, closed."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis.asyncio as aioredis

from tests.helpers import eventually
from vermilion import Queue
from vermilion._protocol import _has_unread_data_or_eof


def named(url: str, client_name: str) -> str:
    """``url`` with a client name, so that the server's CLIENT LIST shows the queue's connections."""
    return f"{url}{'&' if '?' in url else '?'}client_name={client_name}"


async def client_ids(redis: aioredis.Redis, client_name: str) -> list[int]:
    clients: list[dict[str, Any]] = await redis.client_list()
    return sorted(int(client["id"]) for client in clients if client["name"] == client_name)


async def test_sequential_calls_share_one_connection(
    queue_name: str, redis_url: str, redis: aioredis.Redis
) -> None:
    """One call at a time needs one connection, kept open between calls."""
    client_name = f"vm-{uuid.uuid4().hex[:8]}"
    async with Queue(queue_name, named(redis_url, client_name)) as queue:
        for i in range(20):
            assert (await queue.enqueue(i)).ok
        assert await queue.size() == 20
        assert len(await client_ids(redis, client_name)) == 1
        await queue.clear()
    assert await client_ids(redis, client_name) == []


async def test_concurrent_calls_open_more_and_aclose_closes_them_all(
    queue_name: str, redis_url: str, redis: aioredis.Redis
) -> None:
    """Calls at once get a connection each; aclose() closes every one of them."""
    client_name = f"vm-{uuid.uuid4().hex[:8]}"
    async with Queue(queue_name, named(redis_url, client_name)) as queue:
        results = await asyncio.gather(*(queue.enqueue(i) for i in range(40)))
        assert all(result.ok for result in results)
        opened = await client_ids(redis, client_name)
        assert 1 < len(opened) <= 40
        await queue.clear()
    assert await client_ids(redis, client_name) == []


async def test_a_connection_the_server_closed_is_replaced_before_sending(
    queue_name: str, redis_url: str, redis: aioredis.Redis
) -> None:
    """An idle connection killed by the server is noticed and replaced: the next enqueue (never
    re-sent, so a dead connection would make it OutcomeUnknownError) simply succeeds."""
    client_name = f"vm-{uuid.uuid4().hex[:8]}"
    async with Queue(queue_name, named(redis_url, client_name)) as queue:
        assert (await queue.enqueue("before", mid="before")).ok
        [old_id] = await client_ids(redis, client_name)
        await redis.client_kill_filter(_id=str(old_id))
        connection, _ = queue._protocol
        [idle] = connection._idle

        async def closed_seen() -> bool:  # the event loop has read the server's FIN
            return await _has_unread_data_or_eof(idle)

        await eventually(closed_seen, what="the closed connection noticed")
        assert (await queue.enqueue("after", mid="after")).ok
        assert [await queue.message_status(mid) for mid in ("before", "after")] == ["queued", "queued"]
        [new_id] = await client_ids(redis, client_name)
        assert new_id != old_id
        await queue.clear()
