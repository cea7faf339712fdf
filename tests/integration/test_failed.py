"""The failure history (dead letters): what it keeps, its bounds, replay and purge."""

from __future__ import annotations

import asyncio
import struct
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import QueueFactory
from tests.helpers import ack, dequeue, lease_one
from tests.layout import failure, history_bytes
from vermilion import FailedMessage, JsonSerializer, MessageStatus, Queue, ReplayResult
from vermilion._wire import OutcomeRequest

# Header of a failure record: flags, attempts, own lease, reason length (see _history.lua).
FAILURE_HEADER = 14


async def fail(queue: Queue, content: object, mid: str, reason: str = "boom", **options: object) -> None:
    """Enqueue one message, lease it and fail it."""
    assert (await queue.enqueue(content, mid=mid, **options)).ok  # type: ignore[arg-type]
    assert await ack(queue, await lease_one(queue), "f", reason=reason)


async def assert_byte_total_is_right(queue: Queue) -> None:
    _, keys = queue._protocol
    kept, actual = await history_bytes(queue.redis, keys)
    assert kept == actual


def recent(when: datetime) -> bool:
    now = datetime.now(timezone.utc)
    return when.tzinfo is not None and now - timedelta(seconds=30) < when <= now + timedelta(seconds=5)


# -- what the history keeps ------------------------------------------------------------------


async def test_a_failure_keeps_payload_reason_attempts_and_time(queue: Queue) -> None:
    """failed() returns the decoded payload (msgpack), the reason, the attempts and when it failed."""
    await queue.enqueue({"order": [1, 2]}, mid="m")
    assert await ack(queue, await lease_one(queue), "r")  # a retry: the second hand-out fails
    assert await ack(queue, await lease_one(queue), "f", reason="card declined")
    (entry,) = await queue.failed()
    assert isinstance(entry, FailedMessage)
    assert (entry.mid, entry.content, entry.reason, entry.attempts) == (
        "m",
        {"order": [1, 2]},
        "card declined",
        2,
    )
    assert recent(entry.failed_at)
    assert entry.failed_at.utcoffset() == timedelta(0)
    assert await queue.message_status("m") == MessageStatus.FAILED
    await assert_byte_total_is_right(queue)


async def test_a_json_queue_decodes_with_its_serializer(make_queue: QueueFactory) -> None:
    queue = await make_queue(serializer=JsonSerializer())
    await fail(queue, {"to": "a@example.com"}, "j", reason="smtp 550")
    (entry,) = await queue.failed()
    assert (entry.content, entry.reason, entry.attempts) == ({"to": "a@example.com"}, "smtp 550", 1)


async def test_an_undecodable_payload_is_shown_as_its_bytes(queue: Queue) -> None:
    """A payload the reading queue's serializer cannot decode comes back as raw bytes."""
    await fail(queue, "not json", "m")
    stored = queue.serializer.dumps("not json")
    async with Queue(queue.name, redis=queue.redis, serializer=JsonSerializer()) as json_queue:
        (entry,) = await json_queue.failed()
    assert entry.content == stored


async def test_pages_are_newest_first(queue: Queue) -> None:
    for i in range(5):
        await fail(queue, i, f"m{i}", reason=f"r{i}")
        await asyncio.sleep(0.002)  # distinct failure times (ms): newest first is then exact
    assert [e.mid for e in await queue.failed()] == ["m4", "m3", "m2", "m1", "m0"]
    assert [e.mid for e in await queue.failed(limit=2)] == ["m4", "m3"]
    assert [e.mid for e in await queue.failed(limit=2, offset=3)] == ["m1", "m0"]
    assert [e.reason for e in await queue.failed(offset=4)] == ["r0"]
    assert await queue.failed(offset=5) == []
    assert await queue.failed(limit=0) == []


async def test_content_and_status_show_a_failed_message(queue: Queue) -> None:
    await fail(queue, [1, 2], "m", reason="why")
    (info,) = await queue.content()
    assert (info.status, info.content, info.attempts, info.error) == (MessageStatus.FAILED, [1, 2], 1, "why")


async def test_a_failure_with_a_pending_requeue_is_not_recorded(queue: Queue) -> None:
    """The requeue starts a new life instead: nothing enters the history."""
    await queue.enqueue("old", mid="m")
    leased = await lease_one(queue)
    await queue.enqueue("new", mid="m", can_requeue=True)
    assert await ack(queue, leased, "f", reason="boom")
    assert await queue.failed() == []
    assert await queue.message_status("m") == MessageStatus.QUEUED
    await assert_byte_total_is_right(queue)


async def test_a_batch_of_failures_is_recorded_whole(queue: Queue) -> None:
    conn, keys = queue._protocol
    await queue.enqueue_many(["a", "b", "c"], mids=["a", "b", "c"])
    leases = (await dequeue(queue, 3)).messages
    outcomes = [OutcomeRequest(m.mid, m.token, "f", 0, f"why {m.mid}") for m in leases]
    assert await conn.ack(keys, outcomes, 10, 1 << 20) == [True, True, True]
    assert sorted((e.mid, e.content, e.reason) for e in await queue.failed()) == [
        ("a", "a", "why a"),
        ("b", "b", "why b"),
        ("c", "c", "why c"),
    ]
    await assert_byte_total_is_right(queue)


# -- the bounds --------------------------------------------------------------------------------


async def test_the_count_bound_drops_the_oldest_and_counts_it(make_queue: QueueFactory) -> None:
    queue = await make_queue(failure_history=2)
    for i in range(4):
        await fail(queue, i, f"m{i}")
        await asyncio.sleep(0.002)
    assert [e.mid for e in await queue.failed()] == ["m3", "m2"]
    status = await queue.status()
    assert (status.nfailed, status.nfailed_dropped) == (2, 2)
    assert await queue.message_status("m0") is None  # forgotten: it may be enqueued as new
    await assert_byte_total_is_right(queue)


async def test_the_byte_bound_drops_the_oldest_and_counts_it(make_queue: QueueFactory) -> None:
    payload = "x" * 100
    size = FAILURE_HEADER + len("boom") + len(Queue("sizing").serializer.dumps(payload))
    queue = await make_queue(failure_history_bytes=2 * size + size // 2)
    for i in range(3):
        await fail(queue, payload, f"m{i}")
        await asyncio.sleep(0.002)
    assert [e.mid for e in await queue.failed()] == ["m2", "m1"]
    _, keys = queue._protocol
    assert await history_bytes(queue.redis, keys) == (2 * size, 2 * size)
    status = await queue.status()
    assert (status.nfailed, status.nfailed_dropped) == (2, 1)
    assert await queue.message_status("m0") is None


async def test_a_failure_larger_than_the_byte_bound_is_dropped_alone(make_queue: QueueFactory) -> None:
    """It does not push the rest of the history out before its own turn."""
    queue = await make_queue(failure_history_bytes=200)
    await fail(queue, "small", "small")
    await fail(queue, "x" * 500, "huge")
    assert [e.mid for e in await queue.failed()] == ["small"]
    assert (await queue.status()).nfailed_dropped == 1
    assert await queue.message_status("huge") is None
    await assert_byte_total_is_right(queue)


async def test_a_zero_count_bound_keeps_nothing_and_counts_every_drop(make_queue: QueueFactory) -> None:
    queue = await make_queue(failure_history=0)
    await fail(queue, 1, "a")
    await fail(queue, 2, "b")
    assert await queue.failed() == []
    assert (await queue.status()).nfailed_dropped == 2
    await assert_byte_total_is_right(queue)


async def test_a_new_life_and_clear_keep_the_byte_total_right(queue: Queue) -> None:
    await fail(queue, "a" * 50, "a")
    await fail(queue, "b", "b")
    assert (await queue.enqueue("again", mid="a")).action == "added"  # a new life clears the failure
    assert [e.mid for e in await queue.failed()] == ["b"]
    await assert_byte_total_is_right(queue)
    await queue.clear()
    _, keys = queue._protocol
    assert await history_bytes(queue.redis, keys) == (0, 0)


# -- replay ---------------------------------------------------------------------------------------


async def test_replay_puts_the_message_back_as_a_new_life(queue: Queue) -> None:
    await queue.enqueue({"k": 1}, mid="m", lock_timeout=30)
    assert await ack(queue, await lease_one(queue), "r")
    assert await ack(queue, await lease_one(queue), "f", reason="boom")
    assert await queue.replay("m") == [ReplayResult("m", True)]
    assert await queue.message_status("m") == MessageStatus.QUEUED
    assert await queue.failed() == []
    leased = await lease_one(queue)
    assert (leased.mid, leased.attempt, leased.lock_ms) == ("m", 1, 30_000)  # its own lease kept
    assert queue.serializer.loads(leased.payload) == {"k": 1}
    await assert_byte_total_is_right(queue)


async def test_replay_answers_live_and_unknown(queue: Queue) -> None:
    await fail(queue, 1, "again")
    await fail(queue, 3, "ok")
    await queue.enqueue(2, mid="again")  # lives again: no longer in the history
    assert await queue.replay("again", "ok", "never", "ok") == [
        ReplayResult("again", False, "live"),
        ReplayResult("ok", True),
        ReplayResult("never", False, "unknown"),
        ReplayResult("ok", False, "live"),  # named twice: the first replayed it
    ]
    assert await queue.replay() == []


async def test_replay_wakes_an_idle_worker(queue: Queue) -> None:
    conn, keys = queue._protocol
    await fail(queue, 1, "m")
    await queue.redis.delete(keys.key("notify"))
    assert not await conn.wait_for_wakeup(keys, 0.01)
    waiting = asyncio.create_task(conn.wait_for_wakeup(keys, 10))
    await asyncio.sleep(0.05)  # let the BLPOP reach the server (the test fails on a missed token only)
    assert (await queue.replay("m"))[0].ok
    assert await asyncio.wait_for(waiting, 10)


async def test_enqueue_before_replay_makes_replay_answer_live(queue: Queue) -> None:
    await fail(queue, "old", "m")
    assert (await queue.enqueue("new", mid="m")).action == "added"
    assert await queue.replay("m") == [ReplayResult("m", False, "live")]
    leased = await lease_one(queue)
    assert queue.serializer.loads(leased.payload) == "new"
    assert (await dequeue(queue)).messages == []  # one life only


async def test_replay_before_enqueue_makes_enqueue_see_it_queued(queue: Queue) -> None:
    await fail(queue, "old", "m")
    assert (await queue.replay("m"))[0].ok
    refused = await queue.enqueue("new", mid="m")
    assert (refused.ok, refused.error) == (False, "already-queued")
    leased = await lease_one(queue)
    assert queue.serializer.loads(leased.payload) == "old"
    assert (await dequeue(queue)).messages == []


async def test_replay_racing_enqueue_leaves_one_life(queue: Queue) -> None:
    """Sent together, exactly one of them starts the new life, whichever Redis runs first."""
    await fail(queue, "old", "m")
    replayed, enqueued = await asyncio.gather(queue.replay("m"), queue.enqueue("new", mid="m"))
    assert replayed[0].ok != enqueued.ok
    leased = await lease_one(queue)
    assert queue.serializer.loads(leased.payload) == ("old" if replayed[0].ok else "new")
    assert (await dequeue(queue)).messages == []


async def test_replay_failed_replays_the_whole_history(queue: Queue) -> None:
    """More than one script call's worth (1,000 per call)."""
    conn, keys = queue._protocol
    mids = [f"m{i}" for i in range(1100)]
    await queue.enqueue_many(range(1100), mids=mids)
    leases = [*(await dequeue(queue, 1000)).messages, *(await dequeue(queue, 100)).messages]
    outcomes = [OutcomeRequest(m.mid, m.token, "f", 0, "boom") for m in leases]
    assert all(await conn.ack(keys, outcomes, 10_000, 1 << 30))
    page = await queue.failed(limit=2000)  # read in slices of 1,000 by the script
    assert len(page) == 1100 and {entry.content for entry in page} == set(range(1100))
    assert await queue.replay_failed() == 1100
    status = await queue.status()
    assert (status.nfailed, status.nqueued) == (0, 1100)
    assert await queue.replay_failed() == 0
    await assert_byte_total_is_right(queue)


async def test_replay_failed_leaves_entries_without_a_payload(queue: Queue) -> None:
    """A failure migrated from protocol version 1 (no payload, flags 0) stays; the rest replay."""
    _, keys = queue._protocol
    await fail(queue, 1, "a")
    migrated = struct.pack(">BI5sI", 0, 0, bytes(5), 3) + b"old"
    await queue.redis.sadd(keys.key("mids"), "v1")
    await queue.redis.zadd(keys.key("failed"), {"v1": 1})  # the oldest: skipped by every call
    await queue.redis.hset(keys.key("errors"), "v1", migrated)
    await queue.redis.hincrby(keys.key("meta"), "failed_bytes", len(migrated))
    await fail(queue, 2, "b")
    assert await queue.replay_failed() == 2
    [left] = await queue.failed()
    assert (left.mid, left.content, left.reason, left.attempts) == ("v1", None, "old", 0)
    assert await queue.replay("v1") == [ReplayResult("v1", False, "no-content")]
    await assert_byte_total_is_right(queue)


# -- purge --------------------------------------------------------------------------------------


async def test_purge_removes_the_given_mids_only(queue: Queue) -> None:
    for mid in ("a", "b", "c"):
        await fail(queue, mid, mid)
    await queue.enqueue("live", mid="live")
    assert await queue.purge_failed("a", "c", "live", "never", "a") == 2
    assert [e.mid for e in await queue.failed()] == ["b"]
    assert await queue.message_status("a") is None  # forgotten
    assert await queue.message_status("live") == MessageStatus.QUEUED  # not in the history: untouched
    await assert_byte_total_is_right(queue)


async def test_purge_without_mids_removes_every_entry(queue: Queue) -> None:
    conn, keys = queue._protocol
    await queue.enqueue_many(range(1100), mids=[f"m{i}" for i in range(1100)])
    leases = [*(await dequeue(queue, 1000)).messages, *(await dequeue(queue, 100)).messages]
    assert all(await conn.ack(keys, [OutcomeRequest(m.mid, m.token, "f") for m in leases], 10_000, 1 << 30))
    assert await queue.purge_failed() == 1100
    assert (await queue.status()).nfailed == 0
    assert await queue.purge_failed() == 0
    assert await history_bytes(queue.redis, keys) == (0, 0)


async def test_purged_and_replayed_entries_are_not_counted_as_dropped(queue: Queue) -> None:
    await fail(queue, 1, "a")
    await fail(queue, 2, "b")
    await queue.replay("a")
    await queue.purge_failed("b")
    assert (await queue.status()).nfailed_dropped == 0
    _, keys = queue._protocol
    assert await failure(queue.redis, keys, "a") is None


# -- bad arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda q: q.failed(limit=-1), ValueError, "limit"),
        (lambda q: q.failed(limit=10_001), ValueError, "limit"),
        (lambda q: q.failed(limit=1.5), TypeError, "limit"),
        (lambda q: q.failed(limit=True), TypeError, "limit"),
        (lambda q: q.failed(offset=-1), ValueError, "offset"),
        (lambda q: q.failed(offset="1"), TypeError, "offset"),
        (lambda q: q.replay("ok", 7), TypeError, r"mids\[1\]"),
        (lambda q: q.replay(""), ValueError, r"mids\[0\]"),
        (lambda q: q.replay(["a", "b"]), TypeError, r"mids\[0\]"),
        (lambda q: q.purge_failed(None), TypeError, r"mids\[0\]"),
    ],
)
async def test_bad_arguments_are_refused_before_sending(queue: Queue, call, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        await call(queue)
