"""Small helpers shared by the tests: waiting on conditions, driving the scripts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from vermilion import AsyncWorker, Queue
from vermilion._keys import QueueKeys
from vermilion._shards import shard_index
from vermilion._wire import DequeueReply, EnqueueOptions, Leased, OutcomeKind, OutcomeRequest

LONG_LOCK_MS = 60_000
"""A lease that never lapses during a test."""

HOUSEKEEPING_LIMIT = 100


async def eventually(
    predicate: Callable[[], Awaitable[bool]],
    timeout: float = 5.0,
    interval: float = 0.002,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` until it is true; fail the test if ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} still false after {timeout} s")
        await asyncio.sleep(interval)


async def dequeue(queue: Queue, n: int = 1, lock_ms: int = LONG_LOCK_MS) -> DequeueReply:
    """One ``dequeue`` script call on ``queue``."""
    conn, keys = queue._protocol
    return await conn.dequeue(keys, n, lock_ms, HOUSEKEEPING_LIMIT)


async def lease_one(queue: Queue, lock_ms: int = LONG_LOCK_MS) -> Leased:
    """Dequeue exactly one message, failing the test if none is ready."""
    reply = await dequeue(queue, 1, lock_ms)
    assert len(reply.messages) == 1, f"expected one message, got {reply.messages}"
    return reply.messages[0]


async def dequeue_until_handed_out(
    queue: Queue, n: int = 1, lock_ms: int = LONG_LOCK_MS, timeout: float = 5.0
) -> DequeueReply:
    """Poll ``dequeue`` in a tight loop until it hands out a message; return that reply."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await dequeue(queue, n, lock_ms)
        if reply.messages:
            return reply
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing was handed out within {timeout} s")
        await asyncio.sleep(0.001)


async def ack(queue: Queue, leased: Leased, kind: OutcomeKind, backoff_ms: int = 0, reason: str = "") -> bool:
    """Acknowledge one outcome (``'s'``, ``'r'`` or ``'f'``) for a lease; return whether it applied."""
    conn, keys = queue._protocol
    request = OutcomeRequest(leased.mid, leased.token, kind, backoff_ms, reason)
    (applied,) = await conn.ack(keys, [request], queue.failure_history, queue.failure_history_bytes)
    return applied is True


async def scan_queue_keys(redis: aioredis.Redis, name: str) -> list[bytes]:
    """Every key in Redis under ``vermilion:{name}:*``, found with SCAN."""
    return [key async for key in redis.scan_iter(match=f"vermilion:{{{name}}}:*", count=1000)]


T0 = 1_800_000_000_000  # the test clock's start, in ms


class Clocked:
    """Script calls on a queue whose scripts read the time from the test-clock key."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.conn, plain = queue._protocol
        self.keys: QueueKeys = plain.with_test_clock()

    async def at(self, ms: int) -> None:
        await self.queue.redis.set(self.keys.keys[-1], str(ms))

    async def enqueue(self, mid: str, priority: int = 0, delay_ms: int = 0) -> str:
        options = EnqueueOptions(delay_ms=delay_ms, priority=priority)
        (reply,) = await self.conn.enqueue(self.keys, options, [(mid, b"\x01")])
        return reply

    async def dequeue(self, n: int = 1, lock_ms: int = LONG_LOCK_MS) -> list[Leased]:
        reply = await self.conn.dequeue(self.keys, n, lock_ms, HOUSEKEEPING_LIMIT)
        return reply.messages

    async def retry(self, leased: Leased) -> None:
        request = OutcomeRequest(leased.mid, leased.token, "r", 0, "")
        queue = self.queue
        assert await self.conn.ack(self.keys, [request], queue.failure_history, queue.failure_history_bytes)


async def until_idle(worker: AsyncWorker, timeout: float = 5.0) -> None:
    """Wait until ``worker`` has found its queue empty and sits in its idle wait."""

    async def idle() -> bool:
        return bool(worker.stats().counts.get("sleep/end-of-queue", 0)) and worker._poller.waiting

    await eventually(idle, timeout, 0.001, "the worker going idle")


def mids_on(shard: int, shards: int, count: int, prefix: str = "m") -> list[str]:
    """``count`` mids that map to ``shard`` of ``shards``."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        mid = f"{prefix}{n}"
        if shard_index(mid, shards) == shard:
            found.append(mid)
        n += 1
    return found
