"""Worker behaviour across processes: a crash mid-handler, and the cost of idling."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

from tests.conftest import QueueFactory
from vermilion import AsyncWorker, Message, MessageStatus, Queue
from vermilion._embedded import EmbeddedServer

CRASH_WORKER = Path(__file__).with_name("crash_worker.py")


async def read_line(stream: asyncio.StreamReader, timeout: float = 15.0) -> str:
    line = await asyncio.wait_for(stream.readline(), timeout)
    if not line:
        raise AssertionError("the worker process exited early")
    return line.decode().strip()


async def test_killed_worker_message_is_redelivered(make_queue: QueueFactory, redis_url: str) -> None:
    """A worker SIGKILLed mid-handler: another worker gets the message after the lease, attempt 2."""
    queue = await make_queue()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CRASH_WORKER),
        redis_url,
        queue.name,
        "1.0",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        assert (await read_line(process.stdout)).startswith("ready ")
        await queue.enqueue({"job": 1}, mid="crash-me")
        assert await read_line(process.stdout) == "started crash-me attempt 1"
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    killed_at = time.monotonic()
    assert await queue.message_status("crash-me") == MessageStatus.LOCKED

    received: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def rescue(message: Message) -> None:
        if not received.done():
            received.set_result(message)

    async with AsyncWorker(queue, rescue, monitor=None):
        message = await asyncio.wait_for(received, 15)
    waited = time.monotonic() - killed_at
    assert message.mid == "crash-me"
    assert message.attempt == 2
    assert message.content == {"job": 1}
    assert waited < 1.0 + 2.0  # the 1 s lease, plus the idle worker's wake-up slack


async def test_idle_worker_makes_few_redis_calls() -> None:
    """An idle worker makes few Redis commands over 10 s (INFO commandstats before/after).

    Runs on a private embedded server, so that no other client's commands count.
    """
    with EmbeddedServer() as server:
        client = aioredis.Redis.from_url(server.url)
        async with Queue("idle-cost", server.url) as queue:
            await queue.status()  # loads nothing yet; makes sure the server answers

            async def handler(message: Message) -> None:
                return None

            async with AsyncWorker(queue, handler, monitor=None):
                await asyncio.sleep(1.0)  # let it reach its first long idle sleeps
                before = await client.info("commandstats")
                await asyncio.sleep(10.0)
                after = await client.info("commandstats")
        await client.aclose()

    # Commands a script runs are counted too; the client's own calls are these.
    client_commands = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_blpop")

    def calls(stats: dict[str, dict[str, int]]) -> int:
        return sum(stats.get(name, {}).get("calls", 0) for name in client_commands)

    made = calls(after) - calls(before)
    # Backoff 0.5 s doubling to 16 s: a few idle cycles of one dequeue and one BLPOP.
    assert 2 <= made <= 12, after
