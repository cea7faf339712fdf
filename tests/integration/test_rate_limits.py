"""Rate limits: configure(rate_limit=..., rate_interval=...), enforced by dequeue in windows
of server time, and RateLimited(backoff), which retries the message and pauses the queue."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import T0, Clocked
from vermilion import AsyncWorker, Message, Queue, QueueSettings, RateLimited, ScriptError
from vermilion._wire import OutcomeRequest


@pytest.fixture
async def clocked(queue: Queue) -> Clocked:
    clocked = Clocked(queue)
    await clocked.at(T0)
    return clocked


async def test_configure_sets_reads_and_removes_the_limit(queue: Queue) -> None:
    assert await queue.configure(rate_limit=100) == QueueSettings(rate_limit=100, rate_interval=1.0)
    assert await queue.configure(rate_interval=0.25) == QueueSettings(rate_limit=100, rate_interval=0.25)
    assert await queue.configure(max_size=5) == QueueSettings(5, 100, 0.25)
    assert await queue.configure(rate_limit=None) == QueueSettings(max_size=5)
    assert await queue.redis.hget(queue._keys.keys[-1], "rate_interval_ms") is None


@pytest.mark.parametrize(
    ("options", "error", "fragment"),
    [
        ({"rate_limit": 0}, ValueError, "rate_limit"),
        ({"rate_limit": 1.5}, TypeError, "rate_limit"),
        ({"rate_limit": 5, "rate_interval": 0}, ValueError, "rate_interval"),
        ({"rate_limit": None, "rate_interval": 2}, ValueError, "rate_interval"),
    ],
)
async def test_bad_limits_are_refused(
    queue: Queue, options: dict[str, object], error: type, fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        await queue.configure(**options)  # type: ignore[arg-type]
    assert await queue.configure() == QueueSettings()


async def test_dequeue_hands_out_at_most_the_limit_per_window(queue: Queue, clocked: Clocked) -> None:
    await queue.configure(rate_limit=2, rate_interval=1.0)
    for n in range(5):
        await clocked.enqueue(f"m{n}")
    assert [m.mid for m in await clocked.dequeue(5)] == ["m0", "m1"]
    await clocked.at(T0 + 999)
    reply = await clocked.conn.dequeue(clocked.keys, 5, 60_000, 100)
    assert reply.messages == []
    assert reply.next_due_ms == T0 + 1_000  # the worker sleeps until the next window
    await clocked.at(T0 + 1_000)
    assert [m.mid for m in await clocked.dequeue(1)] == ["m2"]
    assert [m.mid for m in await clocked.dequeue(5)] == ["m3"]


async def test_the_limit_counts_every_worker(queue: Queue, clocked: Clocked) -> None:
    """Two calls (two workers) share one window's count."""
    await queue.configure(rate_limit=3)
    for n in range(6):
        await clocked.enqueue(f"m{n}")
    assert len(await clocked.dequeue(2)) + len(await clocked.dequeue(2)) == 3


async def test_rate_limited_retries_the_message_and_pauses_the_queue(queue: Queue, clocked: Clocked) -> None:
    for mid in ("a", "b"):
        await clocked.enqueue(mid)
    [leased] = await clocked.dequeue()
    request = OutcomeRequest(leased.mid, leased.token, "p", 500)
    assert await clocked.conn.ack(clocked.keys, [request], queue.failure_history, queue.failure_history_bytes)
    await clocked.at(T0 + 499)
    reply = await clocked.conn.dequeue(clocked.keys, 5, 60_000, 100)
    assert (reply.messages, reply.next_due_ms) == ([], T0 + 500)  # "b" is ready, yet held back
    await clocked.at(T0 + 500)
    assert [(m.mid, m.attempt) for m in await clocked.dequeue(5)] == [("b", 1), ("a", 2)]


async def test_a_stale_rate_limited_outcome_pauses_nothing(queue: Queue, clocked: Clocked) -> None:
    await clocked.enqueue("a")
    [leased] = await clocked.dequeue()
    request = OutcomeRequest(leased.mid, leased.token + 1, "p", 500)
    assert await clocked.conn.ack(clocked.keys, [request], 10, 10_000) == [False]
    assert await queue.redis.hget(queue._keys.keys[-1], "paused_until") is None


async def test_a_worker_pauses_on_rate_limited(queue: Queue) -> None:
    """Through the public API: the handler's RateLimited retries its message and the queue waits."""
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def handler(message: Message) -> RateLimited | None:
        seen.append((message.mid, message.attempt))
        if message.attempt == 1 and message.mid == "a":
            return RateLimited(0.3)
        if len(seen) == 3:
            done.set()
        return None

    await queue.enqueue("a", mid="a")
    await queue.enqueue("b", mid="b")
    async with AsyncWorker(queue, handler, concurrency=1, monitor=None) as worker:
        await asyncio.wait_for(done.wait(), 10)
        assert worker.stats().counts["handler/rate-limited"] == 1
    assert seen[0] == ("a", 1) and sorted(seen[1:]) == [("a", 2), ("b", 1)]


def test_rate_limited_needs_a_backoff() -> None:
    with pytest.raises(ValueError, match="backoff"):
        RateLimited(0)
    assert RateLimited(1.5).backoff == 1.5


async def test_a_damaged_limit_is_named(queue: Queue) -> None:
    await queue.enqueue("x")
    await queue.redis.hset(queue._keys.keys[-1], "rate_limit", "fast")
    conn, keys = queue._protocol
    with pytest.raises(ScriptError, match="rate_limit"):
        await conn.dequeue(keys, 1, 1000, 100)
