"""The Lua scripts driven directly: dequeue, ack, extend, leases, timing, keys."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import redis.asyncio as aioredis

from tests.conftest import QueueFactory
from tests.helpers import (
    HOUSEKEEPING_LIMIT,
    LONG_LOCK_MS,
    ack,
    dequeue,
    dequeue_until_handed_out,
    eventually,
    lease_one,
    scan_queue_keys,
)
from tests.layout import (
    FRESH,
    attempts,
    decode_entry,
    encode_pointer,
    failure,
    is_suspect,
    lease_token,
    payload,
    ready_mids,
    record,
)
from vermilion import MessageStatus, Queue, ScriptError
from vermilion._keys import KEY_PARTS, QueueKeys
from vermilion._scripts import SCRIPTS
from vermilion._wire import OutcomeRequest

READY_WITHIN_MS = 50


async def status_is(queue: Queue, mid: str, status: MessageStatus | None) -> bool:
    return await queue.message_status(mid) == status


# -- dequeue -------------------------------------------------------------------------


async def test_dequeue_hands_out_at_most_n_in_fifo_order(queue: Queue) -> None:
    """A batch dequeue hands out up to N ready messages, oldest first, each leased once."""
    mids = [f"m{i}" for i in range(10)]
    await queue.enqueue_many(range(10), mids=mids)
    first = await dequeue(queue, 3)
    assert [leased.mid for leased in first.messages] == mids[:3]
    assert first.ready == 7
    assert all(leased.attempt == 1 for leased in first.messages)
    assert all(leased.lock_ms == LONG_LOCK_MS for leased in first.messages)
    rest = await dequeue(queue, 100)
    assert [leased.mid for leased in rest.messages] == mids[3:]
    assert rest.ready == 0
    tokens = [leased.token for leased in first.messages + rest.messages]
    assert len(set(tokens)) == 10
    assert tokens == sorted(tokens)
    assert (await dequeue(queue, 100)).messages == []
    status = await queue.status()
    assert (status.nqueued, status.nlocked) == (0, 10)


async def test_dequeue_reports_enqueue_time_and_payload(queue: Queue) -> None:
    """Each handed-out message carries its payload and the server time it was enqueued."""
    before = (await dequeue(queue, 0)).now_ms
    await queue.enqueue({"k": [1, 2]}, mid="m")
    reply = await dequeue(queue, 1)
    [leased] = reply.messages
    assert queue.serializer.loads(leased.payload) == {"k": [1, 2]}
    assert before <= leased.enqueued_ms <= reply.now_ms


async def test_dequeue_skips_duplicate_and_stale_ready_hints(queue: Queue) -> None:
    """A mid listed twice in `ready` is handed out once; a hint without a message is dropped."""
    _, keys = queue._protocol
    await queue.enqueue("a", mid="a")
    garbage = [b"garbage", b"\x00", b"\x01\x05ab", b"\x00\x01a-too-long"]
    await queue.redis.rpush(
        keys.key("ready"), encode_pointer("a"), encode_pointer("ghost"), *garbage, encode_pointer("a")
    )
    reply = await dequeue(queue, 10)
    assert [leased.mid for leased in reply.messages] == ["a"]
    assert await queue.redis.llen(keys.key("ready")) == 0
    assert await attempts(queue.redis, keys, "a") == 1


async def test_dequeue_next_due_reports_the_earliest_event(queue: Queue) -> None:
    """next_due_ms is None for an empty queue, else the earliest delay end or lease end."""
    _, keys = queue._protocol
    assert (await dequeue(queue, 0)).next_due_ms is None
    await queue.enqueue("x", mid="late", delay=60)
    late_due = await queue.redis.zscore(keys.key("delayed"), "late")
    assert (await dequeue(queue, 0)).next_due_ms == late_due
    await queue.enqueue("x", mid="now")
    reply = await dequeue(queue, 1, lock_ms=5_000)
    assert reply.next_due_ms == reply.now_ms + 5_000


async def test_dequeue_drops_wakeup_tokens_only_when_the_queue_ran_dry(queue: Queue) -> None:
    """One token per enqueued message; tokens survive a full batch and are dropped when
    fewer than N were handed out."""
    _, keys = queue._protocol
    await queue.enqueue_many([1, 2, 3])
    assert await queue.redis.llen(keys.key("notify")) == 3
    assert len((await dequeue(queue, 2)).messages) == 2
    assert await queue.redis.llen(keys.key("notify")) == 3
    assert len((await dequeue(queue, 2)).messages) == 1
    assert await queue.redis.llen(keys.key("notify")) == 0


async def test_wakeup_tokens_are_capped(queue: Queue) -> None:
    """A large batch leaves at most 64 wake-up tokens waiting."""
    _, keys = queue._protocol
    await queue.enqueue_many(range(500))
    assert await queue.redis.llen(keys.key("notify")) == 64


async def test_single_enqueues_wake_once_and_a_full_dequeue_passes_a_token_on(queue: Queue) -> None:
    """v2 (replaces the cap of tokens pushed by single enqueues): a one-message enqueue pushes a
    wake-up token only when its message makes `ready` non-empty; a dequeue that hands out all it
    asked for and leaves work behind leaves one token, so that the next idle worker wakes for
    the rest; one that runs the queue dry drops them."""
    _, keys = queue._protocol
    for i in range(70):
        await queue.enqueue(i)
    assert await queue.redis.llen(keys.key("notify")) == 1
    await queue.redis.delete(keys.key("notify"))  # taken by a worker's BLPOP
    assert len((await dequeue(queue, 10)).messages) == 10
    assert await queue.redis.llen(keys.key("notify")) == 1
    assert len((await dequeue(queue, 10)).messages) == 10
    assert await queue.redis.llen(keys.key("notify")) == 1  # never more than one passed on
    assert len((await dequeue(queue, 100)).messages) == 50
    assert await queue.redis.llen(keys.key("notify")) == 0
    await queue.enqueue("one more")
    assert await queue.redis.llen(keys.key("notify")) == 1


async def test_wait_for_wakeup_times_out_on_an_idle_queue(queue: Queue) -> None:
    """BLPOP on an idle queue returns False after its timeout, True once an enqueue pushes a token."""
    conn, keys = queue._protocol
    started = time.monotonic()
    assert await conn.wait_for_wakeup(keys, 0.05) is None
    assert time.monotonic() - started >= 0.04
    waiter = asyncio.create_task(conn.wait_for_wakeup(keys, 5.0))
    await queue.enqueue(1)
    assert await asyncio.wait_for(waiter, 5.0) == keys.key("notify")


async def test_concurrent_dequeue_loops_hand_out_each_mid_exactly_once(
    queue: Queue, make_queue: QueueFactory
) -> None:
    """8 concurrent dequeue loops, each on its own connection, hand out 5,000 mids exactly once."""
    total = 5_000
    mids = [f"m{i}" for i in range(total)]
    assert all(r.ok for r in await queue.enqueue_many(range(total), mids=mids))
    handed: list[list[str]] = []
    tokens: list[int] = []

    async def consume(consumer: Queue) -> None:
        conn, keys = consumer._protocol
        mine: list[str] = []
        handed.append(mine)
        while True:
            reply = await conn.dequeue(keys, 25, LONG_LOCK_MS, HOUSEKEEPING_LIMIT)
            if not reply.messages:
                if reply.ready == 0:
                    return
                continue
            assert all(leased.attempt == 1 for leased in reply.messages)
            mine.extend(leased.mid for leased in reply.messages)
            tokens.extend(leased.token for leased in reply.messages)
            outcomes = [OutcomeRequest(leased.mid, leased.token, "s") for leased in reply.messages]
            assert all(await conn.ack(keys, outcomes, 10))

    consumers = [await make_queue(queue.name) for _ in range(8)]
    await asyncio.wait_for(asyncio.gather(*(consume(consumer) for consumer in consumers)), 20)
    everything = [mid for mine in handed for mid in mine]
    assert Counter(everything) == Counter(mids)
    assert len(set(tokens)) == total
    assert sum(1 for mine in handed if mine) >= 2
    status = await queue.status()
    assert (status.nqueued, status.nlocked, status.ntotal) == (0, 0, 0)


# -- leases --------------------------------------------------------------------------


async def test_lapsed_lease_is_handed_out_again_with_the_next_attempt(queue: Queue) -> None:
    """A lease that lapses is reclaimed and handed out again with attempt + 1 and a new token."""
    await queue.enqueue({"a": 1}, mid="m", lock_timeout=0.05)
    first_reply = await dequeue(queue, 1, lock_ms=LONG_LOCK_MS)
    [first] = first_reply.messages
    assert (first.attempt, first.lock_ms) == (1, 50)
    lease_end = first_reply.now_ms + 50
    reply = await dequeue_until_handed_out(queue, timeout=5.0)
    [second] = reply.messages
    assert reply.now_ms >= lease_end
    assert reply.reclaimed == 1
    assert (second.mid, second.attempt, second.lock_ms) == ("m", 2, 50)
    assert second.payload == first.payload
    assert second.token > first.token


async def test_lapsed_leases_go_to_the_head_of_the_ready_list(queue: Queue) -> None:
    """A reclaimed message is handed out before messages that were enqueued after it."""
    await queue.enqueue("x", mid="old", lock_timeout=0.03)
    await lease_one(queue)
    await queue.enqueue("y", mid="new")
    await eventually(lambda: status_is(queue, "old", MessageStatus.QUEUED), what="lease lapse")
    reply = await dequeue(queue, 2)
    assert [(leased.mid, leased.attempt) for leased in reply.messages] == [("old", 2), ("new", 1)]


async def test_stale_hints_never_hide_the_work_behind_them(queue: Queue) -> None:
    """Hints whose message is gone (evicted, say) are popped past: a dequeue of 2 finds the two
    live messages behind 300 dead hints, and the dead hints are gone afterwards."""
    _, keys = queue._protocol
    dead = [encode_pointer(f"ghost-{i}") if i % 2 else b"\x07garbage-%d" % i for i in range(300)]
    await queue.redis.rpush(keys.key("ready"), *dead)
    await queue.enqueue_many(["x", "y"], mids=["live-1", "live-2"])
    reply = await dequeue(queue, 2)
    assert [leased.mid for leased in reply.messages] == ["live-1", "live-2"]
    assert await queue.redis.llen(keys.key("ready")) == 0


async def lapse_as_suspects(queue: Queue, mids: list[str]) -> None:
    """Lease ``mids`` with a 20 ms lease and let it lapse: the next dequeue reclaims them."""
    await queue.enqueue_many(["x"] * len(mids), mids=mids, lock_timeout=0.02)
    assert len((await dequeue(queue, len(mids))).messages) == len(mids)

    async def all_lapsed() -> bool:
        return all([await status_is(queue, mid, MessageStatus.QUEUED) for mid in mids])

    await eventually(all_lapsed, what="lapse")


async def test_one_suspect_per_dequeue_and_the_rest_wait_behind_ready_work(queue: Queue) -> None:
    """Reclaimed mids are suspects: a dequeue hands out one (with max_suspects=1), moves the
    others to the tail of `ready`, and hands out the work behind them in their place."""
    conn, keys = queue._protocol
    await lapse_as_suspects(queue, ["s1", "s2", "s3"])
    await queue.enqueue_many(["y", "y"], mids=["n1", "n2"])
    reply = await conn.dequeue(keys, 5, LONG_LOCK_MS, HOUSEKEEPING_LIMIT, max_suspects=1)
    assert reply.reclaimed == 3
    assert [(m.mid, m.attempt, m.suspect) for m in reply.messages] == [
        ("s1", 2, True),
        ("n1", 1, False),
        ("n2", 1, False),
    ]
    assert reply.suspects_held_back == 2
    assert await ready_mids(queue.redis, keys) == ["s2", "s3"]
    # Fewer than asked for: the tokens now announce the held-back suspects, one each.
    assert await queue.redis.llen(keys.key("notify")) == 2


async def test_a_worker_holding_a_suspect_gets_none_and_an_ack_clears_one(queue: Queue) -> None:
    """max_suspects=0 hands out no suspect; an applied ack clears the mid's suspect mark."""
    conn, keys = queue._protocol
    await lapse_as_suspects(queue, ["s1", "s2"])
    held = await conn.dequeue(keys, 5, LONG_LOCK_MS, HOUSEKEEPING_LIMIT, max_suspects=0)
    assert held.messages == [] and held.suspects_held_back == 2
    first = await conn.dequeue(keys, 5, LONG_LOCK_MS, HOUSEKEEPING_LIMIT, max_suspects=1)
    [leased] = first.messages
    assert leased.suspect and first.suspects_held_back == 1
    assert await is_suspect(queue.redis, keys, leased.mid)
    assert await ack(queue, leased, "r")  # a retry: back in line, no longer a suspect
    assert not await is_suspect(queue.redis, keys, leased.mid)
    again = await conn.dequeue(keys, 5, LONG_LOCK_MS, HOUSEKEEPING_LIMIT, max_suspects=1)
    assert sorted((m.mid, m.suspect) for m in again.messages) == sorted(
        [(leased.mid, False), ("s2" if leased.mid == "s1" else "s1", True)]
    )


async def test_extend_keeps_a_lease_from_lapsing(queue: Queue) -> None:
    """A lease extended before it lapses is not handed out again; once extensions stop, it is."""
    conn, keys = queue._protocol
    await queue.enqueue("x", mid="m")
    reply = await dequeue(queue, 1, lock_ms=300)
    [leased] = reply.messages
    original_end = reply.now_ms + 300
    while True:
        assert await conn.extend(keys, [("m", leased.token, 300)]) == [True]
        probe = await dequeue(queue, 1, lock_ms=300)
        assert probe.messages == []
        if probe.now_ms > original_end + 200:
            break
        await asyncio.sleep(0.02)
    assert await queue.message_status("m") == MessageStatus.LOCKED
    again = await dequeue_until_handed_out(queue, lock_ms=300)
    assert again.messages[0].attempt == 2


async def test_extend_moves_the_lease_end(queue: Queue) -> None:
    """extend sets the lease end to server now + lock_ms."""
    conn, keys = queue._protocol
    await queue.enqueue("x", mid="m")
    reply = await dequeue(queue, 1, lock_ms=1_000)
    [leased] = reply.messages
    assert await queue.redis.zscore(keys.key("locks"), "m") == reply.now_ms + 1_000
    assert await conn.extend(keys, [("m", leased.token, 600_000)]) == [True]
    after = (await dequeue(queue, 0)).now_ms
    end = await queue.redis.zscore(keys.key("locks"), "m")
    assert end is not None
    assert reply.now_ms + 600_000 <= end <= after + 600_000


async def test_extend_is_fenced_by_the_lease_token(queue: Queue) -> None:
    """extend renews only current leases: wrong tokens, unknown and finished mids answer False."""
    conn, keys = queue._protocol
    await queue.enqueue_many([1, 2], mids=["a", "b"])
    a, b = (await dequeue(queue, 2, lock_ms=10_000)).messages
    a_end = await queue.redis.zscore(keys.key("locks"), "a")
    assert await ack(queue, b, "s")
    replies = await conn.extend(
        keys, [("a", a.token + 1, 60_000), ("ghost", a.token, 60_000), ("b", b.token, 60_000)]
    )
    assert replies == [False, False, False]
    assert await queue.redis.zscore(keys.key("locks"), "a") == a_end
    assert await queue.redis.zscore(keys.key("locks"), "ghost") is None
    assert await queue.redis.zscore(keys.key("locks"), "b") is None
    assert await conn.extend(keys, [("ghost", 1, 1), ("a", a.token, 60_000)]) == [False, True]


async def test_extend_renews_a_lapsed_lease_nobody_reclaimed(queue: Queue) -> None:
    """A lease that lapsed but was not reclaimed is still its holder's: extend renews it."""
    conn, keys = queue._protocol
    await queue.enqueue("x", mid="m")
    leased = await lease_one(queue, lock_ms=20)
    await eventually(lambda: status_is(queue, "m", MessageStatus.QUEUED), what="lease lapse")
    assert await conn.extend(keys, [("m", leased.token, LONG_LOCK_MS)]) == [True]
    assert await queue.message_status("m") == MessageStatus.LOCKED
    assert (await dequeue(queue)).messages == []
    assert await ack(queue, leased, "s")
    assert await queue.message_status("m") is None


async def test_late_ack_after_a_lapse_is_stale_and_changes_nothing(queue: Queue) -> None:
    """carmine-mq §8.2: A's late ack is stale, B completes the message, a new enqueue starts clean."""
    conn, keys = queue._protocol
    await queue.enqueue("v1", mid="m")
    a = await lease_one(queue, lock_ms=50)
    b_reply = await dequeue_until_handed_out(queue, lock_ms=LONG_LOCK_MS)
    [b] = b_reply.messages
    assert (b.mid, b.attempt) == ("m", 2)
    assert b.token != a.token
    b_end = await queue.redis.zscore(keys.key("locks"), "m")

    assert await ack(queue, a, "s") is False
    assert await ack(queue, a, "r") is False
    assert await ack(queue, a, "f", reason="late") is False
    assert await conn.extend(keys, [("m", a.token, LONG_LOCK_MS)]) == [False]
    assert await queue.message_status("m") == MessageStatus.LOCKED
    assert await queue.redis.zscore(keys.key("locks"), "m") == b_end
    assert await lease_token(queue.redis, keys, "m") == b.token
    assert await attempts(queue.redis, keys, "m") == 2
    assert (await queue.status()).nfailed == 0

    assert await ack(queue, b, "s") is True
    assert await queue.message_status("m") is None
    assert await ack(queue, a, "s") is False
    assert await ack(queue, b, "s") is False
    for part in ("records", "requeue", "errors"):
        assert not await queue.redis.hexists(keys.key(part), "m"), part
    for part in ("delayed", "locks", "done", "failed"):
        assert await queue.redis.zscore(keys.key(part), "m") is None, part
    assert not await queue.redis.sismember(keys.key("mids"), "m")
    assert "m" not in await ready_mids(queue.redis, keys)

    assert (await queue.enqueue("v2", mid="m")).action == "added"
    assert await queue.message_status("m") == MessageStatus.QUEUED
    fresh = await lease_one(queue)
    assert (fresh.attempt, queue.serializer.loads(fresh.payload)) == (1, "v2")
    assert await ack(queue, a, "s") is False
    assert await ack(queue, b, "s") is False
    assert await queue.message_status("m") == MessageStatus.LOCKED
    assert await ack(queue, fresh, "s") is True
    assert await queue.message_status("m") is None


async def test_ack_after_clear_is_stale_even_for_a_new_life(queue: Queue) -> None:
    """After clear(), an old lease never matches the new life's lease, however fast the new life starts."""
    for _ in range(100):
        await queue.enqueue("x", mid="m")
        old = await lease_one(queue)
        assert await queue.clear() == 1
        assert await ack(queue, old, "s") is False
        await queue.enqueue("y", mid="m")
        new = await lease_one(queue)
        assert await ack(queue, old, "s") is False, f"old token {old.token} completed the new lease"
        assert await queue.message_status("m") == MessageStatus.LOCKED
        assert new.token != old.token
        assert await ack(queue, new, "s") is True
        assert await queue.clear() == 0


# -- outcomes ------------------------------------------------------------------------


async def test_retry_without_backoff_requeues_at_the_tail(queue: Queue) -> None:
    """Retry() makes the message ready again behind waiting ones, with attempt + 1 and its content."""
    await queue.enqueue_many(["A", "B"], mids=["a", "b"])
    a = await lease_one(queue)
    assert await ack(queue, a, "r")
    assert await queue.message_status("a") == MessageStatus.QUEUED
    reply = await dequeue(queue, 5)
    assert [(leased.mid, leased.attempt) for leased in reply.messages] == [("b", 1), ("a", 2)]
    assert queue.serializer.loads(reply.messages[1].payload) == "A"


async def test_retry_with_backoff_is_ready_within_50ms_of_its_due_time(queue: Queue) -> None:
    """Retry(backoff) reads queued-with-backoff, then is handed out no earlier than due and within 50 ms."""
    _, keys = queue._protocol
    await queue.enqueue("x", mid="m")
    leased = await lease_one(queue)
    assert await ack(queue, leased, "r", backoff_ms=200)
    assert await queue.message_status("m") == MessageStatus.QUEUED_WITH_BACKOFF
    assert (await queue.status()).nbackoff == 1
    due = await queue.redis.zscore(keys.key("delayed"), "m")
    assert due is not None
    reply = await dequeue_until_handed_out(queue)
    assert due <= reply.now_ms <= due + READY_WITHIN_MS
    assert reply.messages[0].attempt == 2


async def test_delayed_message_is_ready_within_50ms_of_its_due_time(queue: Queue) -> None:
    """A delayed message is handed out no earlier than its due time, and within 50 ms of it."""
    _, keys = queue._protocol
    await queue.enqueue("x", mid="m", delay=0.2)
    due = await queue.redis.zscore(keys.key("delayed"), "m")
    assert due is not None
    early = await dequeue(queue)
    assert early.messages == []
    assert early.next_due_ms == due
    reply = await dequeue_until_handed_out(queue)
    assert due <= reply.now_ms <= due + READY_WITHIN_MS
    assert reply.messages[0].attempt == 1


async def test_success_with_backoff_keeps_the_mid_until_its_window_ends(queue: Queue) -> None:
    """Success(backoff) keeps the mid done-with-backoff; a dequeue after the window forgets it."""
    _, keys = queue._protocol
    await queue.enqueue("x", mid="m")
    assert await ack(queue, await lease_one(queue), "s", backoff_ms=100)
    assert await queue.message_status("m") == MessageStatus.DONE_WITH_BACKOFF
    assert not await queue.redis.hexists(keys.key("records"), "m")
    assert await payload(queue.redis, keys, "m") is None
    assert (await queue.status()).ndone == 1

    async def collected() -> bool:
        await dequeue(queue, 0)
        return await queue.message_status("m") is None

    await eventually(collected, what="garbage collection")
    assert (await queue.status()).ndone == 0


async def test_failure_is_recorded_with_its_reason(queue: Queue) -> None:
    """Failure makes the mid 'failed', counted in nfailed, with its reason kept."""
    _, keys = queue._protocol
    await queue.enqueue("x", mid="m")
    assert await ack(queue, await lease_one(queue), "f", reason="boom: bad input")
    assert await queue.message_status("m") == MessageStatus.FAILED
    status = await queue.status()
    assert (status.nfailed, status.nqueued, status.nlocked, status.ntotal) == (1, 0, 0, 0)
    kept = await failure(queue.redis, keys, "m")
    assert kept is not None
    assert (kept.reason, kept.attempts, kept.lock_ms) == ("boom: bad input", 1, 0)
    assert kept.payload is not None and queue.serializer.loads(kept.payload) == "x"
    assert not await queue.redis.hexists(keys.key("records"), "m")
    assert await payload(queue.redis, keys, "m") is None
    assert (await dequeue(queue)).messages == []


async def test_failure_history_is_trimmed_to_failure_history(make_queue: QueueFactory) -> None:
    """With failure_history=3, only the three newest failures are kept."""
    queue = await make_queue(failure_history=3)
    _, keys = queue._protocol
    for i in range(5):
        await queue.enqueue(i, mid=f"f{i}")
        assert await ack(queue, await lease_one(queue), "f", reason=f"r{i}")
    assert (await queue.status()).nfailed == 3
    statuses = [await queue.message_status(f"f{i}") for i in range(5)]
    assert statuses == [None, None, MessageStatus.FAILED, MessageStatus.FAILED, MessageStatus.FAILED]
    assert sorted(await queue.redis.hkeys(keys.key("errors"))) == [b"f2", b"f3", b"f4"]


async def test_failure_history_of_zero_keeps_nothing(make_queue: QueueFactory) -> None:
    """With failure_history=0 a failure is applied but not remembered."""
    queue = await make_queue(failure_history=0)
    await queue.enqueue("x", mid="m")
    assert await ack(queue, await lease_one(queue), "f", reason="boom")
    assert await queue.message_status("m") is None
    assert (await queue.status()).nfailed == 0


async def test_one_ack_can_trim_a_long_failure_history(make_queue: QueueFactory) -> None:
    """Lowering failure_history below a long existing history still lets a failure ack apply and trim."""
    queue = await make_queue(failure_history=10)
    _, keys = queue._protocol
    await queue.redis.zadd(keys.key("failed"), {f"old{i}": i for i in range(9_000)})
    await queue.enqueue("x", mid="m")
    leased = await lease_one(queue)
    assert await ack(queue, leased, "f", reason="boom") is True
    assert (await queue.status()).nfailed == 10
    assert await queue.message_status("m") == MessageStatus.FAILED


async def test_ack_applies_a_batch_of_mixed_outcomes(queue: Queue) -> None:
    """One ack call applies success, retry and failure outcomes and answers each in order."""
    conn, keys = queue._protocol
    await queue.enqueue_many([1, 2, 3], mids=["s", "r", "f"])
    leases = (await dequeue(queue, 3)).messages
    kinds: dict[str, str] = {"s": "s", "r": "r", "f": "f"}
    outcomes = [OutcomeRequest(leased.mid, leased.token, kinds[leased.mid], 0, "why") for leased in leases]  # type: ignore[arg-type]
    outcomes.append(OutcomeRequest("s", leases[0].token, "s"))
    assert await conn.ack(keys, outcomes, 10) == [True, True, True, False]
    assert await queue.message_status("s") is None
    assert await queue.message_status("r") == MessageStatus.QUEUED
    assert await queue.message_status("f") == MessageStatus.FAILED


# -- argument checks in the scripts ----------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (OutcomeRequest("b", 1, "x"), "bad outcome"),  # type: ignore[arg-type]
        (OutcomeRequest("b", 0, "s"), "bad token"),
        (OutcomeRequest("b", 1, "r", -5), "bad backoff_ms"),
    ],
    ids=["unknown-kind", "token-zero", "negative-backoff"],
)
async def test_ack_checks_every_outcome_before_writing(
    queue: Queue, bad: OutcomeRequest, message: str
) -> None:
    """A bad outcome anywhere in a batch fails the whole ack before any outcome is applied."""
    conn, keys = queue._protocol
    await queue.enqueue("x", mid="a")
    a = await lease_one(queue)
    with pytest.raises(ScriptError, match=message):
        await conn.ack(keys, [OutcomeRequest("a", a.token, "s"), bad], 10)
    assert await queue.message_status("a") == MessageStatus.LOCKED
    assert await lease_token(queue.redis, keys, "a") == a.token


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1001, 1000, 10), "max_messages above 1000"),
        ((-1, 1000, 10), "bad max_messages"),
        ((1, 0, 10), "bad default_lock_ms"),
        ((1, 1000, 0), "bad housekeeping_limit"),
    ],
    ids=["too-many", "negative-count", "zero-lock", "zero-limit"],
)
async def test_dequeue_refuses_bad_arguments_before_writing(
    queue: Queue, args: tuple[int, int, int], message: str
) -> None:
    """dequeue refuses out-of-range arguments and leaves the queue untouched."""
    conn, keys = queue._protocol
    await queue.enqueue("x", mid="m")
    with pytest.raises(ScriptError, match=message):
        await conn.dequeue(keys, *args)
    assert await queue.message_status("m") == MessageStatus.QUEUED
    assert await record(queue.redis, keys, "m") is None
    assert await attempts(queue.redis, keys, "m") == 0
    assert await ready_mids(queue.redis, keys) == ["m"]


async def test_extend_refuses_bad_arguments_before_writing(queue: Queue) -> None:
    """extend with a bad lock_ms anywhere in the batch renews nothing."""
    conn, keys = queue._protocol
    await queue.enqueue("x", mid="m")
    leased = await lease_one(queue, lock_ms=1_000)
    end = await queue.redis.zscore(keys.key("locks"), "m")
    with pytest.raises(ScriptError, match="bad lock_ms"):
        await conn.extend(keys, [("m", leased.token, 60_000), ("m", leased.token, 0)])
    assert await queue.redis.zscore(keys.key("locks"), "m") == end


async def test_large_housekeeping_limit_moves_every_due_delay(queue: Queue) -> None:
    """A housekeeping_limit above 8,000 moves that many due delays in one dequeue."""
    conn, keys = queue._protocol
    total = 8_500
    await queue.enqueue_many(range(total), delay=0.001)

    async def all_due() -> bool:
        return (await queue.status()).nqueued == total

    await eventually(all_due, what="delays ended")
    reply = await conn.dequeue(keys, 10, LONG_LOCK_MS, 10_000)
    assert len(reply.messages) == 10
    assert reply.ready == total - 10


# -- scripts and keys ----------------------------------------------------------------


async def test_noscript_after_script_flush_is_recovered(queue: Queue, redis: aioredis.Redis) -> None:
    """After SCRIPT FLUSH every operation re-sends its script transparently."""
    conn, keys = queue._protocol
    await queue.enqueue("x", mid="a")
    await redis.script_flush()
    assert await redis.script_exists(SCRIPTS["enqueue"].sha.decode()) == [False]
    assert (await queue.enqueue("y", mid="b")).action == "added"
    assert await redis.script_exists(SCRIPTS["enqueue"].sha.decode()) == [True]
    await redis.script_flush()
    assert await queue.message_status("a") == MessageStatus.QUEUED
    await redis.script_flush()
    assert (await queue.status()).nqueued == 2
    await redis.script_flush()
    a = await lease_one(queue)
    await redis.script_flush()
    assert await conn.extend(keys, [("a", a.token, LONG_LOCK_MS)]) == [True]
    await redis.script_flush()
    assert await ack(queue, a, "s")
    await redis.script_flush()
    assert [entry.mid for entry in await queue.content()] == ["b"]
    await redis.script_flush()
    assert await queue.clear() == 1


def crc16_xmodem(data: bytes) -> int:
    """CRC16/XMODEM (poly 0x1021, init 0), the checksum Redis Cluster uses for key slots."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: bytes) -> int:
    """The Redis Cluster slot of a key, honouring the hash-tag rule."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16_xmodem(key) % 16384


def test_cluster_slot_helper_matches_the_redis_spec() -> None:
    """The test's CRC16 and hash-tag rule reproduce the vectors of the Redis Cluster spec."""
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert key_slot(b"somekey") == 11058
    assert key_slot(b"foo{hash_tag}") == key_slot(b"bar{hash_tag}") == 2515
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers")
    assert key_slot(b"foo{}{bar}") == crc16_xmodem(b"foo{}{bar}") % 16384
    assert key_slot(b"foo{{bar}}zap") == crc16_xmodem(b"{bar") % 16384
    assert key_slot(b"foo{bar}{zap}") == crc16_xmodem(b"bar") % 16384


@pytest.mark.parametrize(
    "name",
    ["q", "emails", "jobs:high.v2-x_y", "x" * 200, "a:b:c"],
    ids=["short", "word", "punctuated", "longest", "colons"],
)
def test_every_key_of_a_queue_hashes_to_one_slot(name: str) -> None:
    """Every key of a queue lives in the slot of its name, through the `{<queue>}` hash tag."""
    keys = QueueKeys.for_queue(name)
    assert len(keys.keys) == len(KEY_PARTS) == len(set(keys.keys)) == 11
    assert [key.decode() for key in keys.keys] == [f"vermilion:{{{name}}}:v2:{part}" for part in KEY_PARTS]
    assert {key_slot(key) for key in keys.keys} == {crc16_xmodem(name.encode()) % 16384}


async def test_scripts_touch_only_the_queue_keys(queue: Queue) -> None:
    """After every kind of operation, the only keys in Redis mentioning the queue are its own."""
    conn, keys = queue._protocol
    await queue.enqueue_many(["a", "b", "c", "d"], mids=["s", "r", "f", "l"], lock_timeout=5)
    await queue.enqueue("x", mid="delayed", delay=60)
    leases = {leased.mid: leased for leased in (await dequeue(queue, 4)).messages}
    await queue.enqueue("again", mid="l", can_requeue=True)
    await conn.extend(keys, [("l", leases["l"].token, 10_000)])
    assert await ack(queue, leases["s"], "s", backoff_ms=60_000)
    assert await ack(queue, leases["r"], "r", backoff_ms=60_000)
    assert await ack(queue, leases["f"], "f", reason="boom")
    await queue.status()
    await queue.content()
    await queue.message_status("s")
    found = {key async for key in queue.redis.scan_iter(match=f"*{queue.name}*", count=1000)}
    assert found
    assert found <= set(keys.keys)
    assert set(await scan_queue_keys(queue.redis, queue.name)) == found


# -- the type check of enqueue's one-new-message path ---------------------------------

# The type of each key (docs/redis-layout.md), and a collection of another type.
KEY_TYPES = {
    "mids": "set", "ready": "list", "records": "hash", "delayed": "zset", "locks": "zset",
    "done": "zset", "requeue": "hash", "failed": "zset", "errors": "hash", "notify": "list",
    "meta": "hash",
}  # fmt: skip
OTHER_COLLECTION = {"hash": "list", "list": "hash", "zset": "hash", "set": "list", "string": "hash"}


async def overwrite(redis: aioredis.Redis, key: bytes, kind: str) -> None:
    await redis.delete(key)
    if kind == "string":
        await redis.set(key, b"foreign")
    elif kind == "hash":
        await redis.hset(key, "foreign", "1")
    elif kind == "list":
        await redis.rpush(key, "foreign")
    else:
        raise AssertionError(kind)


async def queue_with_history(queue: Queue) -> None:
    """Every key of the queue exists, meta (seq) included: a message of each kind has passed."""
    for mid in ("done", "failed", "locked"):
        await queue.enqueue(mid, mid=mid, lock_timeout=60)
    leased = {m.mid: m for m in (await dequeue(queue, 3)).messages}
    assert await ack(queue, leased["done"], "s", backoff_ms=3_600_000)
    assert await ack(queue, leased["failed"], "f", reason="boom")
    await queue.enqueue("again", mid="locked", can_requeue=True, lock_timeout=60)
    await queue.enqueue("later", mid="later", delay=3600)
    await queue.enqueue("ready", mid="ready")


async def contents(redis: aioredis.Redis, keys: QueueKeys) -> dict[bytes, object]:
    """Every key's type and logical contents: what a write that was undone must leave as it was.

    (DUMP would differ after an undone SADD: a set's encoding keeps its insertion history.)
    """
    found: dict[bytes, object] = {}
    for key in keys.keys:
        kind = str(await redis.type(key), "ascii")  # type: ignore[arg-type]
        if kind == "set":
            found[key] = (kind, sorted(await redis.smembers(key)))
        elif kind == "list":
            found[key] = (kind, await redis.lrange(key, 0, -1))
        elif kind == "hash":
            found[key] = (kind, sorted((await redis.hgetall(key)).items()))
        elif kind == "zset":
            found[key] = (kind, await redis.zrange(key, 0, -1, withscores=True))
        else:
            found[key] = (kind, await redis.dump(key))
    return found


# The keys the one-message path of a new mid, ready now, touches (`notify` only when the
# message makes `ready` non-empty; `meta` read only, for a bound).
FAST_PATH_KEYS = ("meta", "mids", "ready")


@pytest.mark.parametrize("part", [*FAST_PATH_KEYS, "notify"])
async def test_one_new_message_refuses_a_string_at_a_key_it_touches(queue: Queue, part: str) -> None:
    """A key the one-message path touches overwritten with a string fails the enqueue, named,
    and leaves every key's contents as they were (a write before the failing command is undone)."""
    _, keys = queue._protocol
    await queue_with_history(queue)
    if part == "notify":
        await queue.redis.delete(keys.key("ready"))  # the new message then wakes a worker
    await overwrite(queue.redis, keys.key(part), "string")
    before = await contents(queue.redis, keys)
    with pytest.raises(ScriptError, match=f"{keys.key(part).decode()} holds a string, not a"):
        await queue.enqueue("new", mid="new")
    assert await contents(queue.redis, keys) == before


@pytest.mark.parametrize("part", [p for p in KEY_PARTS if p not in (*FAST_PATH_KEYS, "notify")])
async def test_one_new_message_passes_a_string_at_a_key_it_does_not_touch(queue: Queue, part: str) -> None:
    """Documented limit (v2: the one-message path reads only the keys it writes, which v1 checked
    for strings with one MGET of all): the message is added whole; the next dequeue refuses the
    queue, naming the key, and writes nothing."""
    _, keys = queue._protocol
    await queue_with_history(queue)
    await overwrite(queue.redis, keys.key(part), "string")
    result = await queue.enqueue("new", mid="new")
    assert (result.ok, result.action) == (True, "added")
    before = await contents(queue.redis, keys)
    with pytest.raises(ScriptError, match=f"{keys.key(part).decode()} holds a string, not a"):
        await dequeue(queue, 1)
    assert await contents(queue.redis, keys) == before


# The keys a one-message enqueue of a new mid touches, and the options that make it touch them.
# (v2: the payload, enqueue time and own lease are in the fresh entry in `ready`; `mids` says
# whether the mid is known, which v1 read from `enqueued`, `done` and `failed`.)
TOUCHED: list[tuple[str, dict[str, float]]] = [
    ("mids", {}),
    ("ready", {}),
    ("ready", {"lock_timeout": 30}),
    ("records", {"delay": 60}),
    ("delayed", {"delay": 60}),
]


@pytest.mark.parametrize(
    ("part", "options"), TOUCHED, ids=[part + "".join(f"-{o}" for o in options) for part, options in TOUCHED]
)
async def test_one_new_message_refuses_another_collection_at_a_key_it_touches(
    queue: Queue, part: str, options: dict[str, float]
) -> None:
    """A key the one-message path reads or writes holding another collection type fails the
    call, named, with every key as it was."""
    _, keys = queue._protocol
    await queue_with_history(queue)
    wrong = OTHER_COLLECTION[KEY_TYPES[part]]
    await overwrite(queue.redis, keys.key(part), wrong)
    before = await contents(queue.redis, keys)
    with pytest.raises(ScriptError, match=f"{keys.key(part).decode()} holds a {wrong}, not a"):
        await queue.enqueue("new", mid="new", **options)  # type: ignore[arg-type]
    assert await contents(queue.redis, keys) == before


async def test_the_two_argument_enqueue_is_the_full_form_with_default_options(queue: Queue) -> None:
    """The client sends one message with the default options as mid and payload alone; the
    script reads that as the full form ('0', '', '0', mid, payload): the same entries, and the
    same answers for a new mid, a known one, and one known through the other form."""
    client, keys = queue._protocol
    script = SCRIPTS["enqueue"]

    async def call(*argv: str) -> list[str]:
        reply = await client.call_script(script, keys, argv, replayable=False)
        return [item.decode() for item in reply]

    assert await call("two", "p") == ["added"]
    assert await call("0", "", "0", "five", "p") == ["added"]
    assert await call("two", "q") == ["already-queued"]
    assert await call("five", "q") == ["already-queued"]
    assert await call("0", "", "0", "two", "q") == ["already-queued"]
    entries = [decode_entry(raw) for raw in await queue.redis.lrange(keys.key("ready"), 0, -1)]
    assert [(e.kind, e.mid, e.lock_ms, e.payload) for e in entries] == [
        (FRESH, "two", None, b"p"),
        (FRESH, "five", None, b"p"),
    ]
    # An empty mid is refused in either form, before anything is written.
    with pytest.raises(ScriptError, match="empty mid"):
        await call("", "p")
    assert await ready_mids(queue.redis, keys) == ["two", "five"]


async def test_one_new_message_passes_a_collection_of_another_type_it_does_not_touch(
    queue: Queue,
) -> None:
    """Documented limit: the one-message path does not read `locks`, so a hash there (not a
    string) lets it add its message, whole; the next dequeue refuses the queue, naming the key."""
    _, keys = queue._protocol
    await queue_with_history(queue)
    await overwrite(queue.redis, keys.key("locks"), "hash")
    result = await queue.enqueue("new", mid="new")
    assert (result.ok, result.action) == (True, "added")
    assert await payload(queue.redis, keys, "new") is not None
    assert await ready_mids(queue.redis, keys) == ["ready", "new"]
    with pytest.raises(ScriptError, match=f"{keys.key('locks').decode()} holds a hash, not a zset"):
        await dequeue(queue, 1)


@pytest.mark.parametrize("part", ["mids", "records", "ready", "locks", "notify"])
async def test_a_batch_of_new_mids_refuses_a_wrong_typed_key_before_any_write(
    queue: Queue, part: str
) -> None:
    """enqueue_many of mids the queue does not know (written without the per-mid branch
    table) still checks every key first: a string at any of them fails it, named, unchanged."""
    _, keys = queue._protocol
    await queue_with_history(queue)
    await overwrite(queue.redis, keys.key(part), "string")
    before = await contents(queue.redis, keys)
    with pytest.raises(ScriptError, match=f"{keys.key(part).decode()} holds a string, not a"):
        await queue.enqueue_many(["a", "b", "c"])
    assert await contents(queue.redis, keys) == before
