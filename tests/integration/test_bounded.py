"""Bounded queues: configure(max_size=...), the 'full' refusal, and what counts toward the size."""

from __future__ import annotations

import pytest

from tests.helpers import ack, lease_one
from vermilion import EnqueueResult, MessageStatus, Queue, QueueSettings, ScriptError

FULL = EnqueueResult(ok=False, mid="x", error="full")


async def test_settings_are_absent_until_configured(queue: Queue) -> None:
    assert await queue.configure() == QueueSettings(max_size=None)
    assert (await queue.status()).max_size is None


async def test_configure_sets_reads_and_removes_the_bound(queue: Queue) -> None:
    assert await queue.configure(max_size=3) == QueueSettings(max_size=3)
    assert await queue.configure() == QueueSettings(max_size=3)
    assert (await queue.status()).max_size == 3
    assert await queue.configure(max_size=None) == QueueSettings(max_size=None)
    assert (await queue.status()).max_size is None


async def test_an_enqueue_past_the_bound_is_full_and_writes_nothing(queue: Queue) -> None:
    await queue.configure(max_size=2)
    assert (await queue.enqueue(1, mid="a")).ok
    assert (await queue.enqueue(2, mid="b", delay=60)).ok
    assert await queue.enqueue(3, mid="x") == FULL
    assert await queue.message_status("x") is None
    status = await queue.status()
    assert (status.nqueued, status.nbackoff) == (1, 1)


async def test_leased_messages_count_and_their_end_makes_room(queue: Queue) -> None:
    await queue.configure(max_size=1)
    assert (await queue.enqueue(1, mid="a")).ok
    leased = await lease_one(queue)
    assert await queue.enqueue(2, mid="x") == FULL
    assert await ack(queue, leased, "s")
    assert (await queue.enqueue(2, mid="x")).ok


async def test_done_and_failed_messages_do_not_count(queue: Queue) -> None:
    await queue.configure(max_size=1)
    assert (await queue.enqueue(1, mid="a")).ok
    assert await ack(queue, await lease_one(queue), "s", backoff_ms=60_000)  # done, in its window
    assert (await queue.enqueue(2, mid="b")).ok
    assert await ack(queue, await lease_one(queue), "f", reason="no")  # failed
    assert (await queue.enqueue(3, mid="c")).ok
    assert await queue.enqueue(4, mid="x") == FULL


async def test_a_full_queue_still_updates_and_refuses_busy_mids_as_before(queue: Queue) -> None:
    await queue.configure(max_size=1)
    assert (await queue.enqueue("old", mid="a")).ok
    assert await queue.enqueue("new", mid="a", can_update=True) == EnqueueResult(True, "a", "updated")
    assert await queue.enqueue("again", mid="a") == EnqueueResult(False, "a", None, "already-queued")
    leased = await lease_one(queue)
    assert queue.serializer.loads(leased.payload) == "new"
    # A requeue of a leased mid replaces it when its lease ends: it takes no place.
    assert await queue.enqueue("next", mid="a", can_requeue=True) == EnqueueResult(True, "a", "added")
    assert await ack(queue, leased, "s")
    assert await queue.message_status("a") == MessageStatus.QUEUED


async def test_a_requeue_of_a_finished_mid_takes_a_place(queue: Queue) -> None:
    await queue.configure(max_size=1)
    assert (await queue.enqueue(1, mid="a")).ok
    assert await ack(queue, await lease_one(queue), "s", backoff_ms=60_000)
    assert (await queue.enqueue(2, mid="b")).ok
    assert await queue.enqueue(3, mid="a", can_requeue=True) == EnqueueResult(False, "a", None, "full")
    assert await queue.message_status("a") == MessageStatus.DONE_WITH_BACKOFF


async def test_a_failed_mid_is_not_revived_when_full(queue: Queue) -> None:
    await queue.configure(max_size=1)
    assert (await queue.enqueue(1, mid="a")).ok
    assert await ack(queue, await lease_one(queue), "f", reason="no")
    assert (await queue.enqueue(2, mid="b")).ok
    assert await queue.enqueue(3, mid="a") == EnqueueResult(False, "a", None, "full")
    assert await queue.message_status("a") == MessageStatus.FAILED
    assert [f.mid for f in await queue.failed()] == ["a"]


async def test_enqueue_many_refuses_exactly_the_messages_that_do_not_fit(queue: Queue) -> None:
    await queue.configure(max_size=3)
    assert (await queue.enqueue(0, mid="first")).ok
    results = await queue.enqueue_many(range(4), mids=["a", "b", "c", "d"])
    assert [(r.mid, r.ok, r.error) for r in results] == [
        ("a", True, None),
        ("b", True, None),
        ("c", False, "full"),
        ("d", False, "full"),
    ]
    assert (await queue.status()).nqueued == 3
    assert await queue.message_status("c") is None


async def test_enqueue_many_with_known_mids_counts_only_new_lives(queue: Queue) -> None:
    await queue.configure(max_size=2)
    assert (await queue.enqueue(0, mid="a")).ok
    results = await queue.enqueue_many(["u", "n1", "n2"], mids=["a", "n1", "n2"], can_update=True)
    assert [(r.mid, r.action, r.error) for r in results] == [
        ("a", "updated", None),
        ("n1", "added", None),
        ("n2", None, "full"),
    ]


async def test_a_bound_below_the_size_refuses_until_it_drains(queue: Queue) -> None:
    await queue.enqueue_many(range(3))
    await queue.configure(max_size=1)
    assert (await queue.enqueue(9, mid="x")) == FULL
    assert (await queue.status()).nqueued == 3


async def test_settings_survive_clear(queue: Queue) -> None:
    await queue.configure(max_size=5)
    await queue.enqueue(1)
    await queue.clear()
    assert (await queue.status()).max_size == 5


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)],
)
async def test_bad_bounds_are_refused_before_sending(queue: Queue, value: object, error: type) -> None:
    with pytest.raises(error, match="max_size"):
        await queue.configure(max_size=value)  # type: ignore[arg-type]
    assert await queue.configure() == QueueSettings()


async def test_a_damaged_bound_is_named(queue: Queue) -> None:
    await queue.redis.hset(queue._keys.keys[-1], "max_size", "lots")
    with pytest.raises(ScriptError, match="max_size"):
        await queue.enqueue(1)
    assert await queue.configure(max_size=None) == QueueSettings()
    assert (await queue.enqueue(1)).ok


async def test_configure_script_refuses_unknown_settings(queue: Queue) -> None:
    conn, keys = queue._protocol
    with pytest.raises(ScriptError, match="unknown setting"):
        await conn.configure(keys, [("max_sizes", 3)])
