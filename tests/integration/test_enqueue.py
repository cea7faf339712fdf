"""Enqueue: every branch of Carmine's enqueue table (carmine-mq.md §5.3) and every status."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import QueueFactory
from tests.helpers import ack, dequeue, dequeue_until_handed_out, eventually, lease_one
from vermilion import EnqueueResult, MessageStatus, Queue
from vermilion._protocol import ScriptClient
from vermilion._wire import Leased

ADDED = EnqueueResult(ok=True, mid="m", action="added")
UPDATED = EnqueueResult(ok=True, mid="m", action="updated")
ALREADY_QUEUED = EnqueueResult(ok=False, mid="m", error="already-queued")
LOCKED = EnqueueResult(ok=False, mid="m", error="locked")
BACKOFF = EnqueueResult(ok=False, mid="m", error="backoff")

RANDOM_MID = re.compile(r"[A-Za-z0-9_-]{12}")


def content_of(queue: Queue, leased: Leased) -> Any:
    return queue.serializer.loads(leased.payload)


async def status_is(queue: Queue, mid: str, status: MessageStatus | None) -> bool:
    return await queue.message_status(mid) == status


async def done_with_backoff(queue: Queue, content: Any, window_ms: int) -> None:
    """Bring mid 'm' to done-with-backoff: enqueue, lease, ack Success(backoff)."""
    assert await queue.enqueue(content, mid="m") == ADDED
    assert await ack(queue, await lease_one(queue), "s", backoff_ms=window_ms)


# -- new ---------------------------------------------------------------------------


async def test_new_mid_is_added_and_ready(queue: Queue) -> None:
    """A new mid is 'added', reads 'queued', and is handed out with its content on attempt 1."""
    assert await queue.enqueue({"to": "a@b.c"}, mid="m") == ADDED
    assert await queue.message_status("m") == MessageStatus.QUEUED
    assert await queue.size() == 1
    leased = await lease_one(queue)
    assert (leased.mid, leased.attempt) == ("m", 1)
    assert content_of(queue, leased) == {"to": "a@b.c"}


async def test_new_mid_with_delay_is_added_with_backoff(queue: Queue) -> None:
    """A new mid with a delay is 'added' as queued-with-backoff and not handed out yet."""
    assert await queue.enqueue("x", mid="m", delay=60) == ADDED
    assert await queue.message_status("m") == MessageStatus.QUEUED_WITH_BACKOFF
    status = await queue.status()
    assert (status.nqueued, status.nbackoff) == (0, 1)
    assert (await dequeue(queue)).messages == []


async def test_enqueue_without_mid_gets_a_random_mid(queue: Queue) -> None:
    """Without a mid, each enqueue gets a fresh random mid (12 URL-safe characters) and is added."""
    first = await queue.enqueue(1)
    second = await queue.enqueue(1)
    assert first.ok
    assert second.ok
    assert first.mid != second.mid
    assert RANDOM_MID.fullmatch(first.mid)
    assert await queue.message_status(first.mid) == MessageStatus.QUEUED


async def test_enqueue_pushes_a_wakeup_token_only_when_something_became_ready(queue: Queue) -> None:
    """An added message wakes idle workers; a refused enqueue does not."""
    conn, keys = queue._protocol
    await queue.enqueue(1, mid="m")
    assert await conn.wait_for_wakeup(keys, 0.5) is not None
    await queue.redis.delete(keys.key("notify"))
    assert await queue.enqueue(2, mid="m") == ALREADY_QUEUED
    assert await queue.redis.llen(keys.key("notify")) == 0


# -- queued --------------------------------------------------------------------------


async def test_queued_without_options_is_refused_and_unchanged(queue: Queue) -> None:
    """Enqueuing a queued mid again answers 'already-queued' and keeps the first content."""
    await queue.enqueue("first", mid="m")
    assert await queue.enqueue("second", mid="m") == ALREADY_QUEUED
    assert await queue.enqueue("third", mid="m", can_requeue=True) == ALREADY_QUEUED
    assert await queue.size() == 1
    assert content_of(queue, await lease_one(queue)) == "first"
    assert (await dequeue(queue)).messages == []


async def test_queued_with_can_update_replaces_the_content(queue: Queue) -> None:
    """can_update on a ready mid answers 'updated', replaces the content and keeps one copy."""
    await queue.enqueue("first", mid="m")
    assert await queue.enqueue("second", mid="m", can_update=True) == UPDATED
    assert await queue.message_status("m") == MessageStatus.QUEUED
    assert await queue.size() == 1
    leased = await lease_one(queue)
    assert (content_of(queue, leased), leased.attempt) == ("second", 1)
    assert (await dequeue(queue)).messages == []


async def test_delayed_with_can_update_keeps_its_delay(queue: Queue) -> None:
    """can_update without reset_delay on a delayed mid replaces the content but keeps the delay."""
    _, keys = queue._protocol
    await queue.enqueue("first", mid="m", delay=60)
    due_before = await queue.redis.zscore(keys.key("delayed"), "m")
    assert await queue.enqueue("second", mid="m", can_update=True, delay=0) == UPDATED
    assert await queue.message_status("m") == MessageStatus.QUEUED_WITH_BACKOFF
    assert await queue.redis.zscore(keys.key("delayed"), "m") == due_before
    [entry] = await queue.content()
    assert entry.content == "second"


async def test_reset_delay_moves_a_ready_message_to_delayed(queue: Queue) -> None:
    """reset_delay alone on a ready mid answers 'updated', delays it and keeps its content."""
    await queue.enqueue("first", mid="m")
    assert await queue.enqueue("second", mid="m", delay=60, reset_delay=True) == UPDATED
    assert await queue.message_status("m") == MessageStatus.QUEUED_WITH_BACKOFF
    status = await queue.status()
    assert (status.nqueued, status.nbackoff) == (0, 1)
    assert (await dequeue(queue)).messages == []
    [entry] = await queue.content()
    assert entry.content == "first"
    assert entry.backoff is not None
    assert 59 < entry.backoff <= 60


async def test_reset_delay_moves_a_delayed_message_to_ready(queue: Queue) -> None:
    """reset_delay with no delay makes a delayed mid ready at once, with its old content."""
    await queue.enqueue("first", mid="m", delay=60)
    assert await queue.enqueue("second", mid="m", reset_delay=True) == UPDATED
    assert await queue.message_status("m") == MessageStatus.QUEUED
    leased = await lease_one(queue)
    assert content_of(queue, leased) == "first"


async def test_reset_delay_restarts_a_running_delay(queue: Queue) -> None:
    """reset_delay on a delayed mid restarts its delay from now with the new length."""
    _, keys = queue._protocol
    await queue.enqueue("x", mid="m", delay=60)
    first_due = await queue.redis.zscore(keys.key("delayed"), "m")
    assert await queue.enqueue("x", mid="m", delay=600, reset_delay=True) == UPDATED
    second_due = await queue.redis.zscore(keys.key("delayed"), "m")
    assert first_due is not None
    assert second_due is not None
    assert 539_000 < second_due - first_due <= 541_000


async def test_can_update_with_reset_delay_updates_content_and_delay(queue: Queue) -> None:
    """can_update + reset_delay on a delayed mid replaces the content and makes it ready."""
    await queue.enqueue("first", mid="m", delay=60)
    assert await queue.enqueue("second", mid="m", can_update=True, reset_delay=True) == UPDATED
    assert await queue.message_status("m") == MessageStatus.QUEUED
    assert content_of(queue, await lease_one(queue)) == "second"


async def test_can_update_replaces_the_per_message_lock(queue: Queue) -> None:
    """An update sets the new lock_timeout, or drops the old one when none is given."""
    await queue.enqueue("x", mid="m", lock_timeout=2.5)
    await queue.enqueue("x", mid="n", lock_timeout=2.5)
    assert await queue.enqueue("x", mid="m", can_update=True, lock_timeout=7) == UPDATED
    assert (await queue.enqueue("x", mid="n", can_update=True)).action == "updated"
    reply = await dequeue(queue, 2, lock_ms=1234)
    assert {leased.mid: leased.lock_ms for leased in reply.messages} == {"m": 7000, "n": 1234}


# -- locked --------------------------------------------------------------------------


async def test_locked_without_can_requeue_is_refused(queue: Queue) -> None:
    """A locked mid answers 'locked' unless can_requeue, whatever the other flags."""
    await queue.enqueue("first", mid="m")
    leased = await lease_one(queue)
    assert await queue.enqueue("second", mid="m") == LOCKED
    assert await queue.enqueue("second", mid="m", can_update=True, reset_delay=True) == LOCKED
    assert await queue.message_status("m") == MessageStatus.LOCKED
    assert await ack(queue, leased, "s")
    assert await queue.message_status("m") is None
    assert (await dequeue(queue)).messages == []


async def test_locked_with_can_requeue_is_handled_again_after_the_ack(queue: Queue) -> None:
    """A requeue of a locked mid waits for the ack, then runs the new content with attempt 1."""
    await queue.enqueue("first", mid="m")
    assert await ack(queue, await lease_one(queue), "r")
    leased = await lease_one(queue)
    assert leased.attempt == 2
    assert await queue.enqueue("second", mid="m", can_requeue=True) == ADDED
    assert await queue.message_status("m") == MessageStatus.LOCKED_WITH_REQUEUE
    assert (await dequeue(queue)).messages == []
    assert await ack(queue, leased, "s")
    assert await queue.message_status("m") == MessageStatus.QUEUED
    again = await lease_one(queue)
    assert (again.mid, again.attempt, content_of(queue, again)) == ("m", 1, "second")
    assert again.token != leased.token
    assert await ack(queue, again, "s")
    assert await queue.message_status("m") is None


async def test_requeue_keeps_its_own_lock_timeout(queue: Queue) -> None:
    """The lock_timeout given with a requeue applies to the requeued life."""
    await queue.enqueue("first", mid="m", lock_timeout=5)
    leased = await lease_one(queue, lock_ms=1000)
    assert leased.lock_ms == 5000
    assert await queue.enqueue("second", mid="m", can_requeue=True, lock_timeout=9) == ADDED
    assert await ack(queue, leased, "s")
    assert (await lease_one(queue, lock_ms=1000)).lock_ms == 9000


async def test_pending_requeue_of_a_locked_mid_needs_can_update(queue: Queue) -> None:
    """With a requeue pending, can_requeue answers 'already-queued'; adding can_update answers 'updated'."""
    await queue.enqueue("first", mid="m")
    leased = await lease_one(queue)
    assert await queue.enqueue("second", mid="m", can_requeue=True) == ADDED
    assert await queue.enqueue("third", mid="m", can_requeue=True) == ALREADY_QUEUED
    assert await queue.enqueue("third", mid="m") == LOCKED
    assert await queue.enqueue("fourth", mid="m", can_requeue=True, can_update=True) == UPDATED
    assert await queue.message_status("m") == MessageStatus.LOCKED_WITH_REQUEUE
    assert await ack(queue, leased, "s")
    assert content_of(queue, await lease_one(queue)) == "fourth"


async def test_retry_with_a_pending_requeue_retries_the_old_content_first(queue: Queue) -> None:
    """A retry keeps the pending requeue: the old content runs again, then the requeued one."""
    await queue.enqueue("first", mid="m")
    leased = await lease_one(queue)
    await queue.enqueue("second", mid="m", can_requeue=True)
    assert await ack(queue, leased, "r")
    retried = await lease_one(queue)
    assert (content_of(queue, retried), retried.attempt) == ("first", 2)
    assert await queue.message_status("m") == MessageStatus.LOCKED_WITH_REQUEUE
    assert await ack(queue, retried, "s")
    requeued = await lease_one(queue)
    assert (content_of(queue, requeued), requeued.attempt) == ("second", 1)


# -- done ----------------------------------------------------------------------------


async def test_done_inside_its_window_is_refused_with_backoff(queue: Queue) -> None:
    """Inside a Success backoff window the mid reads done-with-backoff and enqueue answers 'backoff'."""
    await done_with_backoff(queue, "first", 60_000)
    assert await queue.message_status("m") == MessageStatus.DONE_WITH_BACKOFF
    assert await queue.enqueue("second", mid="m") == BACKOFF
    assert await queue.enqueue("second", mid="m", can_update=True, reset_delay=True) == BACKOFF
    status = await queue.status()
    assert (status.ndone, status.nqueued, status.ntotal) == (1, 0, 1)
    assert (await dequeue(queue)).messages == []


async def test_done_inside_its_window_with_can_requeue_runs_after_the_window(queue: Queue) -> None:
    """A requeue inside the window reads done-with-requeue and is handed out once the window ends."""
    _, keys = queue._protocol
    await done_with_backoff(queue, "first", 300)
    assert await queue.enqueue("second", mid="m", can_requeue=True) == ADDED
    assert await queue.message_status("m") == MessageStatus.DONE_WITH_REQUEUE
    window_end = await queue.redis.zscore(keys.key("done"), "m")
    assert window_end is not None
    reply = await dequeue_until_handed_out(queue)
    [leased] = reply.messages
    assert reply.now_ms >= window_end
    assert (leased.mid, leased.attempt, content_of(queue, leased)) == ("m", 1, "second")
    assert await queue.message_status("m") == MessageStatus.LOCKED


async def test_pending_requeue_of_a_done_mid_needs_can_update(queue: Queue) -> None:
    """A second requeue inside the window answers 'already-queued'; with can_update, 'updated'."""
    await done_with_backoff(queue, "first", 60_000)
    assert await queue.enqueue("second", mid="m", can_requeue=True) == ADDED
    assert await queue.enqueue("third", mid="m", can_requeue=True) == ALREADY_QUEUED
    assert await queue.enqueue("third", mid="m") == BACKOFF
    assert await queue.enqueue("fourth", mid="m", can_requeue=True, can_update=True) == UPDATED
    [entry] = await queue.content()
    assert (entry.status, entry.content) == (MessageStatus.DONE_WITH_REQUEUE, "fourth")


async def test_done_after_its_window_is_added_fresh(queue: Queue) -> None:
    """Once the window ended (done-awaiting-gc) the mid is added fresh: attempt 1, new content."""
    await done_with_backoff(queue, "first", 50)
    await eventually(lambda: status_is(queue, "m", MessageStatus.DONE_AWAITING_GC), what="window end")
    assert await queue.enqueue("second", mid="m") == ADDED
    assert await queue.message_status("m") == MessageStatus.QUEUED
    status = await queue.status()
    assert (status.ndone, status.nqueued) == (0, 1)
    leased = await lease_one(queue)
    assert (leased.attempt, content_of(queue, leased)) == (1, "second")
    assert await ack(queue, leased, "s")
    assert await queue.message_status("m") is None


async def test_ended_window_with_pending_requeue_waits_for_collection(queue: Queue) -> None:
    """After the window, a pending requeue reads 'done-with-requeue' until a dequeue starts it;
    can_update replaces it ('updated')."""
    await done_with_backoff(queue, "first", 50)
    assert await queue.enqueue("second", mid="m", can_requeue=True) == ADDED

    async def window_ended() -> bool:
        [entry] = await queue.content()
        return entry.backoff is None

    await eventually(window_ended, what="window end")
    assert await queue.message_status("m") == MessageStatus.DONE_WITH_REQUEUE
    assert (await queue.status()).ndone == 1  # counted where its status says it is
    assert await queue.enqueue("third", mid="m") == ALREADY_QUEUED
    assert await queue.enqueue("third", mid="m", reset_delay=True, delay=5) == ALREADY_QUEUED
    assert await queue.enqueue("third", mid="m", can_update=True) == UPDATED
    leased = await lease_one(queue)
    assert (leased.attempt, content_of(queue, leased)) == (1, "third")


async def test_success_without_backoff_forgets_the_mid_at_once(queue: Queue) -> None:
    """Success without a window deletes the message: status None, the mid is added fresh."""
    await queue.enqueue("first", mid="m")
    assert await ack(queue, await lease_one(queue), "s")
    assert await queue.message_status("m") is None
    assert (await queue.status()).ndone == 0
    assert await queue.enqueue("second", mid="m") == ADDED
    leased = await lease_one(queue)
    assert (leased.attempt, content_of(queue, leased)) == (1, "second")


async def test_failed_mid_is_added_fresh_and_loses_its_failure_record(queue: Queue) -> None:
    """Enqueuing a failed mid adds it fresh (attempt 1) and removes it from the failure history."""
    await queue.enqueue("first", mid="m")
    assert await ack(queue, await lease_one(queue), "f", reason="boom")
    assert await queue.message_status("m") == MessageStatus.FAILED
    assert (await queue.status()).nfailed == 1
    assert await queue.enqueue("second", mid="m") == ADDED
    assert await queue.message_status("m") == MessageStatus.QUEUED
    assert (await queue.status()).nfailed == 0
    leased = await lease_one(queue)
    assert (leased.attempt, content_of(queue, leased)) == (1, "second")


async def fail_with_pending_requeue(queue: Queue) -> None:
    """Mid 'm': lease 'first', requeue 'second', then ack Failure."""
    await queue.enqueue("first", mid="m")
    leased = await lease_one(queue)
    await queue.enqueue("second", mid="m", can_requeue=True)
    assert await ack(queue, leased, "f", reason="boom")


async def test_failure_with_pending_requeue_runs_the_requeue(queue: Queue) -> None:
    """After a failure, a pending requeue is queued (listed once by content()) and runs with attempt 1."""
    await fail_with_pending_requeue(queue)
    assert await queue.message_status("m") == MessageStatus.QUEUED
    assert [(entry.mid, entry.status, entry.content) for entry in await queue.content()] == [
        ("m", MessageStatus.QUEUED, "second")
    ]
    requeued = await lease_one(queue)
    assert (requeued.attempt, content_of(queue, requeued)) == (1, "second")


async def test_success_of_a_requeue_after_a_failure_forgets_the_mid(queue: Queue) -> None:
    """When the requeued life that followed a failure succeeds, the mid is gone (status None)."""
    await fail_with_pending_requeue(queue)
    requeued = await lease_one(queue)
    assert await ack(queue, requeued, "s")
    assert await queue.message_status("m") is None


# -- every status --------------------------------------------------------------------


async def test_every_message_status_is_reachable(queue: Queue) -> None:
    """One queue holds a mid in each of the eight statuses at once; an unknown mid reads None."""

    async def lease(mid: str) -> Leased:
        await queue.enqueue(mid, mid=mid)
        leased = await lease_one(queue)
        assert leased.mid == mid
        return leased

    await lease("locked")
    await lease("locked-rq")
    assert await queue.enqueue("new", mid="locked-rq", can_requeue=True) == EnqueueResult(
        ok=True, mid="locked-rq", action="added"
    )
    assert await ack(queue, await lease("backoff"), "s", backoff_ms=60_000)
    assert await ack(queue, await lease("done-rq"), "s", backoff_ms=60_000)
    await queue.enqueue("new", mid="done-rq", can_requeue=True)
    assert await ack(queue, await lease("failed"), "f")
    # Last lease: any later dequeue would collect this mid once its 1 ms window ends.
    assert await ack(queue, await lease("gc"), "s", backoff_ms=1)
    await queue.enqueue("q", mid="queued")
    await queue.enqueue("d", mid="delayed", delay=60)
    await eventually(lambda: status_is(queue, "gc", MessageStatus.DONE_AWAITING_GC), what="gc window end")

    expected = {
        "queued": MessageStatus.QUEUED,
        "delayed": MessageStatus.QUEUED_WITH_BACKOFF,
        "locked": MessageStatus.LOCKED,
        "locked-rq": MessageStatus.LOCKED_WITH_REQUEUE,
        "gc": MessageStatus.DONE_AWAITING_GC,
        "backoff": MessageStatus.DONE_WITH_BACKOFF,
        "done-rq": MessageStatus.DONE_WITH_REQUEUE,
        "failed": MessageStatus.FAILED,
        "unknown": None,
    }
    statuses = {mid: await queue.message_status(mid) for mid in expected}
    assert statuses == expected
    assert {status for status in statuses.values() if status is not None} == set(MessageStatus)
    listed = {entry.mid: entry.status for entry in await queue.content()}
    assert listed == {mid: status for mid, status in expected.items() if status is not None}


async def test_lapsed_lease_reads_queued_before_any_dequeue(queue: Queue) -> None:
    """A lease that ran out reads 'queued' at once, before a dequeue reclaims it."""
    await queue.enqueue("x", mid="m")
    await lease_one(queue, lock_ms=30)
    await eventually(lambda: status_is(queue, "m", MessageStatus.QUEUED), what="lease lapse")
    assert (await queue.status()).nqueued == 1
    assert await queue.enqueue("y", mid="m") == ALREADY_QUEUED


async def test_ended_delay_reads_queued_before_any_dequeue(queue: Queue) -> None:
    """A delay that ended reads 'queued' before a dequeue moves it to the ready list."""
    await queue.enqueue("x", mid="m", delay=0.03)
    assert await queue.message_status("m") == MessageStatus.QUEUED_WITH_BACKOFF
    await eventually(lambda: status_is(queue, "m", MessageStatus.QUEUED), what="delay end")
    assert (await queue.status()).nqueued == 1


# -- enqueue_many --------------------------------------------------------------------


async def test_enqueue_many_answers_in_order_in_one_script_call(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """enqueue_many sends one script call and answers one result per message, in order."""
    await queue.enqueue("old", mid="b")
    calls: list[int] = []
    original = ScriptClient.call_packed  # every script call goes through it

    async def counting(self: ScriptClient, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(ScriptClient, "call_packed", counting)
    results = await queue.enqueue_many(["A", "B", "C", None], mids=["a", "b", "c", None])
    monkeypatch.undo()
    assert len(calls) == 1
    assert [(r.mid, r.ok, r.action, r.error) for r in results[:3]] == [
        ("a", True, "added", None),
        ("b", False, None, "already-queued"),
        ("c", True, "added", None),
    ]
    assert results[3].ok
    assert RANDOM_MID.fullmatch(results[3].mid)
    reply = await dequeue(queue, 10)
    assert [leased.mid for leased in reply.messages] == ["b", "a", "c", results[3].mid]
    assert [content_of(queue, leased) for leased in reply.messages] == ["old", "A", "C", None]


async def test_enqueue_many_duplicates_in_one_batch(queue: Queue) -> None:
    """A mid repeated in one batch is added once; later copies are refused (or update with can_update)."""
    plain = await queue.enqueue_many([1, 2, 3], mids=["m", "m", "n"])
    assert [(r.mid, r.action, r.error) for r in plain] == [
        ("m", "added", None),
        ("m", None, "already-queued"),
        ("n", "added", None),
    ]
    assert await queue.size() == 2
    updating = await queue.enqueue_many([4, 5], mids=["x", "x"], can_update=True)
    assert [r.action for r in updating] == ["added", "updated"]
    reply = await dequeue(queue, 10)
    assert [(leased.mid, content_of(queue, leased)) for leased in reply.messages] == [
        ("m", 1),
        ("n", 3),
        ("x", 5),
    ]


async def test_enqueue_many_applies_options_to_every_message(queue: Queue) -> None:
    """delay and lock_timeout given to enqueue_many apply to each message."""
    results = await queue.enqueue_many(["a", "b"], mids=["a", "b"], delay=60, lock_timeout=3)
    assert all(r.action == "added" for r in results)
    assert await queue.message_status("a") == MessageStatus.QUEUED_WITH_BACKOFF
    assert await queue.message_status("b") == MessageStatus.QUEUED_WITH_BACKOFF
    assert (await queue.status()).nbackoff == 2
    assert await queue.enqueue_many([], mids=[]) == []


async def test_refusal_results_carry_no_action(make_queue: QueueFactory) -> None:
    """A refused enqueue is not ok, has its error, and no action."""
    queue = await make_queue()
    await queue.enqueue(1, mid="m")
    await lease_one(queue)
    result = await queue.enqueue(2, mid="m")
    assert result == EnqueueResult(ok=False, mid="m", action=None, error="locked")
