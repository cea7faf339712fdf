"""The Queue client: counts, lag, content, clearing, queue names, repr."""

from __future__ import annotations

import uuid
from datetime import timedelta

import redis.asyncio as aioredis

from tests.conftest import QueueFactory
from tests.helpers import ack, dequeue, eventually, lease_one, scan_queue_keys
from tests.layout import payload, record
from vermilion import JsonSerializer, MessageStatus, Queue, QueueStatus, clear_queues, queue_names
from vermilion._keys import QueueKeys


async def test_status_counts_each_kind_of_message(queue: Queue) -> None:
    """QueueStatus counts ready, locked, delayed, done and failed messages separately."""
    await queue.enqueue_many(["l", "d", "f"], mids=["locked", "done", "failed"])
    leases = {leased.mid: leased for leased in (await dequeue(queue, 3)).messages}
    assert await ack(queue, leases["done"], "s", backoff_ms=60_000)
    assert await ack(queue, leases["failed"], "f")
    await queue.enqueue_many(["r1", "r2"], mids=["ready1", "ready2"])
    await queue.enqueue("x", mid="delayed", delay=60)
    status = await queue.status()
    assert (status.nqueued, status.nlocked, status.nbackoff, status.ndone, status.nfailed) == (2, 1, 1, 1, 1)
    assert status.ntotal == 2 + 1 + 1 + 1
    assert status.lag >= 0
    assert await queue.size() == 2


async def test_status_of_an_empty_queue_is_all_zero(queue: Queue) -> None:
    """An unknown (empty) queue reports zero everywhere, lag included."""
    assert await queue.status() == QueueStatus(0, 0, 0, 0, 0, 0, 0.0)
    assert await queue.size() == 0


async def test_lag_grows_while_a_ready_message_waits(queue: Queue) -> None:
    """Lag is the age of the oldest ready message: above zero once it waited, zero once handed out."""
    await queue.enqueue("x", mid="m")

    async def lagging() -> bool:
        return (await queue.status()).lag >= 0.02

    await eventually(lagging, what="lag above 20 ms")
    lag = (await queue.status()).lag
    assert 0.02 <= lag < 10
    await lease_one(queue)
    assert (await queue.status()).lag == 0


async def test_lag_ignores_delayed_and_locked_messages(queue: Queue) -> None:
    """A delayed message not yet due and a running lease add no lag."""
    await queue.enqueue("x", mid="locked")
    await lease_one(queue)
    await queue.enqueue("y", mid="delayed", delay=60)
    status = await queue.status()
    assert (status.nqueued, status.lag) == (0, 0.0)


async def test_lag_counts_from_the_end_of_a_delay(queue: Queue) -> None:
    """A message that became ready after its delay lags from its due time, not from its enqueue."""
    await queue.enqueue("x", mid="m", delay=0.3)

    async def due_now() -> bool:
        return (await queue.status()).nqueued == 1

    await eventually(due_now, what="delay end")
    assert (await queue.status()).lag < 0.25


async def test_status_counts_lapsed_leases_and_ended_delays_as_queued(queue: Queue) -> None:
    """nqueued includes lapsed leases and ended delays that no dequeue has moved yet."""
    await queue.enqueue("x", mid="lapsing")
    await lease_one(queue, lock_ms=20)
    await queue.enqueue("y", mid="due", delay=0.02)

    async def both_queued() -> bool:
        status = await queue.status()
        return (status.nqueued, status.nlocked, status.nbackoff) == (2, 0, 0)

    await eventually(both_queued, what="lapse and delay end")

    async def lagging() -> bool:
        return (await queue.status()).lag > 0

    await eventually(lagging, what="lag above zero")


async def test_content_lists_every_message_with_details(queue: Queue) -> None:
    """content() lists each mid with status, attempts, age, backoff left and decoded content."""
    await queue.enqueue("l", mid="locked")
    await lease_one(queue)
    await queue.enqueue("d", mid="done")
    assert await ack(queue, await lease_one(queue), "s", backoff_ms=60_000)
    await queue.enqueue("requeued", mid="done", can_requeue=True)
    await queue.enqueue("f", mid="failed")
    assert await ack(queue, await lease_one(queue), "f", reason="boom")
    await queue.enqueue({"n": 1}, mid="ready")
    assert await ack(queue, await lease_one(queue), "r")
    await queue.enqueue([2], mid="delayed", delay=60)

    entries = {entry.mid: entry for entry in await queue.content()}
    assert set(entries) == {"ready", "delayed", "locked", "done", "failed"}
    ready = entries["ready"]
    assert (ready.status, ready.attempts, ready.content, ready.backoff) == (
        MessageStatus.QUEUED,
        1,
        {"n": 1},
        None,
    )
    assert ready.age is not None
    assert 0 <= ready.age < 10
    delayed = entries["delayed"]
    assert (delayed.status, delayed.attempts, delayed.content) == (MessageStatus.QUEUED_WITH_BACKOFF, 0, [2])
    assert delayed.backoff is not None
    assert 59 < delayed.backoff <= 60
    locked = entries["locked"]
    assert (locked.status, locked.attempts, locked.content) == (MessageStatus.LOCKED, 1, "l")
    done = entries["done"]
    assert (done.status, done.content, done.age) == (MessageStatus.DONE_WITH_REQUEUE, "requeued", None)
    assert done.backoff is not None
    assert 59 < done.backoff <= 60
    failed_entry = entries["failed"]
    # The failure history keeps the payload and the attempts of the life that failed.
    assert (
        failed_entry.status,
        failed_entry.content,
        failed_entry.attempts,
        failed_entry.backoff,
        failed_entry.error,
    ) == (MessageStatus.FAILED, "f", 1, None, "boom")
    assert {entry.error for mid, entry in entries.items() if mid != "failed"} == {None}


async def test_content_shows_undecodable_payloads_as_bytes(queue: Queue) -> None:
    """Content that cannot be decoded is listed as its raw bytes instead of failing."""
    _, keys = queue._protocol
    await queue.enqueue("x", mid="m")
    [fresh] = await queue.redis.lrange(keys.key("ready"), 0, -1)
    assert isinstance(fresh, bytes)
    await queue.redis.lset(keys.key("ready"), 0, fresh[: -len(queue.serializer.dumps("x"))] + b"\xc1")  # type: ignore[arg-type]
    [entry] = await queue.content()
    assert (entry.mid, entry.content) == ("m", b"\xc1")


async def test_content_of_an_empty_queue_is_empty(queue: Queue) -> None:
    """content() of a queue without messages is an empty list."""
    assert await queue.content() == []


async def test_clear_removes_every_key_but_the_lease_counter(queue: Queue, redis: aioredis.Redis) -> None:
    """clear() deletes every key but the lease counter and answers how many live messages it removed."""
    await queue.enqueue_many([1, 2, 3], mids=["a", "b", "c"])
    await queue.enqueue(4, mid="delayed", delay=60)
    a = await lease_one(queue)
    b = await lease_one(queue)
    assert await ack(queue, a, "s", backoff_ms=60_000)
    assert await ack(queue, b, "f")
    _, keys = queue._protocol
    assert len(await scan_queue_keys(redis, queue.name)) > 5
    assert await queue.clear() == 2
    # Only the lease counter stays (with the protocol version), so that tokens never repeat.
    assert await scan_queue_keys(redis, queue.name) == [keys.key("meta")]
    assert await queue.status() == QueueStatus(0, 0, 0, 0, 0, 0, 0.0)
    for mid in "abc":
        assert await queue.message_status(mid) is None
    assert await queue.clear() == 0


async def test_clear_leaves_other_queues_alone(make_queue: QueueFactory, redis: aioredis.Redis) -> None:
    """Clearing one queue keeps a queue whose name it is a prefix of."""
    short = await make_queue(f"clr-{uuid.uuid4().hex[:8]}")
    longer = await make_queue(f"{short.name}x")
    await short.enqueue(1)
    await longer.enqueue(2)
    assert await short.clear() == 1
    assert await longer.size() == 1
    assert await scan_queue_keys(redis, longer.name)


async def test_queue_names_lists_queues_matching_a_pattern(
    make_queue: QueueFactory, redis: aioredis.Redis
) -> None:
    """queue_names() finds queues that have keys, filtered by a glob, sorted."""
    prefix = f"names-{uuid.uuid4().hex[:8]}"
    alpha = await make_queue(f"{prefix}-alpha")
    beta = await make_queue(f"{prefix}-beta")
    empty = await make_queue(f"{prefix}-empty")
    other = await make_queue(f"other-{prefix}")
    await alpha.enqueue(1)
    await beta.enqueue(2, delay=60)
    await other.enqueue(3)
    assert await queue_names(redis, f"{prefix}-*") == [alpha.name, beta.name]
    assert await queue_names(redis, f"{prefix}-a*") == [alpha.name]
    assert await queue_names(redis, f"{prefix}-?eta") == [beta.name]
    assert await queue_names(redis, f"{prefix}-[ab]*") == [alpha.name, beta.name]
    assert empty.name not in await queue_names(redis)
    assert {alpha.name, beta.name, other.name} <= set(await queue_names(redis))
    await alpha.clear()
    assert await queue_names(redis, f"{prefix}-*") == [beta.name]


async def test_clear_queues_deletes_named_queues(make_queue: QueueFactory, redis: aioredis.Redis) -> None:
    """clear_queues() deletes every key of each named queue and counts their live messages."""
    one = await make_queue()
    two = await make_queue()
    kept = await make_queue()
    await one.enqueue_many([1, 2])
    await lease_one(one)
    await two.enqueue(3, delay=60)
    await kept.enqueue(4)
    assert await clear_queues(redis, one.name, two.name) == 3
    assert await scan_queue_keys(redis, one.name) == [QueueKeys.for_queue(one.name).key("meta")]
    assert await scan_queue_keys(redis, two.name) == []
    assert await one.status() == QueueStatus(0, 0, 0, 0, 0, 0, 0.0)
    assert await kept.size() == 1
    assert await clear_queues(redis) == 0


async def test_queue_works_on_a_caller_owned_client(queue_name: str, redis: aioredis.Redis) -> None:
    """A Queue given a client uses it and leaves it open after aclose()."""
    async with Queue(queue_name, redis=redis) as borrowed:
        assert borrowed.redis is redis
        await borrowed.enqueue("x", mid="m")
        assert await borrowed.message_status("m") == MessageStatus.QUEUED
    assert await redis.ping()
    assert await Queue(queue_name, redis=redis).clear() == 1


async def test_queue_with_json_serializer(make_queue: QueueFactory) -> None:
    """A Queue with JsonSerializer stores JSON bytes and lists decoded content."""
    queue = await make_queue(serializer=JsonSerializer())
    _, keys = queue._protocol
    await queue.enqueue({"a": [1, "b"]}, mid="m")
    assert await payload(queue.redis, keys, "m") == b'{"a":[1,"b"]}'
    [entry] = await queue.content()
    assert entry.content == {"a": [1, "b"]}


async def test_enqueue_accepts_timedelta_durations(queue: Queue) -> None:
    """delay and lock_timeout accept timedelta as well as seconds."""
    _, keys = queue._protocol
    await queue.enqueue("x", mid="m", delay=timedelta(minutes=1), lock_timeout=timedelta(seconds=4))
    now_ms = (await dequeue(queue, 0)).now_ms
    due = await queue.redis.zscore(keys.key("delayed"), "m")
    assert due is not None
    assert now_ms + 59_000 <= due <= now_ms + 60_000
    found = await record(queue.redis, keys, "m")
    assert found is not None and found.lock_ms == 4000


def test_queue_name_and_keys() -> None:
    """A Queue exposes its name and uses the `vermilion:{name}:v2:<part>` keys."""
    queue = Queue("emails", "redis://127.0.0.1:6379/0")
    assert queue.name == "emails"
    _, keys = queue._protocol
    assert keys == QueueKeys.for_queue("emails")
    assert keys.key("ready") == b"vermilion:{emails}:v2:ready"


async def test_repr_never_shows_the_password() -> None:
    """repr(Queue) shows the name, host, port, db and user, but masks the password."""
    queue = Queue("q", "redis://user:secret@127.0.0.1:6379/0")
    try:
        text = repr(queue)
        assert "secret" not in text
        assert "secret" not in str(queue)
        assert text == "<Queue 'q' at redis://user:***@127.0.0.1:6379/0>"
    finally:
        await queue.aclose()


async def test_repr_masks_a_password_given_without_user() -> None:
    """A password given without a user name is masked too."""
    queue = Queue("q", "redis://:hunter2@localhost:6380/3")
    try:
        assert "hunter2" not in repr(queue)
        assert repr(queue) == "<Queue 'q' at redis://:***@localhost:6380/3>"
    finally:
        await queue.aclose()


async def test_repr_shows_the_port_a_url_without_port_connects_to() -> None:
    """A URL without credentials or port shows no credentials and the default port 6379."""
    queue = Queue("q", "redis://localhost/2")
    try:
        assert repr(queue) == "<Queue 'q' at redis://localhost:6379/2>"
    finally:
        await queue.aclose()


def test_url_masks_the_password() -> None:
    """Queue.url says where the queue connects, with the password masked."""
    queue = Queue("q", "redis://user:secret@127.0.0.1:6380/3")
    assert queue.url == "redis://user:***@127.0.0.1:6380/3"
    assert "secret" not in repr(queue)
