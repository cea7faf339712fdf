"""Priorities: higher levels first, FIFO within a level, the 10-second head start per level
(aging), and a message's level kept through retries, delays and lapsed leases."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import T0, Clocked, ack, dequeue
from vermilion import AsyncWorker, Message, MessageStatus, Queue, ScriptError
from vermilion._wire import EnqueueOptions

STEP_MS = 10_000  # PRIORITY_STEP_MS of _layout.lua: one level's head start


@pytest.fixture
async def clocked(queue: Queue) -> Clocked:
    clocked = Clocked(queue)
    await clocked.at(T0)
    return clocked


async def mids_in_order(queue: Queue, n: int) -> list[str]:
    return [leased.mid for leased in (await dequeue(queue, n)).messages]


async def test_higher_levels_first_and_fifo_within_a_level(queue: Queue) -> None:
    for mid, priority in [("d1", 0), ("a1", 3), ("d2", 0), ("b1", 9), ("a2", 3), ("c1", 1), ("b2", 9)]:
        assert (await queue.enqueue(mid, mid=mid, priority=priority)).ok
    assert (await queue.status()).nqueued == 7
    assert await queue.message_status("a1") == MessageStatus.QUEUED
    assert await mids_in_order(queue, 3) == ["b1", "b2", "a1"]
    assert [await mids_in_order(queue, 1) for _ in range(5)] == [["a2"], ["c1"], ["d1"], ["d2"], []]


async def test_enqueue_many_takes_one_priority_for_the_batch(queue: Queue) -> None:
    await queue.enqueue("old", mid="old")
    await queue.enqueue_many(["x", "y"], mids=["x", "y"], priority=2)
    assert await mids_in_order(queue, 3) == ["x", "y", "old"]


async def test_a_level_is_a_ten_second_head_start(clocked: Clocked) -> None:
    await clocked.enqueue("default")  # ready at T0
    await clocked.at(T0 + STEP_MS - 1)
    await clocked.enqueue("p1-early", priority=1)  # virtual time T0 - 1: before it
    await clocked.at(T0 + STEP_MS + 1)
    await clocked.enqueue("p1-late", priority=1)  # virtual time T0 + 1: after it
    assert [m.mid for m in await clocked.dequeue(3)] == ["p1-early", "default", "p1-late"]


async def test_no_level_starves_a_lower_one(clocked: Clocked) -> None:
    await clocked.enqueue("p1", priority=1)  # virtual T0 - 10 s
    await clocked.at(T0 + 4 * STEP_MS + 1)
    await clocked.enqueue("p5", priority=5)  # virtual T0 - 10 s + 1 ms
    await clocked.at(T0 + 8 * STEP_MS)
    await clocked.enqueue("p9", priority=9)  # virtual T0 - 10 s
    assert [m.mid for m in await clocked.dequeue(3)] == ["p1", "p9", "p5"]  # equal times: by mid


async def test_a_retry_keeps_its_level(clocked: Clocked) -> None:
    await clocked.enqueue("p2", priority=2)
    [leased] = await clocked.dequeue()
    await clocked.enqueue("default")
    await clocked.at(T0 + STEP_MS)
    await clocked.retry(leased)  # ready again at T0 + 10 s: virtual T0 - 10 s
    assert [(m.mid, m.attempt) for m in await clocked.dequeue(2)] == [("p2", 2), ("default", 1)]


async def waits_then_goes_first(clocked: Clocked, mid: str, due_ms: int) -> None:
    """`mid` is delayed until `due_ms`: a default message goes before it until then, and
    it goes before a default message enqueued just before its delay ended."""
    await clocked.enqueue("default")
    assert [m.mid for m in await clocked.dequeue(2)] == ["default"]
    await clocked.enqueue("default2")
    await clocked.at(due_ms)
    assert [m.mid for m in await clocked.dequeue(2)] == [mid, "default2"]


async def test_a_delayed_message_takes_its_level_when_due(clocked: Clocked) -> None:
    await clocked.enqueue("p3", priority=3, delay_ms=1_000)
    await waits_then_goes_first(clocked, "p3", T0 + 1_000)


async def test_a_lapsed_lease_comes_back_at_its_level(clocked: Clocked) -> None:
    await clocked.enqueue("p4", priority=4)
    await clocked.dequeue(1, lock_ms=1_000)
    await clocked.enqueue("default")
    await clocked.at(T0 + 2_000)
    [first] = await clocked.dequeue()
    assert (first.mid, first.attempt, first.suspect) == ("p4", 2, True)


async def test_updates_keep_the_level(queue: Queue) -> None:
    await queue.enqueue("old", mid="default")
    await queue.enqueue("v1", mid="p", priority=6)
    assert (await queue.enqueue("v2", mid="p", can_update=True)).action == "updated"
    assert (await queue.enqueue("v3", mid="p", reset_delay=True)).action == "updated"
    leased = (await dequeue(queue, 2)).messages
    assert [m.mid for m in leased] == ["p", "default"]
    assert queue.serializer.loads(leased[0].payload) == "v2"


async def test_a_rescheduled_priority_message_is_delayed_then_back_at_its_level(clocked: Clocked) -> None:
    await clocked.enqueue("p", priority=7)
    conn, keys = clocked.conn, clocked.keys
    options = EnqueueOptions(delay_ms=5_000, reset_delay=True)
    assert await conn.enqueue(keys, options, [("p", b"\x01")]) == ["updated"]
    await waits_then_goes_first(clocked, "p", T0 + 5_000)


async def test_a_queue_without_priorities_keeps_no_flag(queue: Queue) -> None:
    meta = queue._keys.keys[-1]
    await queue.enqueue("x")
    await queue.enqueue_many(["y", "z"])
    await dequeue(queue, 3)
    assert await queue.redis.hget(meta, "priorities") is None
    await queue.enqueue("p", priority=1)
    assert await queue.redis.hget(meta, "priorities") == b"1"


async def test_content_and_status_see_priority_messages(queue: Queue) -> None:
    await queue.enqueue("hello", mid="p", priority=8)
    [info] = await queue.content()
    assert (info.mid, info.status, info.content) == ("p", MessageStatus.QUEUED, "hello")
    status = await queue.status()
    assert (status.nqueued, status.nbackoff) == (1, 0)
    leased = (await dequeue(queue, 1)).messages[0]
    assert await ack(queue, leased, "s")
    assert await queue.content() == []


@pytest.mark.parametrize(
    ("value", "error"), [(10, ValueError), (-1, ValueError), (1.0, TypeError), (True, TypeError)]
)
async def test_bad_priorities_are_refused_before_sending(queue: Queue, value: object, error: type) -> None:
    with pytest.raises(error, match="priority"):
        await queue.enqueue("x", priority=value)  # type: ignore[arg-type]
    with pytest.raises(error, match="priority"):
        await queue.enqueue_many(["x"], priority=value)  # type: ignore[arg-type]
    assert (await queue.status()).nqueued == 0


async def test_the_script_refuses_a_level_above_nine(queue: Queue) -> None:
    conn, keys = queue._protocol
    with pytest.raises(ScriptError, match="priority above 9"):
        await conn.enqueue(keys, EnqueueOptions(priority=10), [("m", b"x")])


async def test_a_worker_handles_higher_levels_first(queue: Queue) -> None:
    """Through the public API: a worker taking one message at a time sees levels in order."""
    await queue.enqueue_many(["d1", "d2"], mids=["d1", "d2"])
    await queue.enqueue("p3", mid="p3", priority=3)
    await queue.enqueue("p7", mid="p7", priority=7)
    seen: list[str] = []
    handled = asyncio.Event()

    async def handler(message: Message) -> None:
        seen.append(message.mid)
        if len(seen) == 4:
            handled.set()

    async with AsyncWorker(queue, handler, concurrency=1, monitor=None):
        await asyncio.wait_for(handled.wait(), 10)
    assert seen == ["p7", "p3", "d1", "d2"]
