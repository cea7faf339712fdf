"""Shared fixtures: one real server for the session, a unique queue per test.

The server is, in order: ``$VERMILION_TEST_REDIS_URL``; ``redis://127.0.0.1:6379``
if it answers (unless ``VERMILION_TEST_SERVER=embedded``); else an embedded
Valkey started for the session.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from vermilion import Queue
from vermilion._embedded import EmbeddedServer

DEFAULT_LOCAL = ("127.0.0.1", 6379)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of the server every integration test talks to."""
    url = os.environ.get("VERMILION_TEST_REDIS_URL")
    if url:
        yield url
        return
    if os.environ.get("VERMILION_TEST_SERVER") != "embedded" and _answers(*DEFAULT_LOCAL):
        yield "redis://127.0.0.1:6379/0"
        return
    with EmbeddedServer() as server:
        yield server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def queue_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


QueueFactory = Callable[..., Awaitable[Queue]]


@pytest.fixture
async def make_queue(redis_url: str) -> AsyncIterator[QueueFactory]:
    """Make queues with unique names; each is cleared and closed after the test."""
    made: list[Queue] = []

    async def make(name: str | None = None, **options: Any) -> Queue:
        queue = Queue(name or f"test-{uuid.uuid4().hex[:12]}", redis_url, **options)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        try:
            await queue.clear()
        finally:
            await queue.aclose()


@pytest.fixture
async def queue(make_queue: QueueFactory, queue_name: str) -> Queue:
    return await make_queue(queue_name)


@pytest.fixture
async def stray_keys(redis: aioredis.Redis) -> AsyncIterator[list[bytes]]:
    """Keys that look like vermilion's but hold no queue name: written by hand, or by another tool."""
    tag = uuid.uuid4().hex[:8].encode()
    keys = [b"vermilion:{has space " + tag + b"}:x", b"vermilion:{\xff" + tag + b"}:x"]
    for key in keys:
        await redis.set(key, b"1")
    yield keys
    await redis.delete(*keys)
