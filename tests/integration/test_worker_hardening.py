"""The worker against what a bad-input trial threw at it (issue #18): hostile
values written into a queue's keys, handlers that misbehave, and errors nobody
foresaw. The worker must never die silently, spin, hang in stop() or strand a
message, and one message's bad data must never touch another's state."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import QueueFactory
from tests.helpers import eventually
from tests.layout import decode_failure, encode_fresh, encode_record, make_ready_with_record
from vermilion import (
    AsyncWorker,
    Failure,
    Message,
    MessageStatus,
    Queue,
    Retry,
    ScriptError,
    VermilionConnectionError,
)
from vermilion._keys import QueueKeys

EXITING_WORKER = Path(__file__).with_name("exiting_worker.py")


def key(queue: Queue, part: str) -> bytes:
    return QueueKeys.for_queue(queue.name).key(part)


class Handled:
    """A handler that records mids; ``slow`` ones take ``delay`` seconds."""

    def __init__(self, slow: frozenset[str] = frozenset(), delay: float = 0.0) -> None:
        self.mids: list[str] = []
        self.slow = slow
        self.delay = delay

    async def __call__(self, message: Message) -> None:
        self.mids.append(message.mid)
        if message.mid in self.slow:
            await asyncio.sleep(self.delay)


def worker(queue: Queue, handler: Any, **options: Any) -> AsyncWorker:
    options.setdefault("monitor", None)
    return AsyncWorker(queue, handler, **options)


def counts(w: AsyncWorker) -> dict[str, int]:
    return w.stats().counts


async def until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll a condition of the worker's own state until it holds, with a deadline."""

    async def check() -> bool:
        return predicate()

    await eventually(check, timeout=timeout, what=what)


async def settled(queue: Queue) -> bool:
    status = await queue.status()
    return status.nqueued + status.nlocked + status.nbackoff == 0


# -- 2. the poll loop must not die on a bad reply ---------------------------------------


@pytest.mark.parametrize("value", [0, 1, 2**48 - 1])
async def test_a_hand_written_enqueued_time_costs_nothing_but_its_age(
    queue: Queue, redis: aioredis.Redis, value: int
) -> None:
    """`enqueued` = 'oops' made parse_dequeue raise and killed the poll loop; now the
    message is handled (its age counted from now) and so is everything after it.
    (v2: the enqueue time is a 6-byte field of the record; the hostile values are the
    extremes it can hold, the epoch and a time 8,000 years ahead.)"""
    await queue.enqueue("bad", mid="bad")
    keys = QueueKeys.for_queue(queue.name)
    payload = queue.serializer.dumps("bad")
    await make_ready_with_record(
        redis, keys, "bad", encode_record("r", payload, enqueued_ms=value, due_ms=value)
    )
    handler = Handled()
    async with worker(queue, handler) as w:
        await until(lambda: "bad" in handler.mids, what="bad handled")
        await queue.enqueue("good", mid="good")
        await until(lambda: "good" in handler.mids, what="good handled")
        assert not any(name.endswith("internal-error") for name in counts(w))
    assert handler.mids == ["bad", "good"]


async def test_a_mid_that_is_not_utf8_is_failed_and_the_worker_goes_on(
    queue: Queue, redis: aioredis.Redis
) -> None:
    """A non-UTF-8 mid (written by hand) made parse_dequeue raise UnicodeDecodeError,
    and every worker that leased it died the same way; now it fails, by its exact bytes."""
    raw = b"\xff\xfebad"
    await redis.sadd(key(queue, "mids"), raw)
    await redis.rpush(key(queue, "ready"), encode_fresh(raw, 1, queue.serializer.dumps("x")))
    handler = Handled()
    async with worker(queue, handler) as w:
        await queue.enqueue("good", mid="good")
        await until(lambda: "good" in handler.mids, what="good handled")
        await until(lambda: counts(w).get("handler/error", 0) == 1, what="bad failed")
        assert counts(w)["message/bad-mid"] == 1
    assert handler.mids == ["good"]
    assert await redis.zscore(key(queue, "failed"), raw) is not None
    kept = decode_failure(await redis.hget(key(queue, "errors"), raw))  # type: ignore[arg-type]
    assert (kept.reason, kept.payload) == ("mid is not UTF-8 text", queue.serializer.dumps("x"))
    assert await settled(queue)


@pytest.mark.parametrize("loop", ["dequeue", "ack", "extend"])
async def test_an_unexpected_error_restarts_the_loop_it_hit(
    queue: Queue, caplog: pytest.LogCaptureFixture, loop: str
) -> None:
    """An error the loops do not expect (a KeyError here) used to end the task with
    nothing logged while `running` stayed True; now it is logged, counted, and the
    loop runs on."""
    handler = Handled(slow=frozenset({"m0"}), delay=0.4)
    w = worker(queue, handler, lock_timeout=0.3)
    connection = w._client
    real = getattr(connection, loop)
    raised = asyncio.Event()

    async def broken_once(*args: Any, **kwargs: Any) -> Any:
        if not raised.is_set():
            raised.set()
            raise KeyError("injected")
        return await real(*args, **kwargs)

    setattr(connection, loop, broken_once)
    try:
        async with w:
            await queue.enqueue_many([0, 1, 2], mids=["m0", "m1", "m2"])
            await asyncio.wait_for(raised.wait(), 10)
            name = {"dequeue": "poll", "ack": "ack", "extend": "heartbeat"}[loop]
            await until(lambda: counts(w).get(f"{name}/internal-error", 0) == 1, what="counted")
            await queue.enqueue("after", mid="after")
            await until(lambda: "after" in handler.mids, timeout=10, what="handled after the error")
            assert w.running
    finally:
        setattr(connection, loop, real)
    assert f"internal error in the {name} loop" in caplog.text
    assert "KeyError" in caplog.text


async def test_an_internal_error_while_handling_fails_that_message_alone(queue: Queue) -> None:
    """A bug of vermilion's while handling one message (here: building its Message)
    fails that message, once; it does not come back every lease, and others go on."""
    handler = Handled()
    w = worker(queue, handler, lock_timeout=0.3)
    real = w._runner._outcome_of

    async def broken_for_bad(leased: Any, content: Any, now_ms: int) -> Any:
        if leased.mid == "bad":
            raise RuntimeError("injected")
        return await real(leased, content, now_ms)

    w._runner._outcome_of = broken_for_bad  # type: ignore[method-assign]
    async with w:
        await queue.enqueue_many(["x", "y"], mids=["bad", "good"])
        await until(lambda: counts(w).get("handler/error", 0) == 1, what="bad failed")
        await until(lambda: "good" in handler.mids, what="good handled")
    assert counts(w)["message/internal-error"] == 1
    assert await queue.message_status("bad") == MessageStatus.FAILED


# -- 3. no retry path without a back-off ------------------------------------------------


async def test_a_lost_lease_whose_ack_waits_is_not_renewed_in_a_loop(queue: Queue) -> None:
    """After a Redis restart without data, a lease whose renewal answers 0 while its ack
    waits to be retried was renewed ~4,000 times a second; now it is asked for once."""
    w = worker(queue, Handled(), lock_timeout=0.3)
    connection = w._client
    real_extend, real_ack = connection.extend, connection.ack
    extends = 0
    ack_failing = asyncio.Event()

    async def counting_extend(*args: Any, **kwargs: Any) -> Any:
        nonlocal extends
        extends += 1
        return await real_extend(*args, **kwargs)

    async def failing_ack(*args: Any, **kwargs: Any) -> Any:
        ack_failing.set()
        raise VermilionConnectionError("injected: Redis is down")

    connection.extend = counting_extend  # type: ignore[method-assign]
    connection.ack = failing_ack  # type: ignore[method-assign]
    async with w:
        await queue.enqueue("m", mid="m")
        await asyncio.wait_for(ack_failing.wait(), 10)
        await queue.clear()  # the restart without data: the lease is gone
        start = extends
        await asyncio.sleep(1.0)  # a window in which to count renewals, not a wait for an event
        during = extends - start
        connection.ack = real_ack  # type: ignore[method-assign]  # so that stop() flushes at once
    assert during <= 5, f"{during} renewals in one second"


# -- 4. stop() is bounded ----------------------------------------------------------------


async def test_stop_returns_though_a_handler_swallows_cancellation(make_queue: QueueFactory) -> None:
    """A handler that catches CancelledError in a loop made stop(timeout=1) hang for
    ever, renewing its lease; now stop returns after the timeout plus a bounded grace,
    renews nothing more, and the message lapses and comes back."""
    queue = await make_queue()
    started = asyncio.Event()
    release = asyncio.Event()

    async def stubborn(message: Message) -> None:
        started.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # what the trial's handler did
                await asyncio.sleep(0.05)

    w = worker(queue, stubborn, lock_timeout=0.5)
    await w.start()
    stubborn_tasks: list[asyncio.Task[None]] = []
    try:
        await queue.enqueue("x", mid="m")
        await asyncio.wait_for(started.wait(), 5)
        stubborn_tasks = list(w._handlers)
        began = time.monotonic()
        await asyncio.wait_for(w.stop(timeout=0.2), 10)
        took = time.monotonic() - began
        assert not w.running
        assert took < 0.2 + 2.0 + 1.0, took
        assert w.stats().counts["handler/abandoned"] == 1
        # Nobody renews the lease now: it lapses, and a second worker gets attempt 2.
        second = Handled()
        attempts: list[int] = []

        async def rescue(message: Message) -> None:
            attempts.append(message.attempt)
            await second(message)

        async with worker(queue, rescue, lock_timeout=0.5):
            await until(lambda: second.mids == ["m"], timeout=10, what="handed out again")
        assert attempts == [2]
        assert w._slots.busy == 0
    finally:
        release.set()
        await asyncio.gather(*stubborn_tasks, return_exceptions=True)


# -- 7. handlers raising BaseExceptions ------------------------------------------------------


class _UserBase(BaseException):
    pass


@pytest.mark.parametrize(
    "raised",
    [asyncio.CancelledError("own"), GeneratorExit(), _UserBase("mine")],
    ids=["CancelledError", "GeneratorExit", "BaseException-subclass"],
)
async def test_a_handlers_base_exception_is_its_failure(queue: Queue, raised: BaseException) -> None:
    """A CancelledError the handler raised itself (not the worker's cancellation) was
    retried every lease for ever; GeneratorExit and a user's BaseException subclass
    were logged as internal errors and retried for ever. Now each fails the message."""
    calls = 0

    async def handler(message: Message) -> None:
        nonlocal calls
        calls += 1
        raise raised

    async with worker(queue, handler, lock_timeout=0.3) as w:
        await queue.enqueue("x", mid="m")
        await until(lambda: counts(w).get("handler/error", 0) == 1, what="failed")
        assert counts(w)["handler/exception"] == 1
    assert calls == 1
    assert await queue.message_status("m") == MessageStatus.FAILED


async def test_max_attempts_bounds_a_base_exception_mapped_to_a_retry(queue: Queue) -> None:
    """on_exception sees a handler's BaseException like any other; max_attempts applies."""
    calls = 0

    async def handler(message: Message) -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError("own")

    def retry(exc: BaseException, message: Message) -> Retry | Failure:
        return Retry() if isinstance(exc, asyncio.CancelledError) else Failure("unexpected")

    async with worker(queue, handler, on_exception=retry, max_attempts=3) as w:
        await queue.enqueue("x", mid="m")
        await until(lambda: counts(w).get("message/max-attempts", 0) == 1, what="bounded")
    assert calls == 3
    assert await queue.message_status("m") == MessageStatus.FAILED


# -- 5. corrupt queue state never strands messages ---------------------------------------


@pytest.mark.parametrize("seq", [b"abc", b"9223372036854775807", b"-1", b"1.5"])
async def test_a_damaged_seq_stops_hand_outs_without_stranding_and_clear_repairs_it(
    queue: Queue, redis: aioredis.Redis, seq: bytes
) -> None:
    """`seq` = 'abc' or 2^63-1 made INCRBY fail after LPOP had taken the messages out of
    `ready`: status said 0 while message_status said queued. Now dequeue refuses before
    its first write, and clear() (which kept the bad seq) resets the counter.
    (v2: the counter is the field `seq` of `meta`.)"""
    await queue.enqueue_many(["a", "b", "c"], mids=["a", "b", "c"])
    await redis.hset(key(queue, "meta"), "seq", seq)
    connection, keys = queue._protocol
    with pytest.raises(ScriptError, match="not a lease counter"):
        await connection.dequeue(keys, 3, 30_000, 100)
    assert (await queue.status()).nqueued == 3
    assert await redis.llen(key(queue, "ready")) == 3
    assert await queue.message_status("a") == MessageStatus.QUEUED
    await queue.clear()
    repaired = await redis.hget(key(queue, "meta"), "seq")
    assert repaired is not None and int(repaired) > 10**15  # above any token handed out before
    handler = Handled()
    async with worker(queue, handler):
        await queue.enqueue("d", mid="d")
        await until(lambda: handler.mids == ["d"], what="handled after the repair")


async def test_clear_repairs_a_seq_of_the_wrong_type(queue: Queue, redis: aioredis.Redis) -> None:
    """(v2: the counter lives in the hash `meta`; a `meta` overwritten with a string.)"""
    await redis.set(key(queue, "meta"), "x")
    with pytest.raises(ScriptError, match="meta"):
        await queue.status()
    await queue.clear()
    assert await redis.type(key(queue, "meta")) == b"hash"
    repaired = await redis.hget(key(queue, "meta"), "seq")
    assert repaired is not None and int(repaired) > 10**15
    await queue.enqueue("x", mid="m")
    assert (await queue.status()).nqueued == 1


async def test_clear_keeps_a_healthy_seq(queue: Queue, redis: aioredis.Redis) -> None:
    await redis.hset(key(queue, "meta"), "seq", b"41")
    await queue.clear()
    assert await redis.hget(key(queue, "meta"), "seq") == b"41"


# -- 6. one message's bad data never touches another's lease ------------------------------


@pytest.mark.parametrize("lock_ms", [0, 315_360_000_001, 2**40 - 1])
async def test_a_bad_lock_ms_costs_its_message_the_default_lease_only(
    make_queue: QueueFactory, redis: aioredis.Redis, lock_ms: int
) -> None:
    """lock_ms = -100 made its message handed out 117 times in 6 s, and the renewal
    batch it shared was refused, so a healthy long message lost its lease and ran
    twice. Now the bad one gets the worker's lease, and each runs once.
    (v2: the lease is a 5-byte field of the record, so it cannot be negative or a
    fraction; the hostile values are 0 and leases beyond the ten-year maximum.)"""
    queue = await make_queue()
    await queue.enqueue("bad", mid="bad")
    await queue.enqueue("long", mid="long", lock_timeout=0.3)
    keys = QueueKeys.for_queue(queue.name)
    payload = queue.serializer.dumps("bad")
    await make_ready_with_record(redis, keys, "bad", encode_record("r", payload, lock_ms=lock_ms))
    handler = Handled(slow=frozenset({"bad", "long"}), delay=1.2)
    async with worker(queue, handler, concurrency=4, lock_timeout=0.3) as w:
        await eventually(lambda: settled(queue), timeout=10, what="both handled")
        assert counts(w).get("lease/lost", 0) == 0
    assert sorted(handler.mids) == ["bad", "long"]


# -- the property: hostile values of every stored field ------------------------------------

# v2: a message's stored fields are the bytes of its record (or of its entry in `ready`);
# hostile values are any bytes in place of the record, any value of each header field, and
# any bytes in place of its entry, or beside it in the failure reasons.
FIELD_WIDTHS = {"flags": 1, "enqueued": 6, "due": 6, "attempts": 4, "lock": 5, "token": 7}
FIELDS = ["record", "entry", "errors", *FIELD_WIDTHS]
HOSTILE = st.one_of(
    st.sampled_from([b"", b"oops", b"\x00" * 30, b"\xff" * 30, b"l" + b"\xff" * 40, b"r" + b"\x00" * 29]),
    st.binary(max_size=64),
)


async def write_hostile(queue: Queue, redis: aioredis.Redis, field: str, value: bytes) -> None:
    """Put ``value`` where ``field`` of the message `hostile` is stored."""
    keys = QueueKeys.for_queue(queue.name)
    payload = queue.serializer.dumps("hostile")
    if field == "record":
        await make_ready_with_record(redis, keys, "hostile", value)
    elif field == "entry":
        await redis.delete(keys.key("ready"))
        await redis.rpush(keys.key("ready"), value)
    elif field == "errors":
        await redis.hset(keys.key(field), "hostile", value)
    else:
        width = FIELD_WIDTHS[field]
        number = int.from_bytes(value[:width].ljust(width, b"\x00"), "big")
        header = {"flags": 0, "enqueued_ms": 1, "due_ms": 1, "attempts": 0, "lock_ms": 0, "token": 0}
        header[{"enqueued": "enqueued_ms", "due": "due_ms", "lock": "lock_ms"}.get(field, field)] = number
        await make_ready_with_record(redis, keys, "hostile", encode_record("r", payload, **header))


@given(field=st.sampled_from(FIELDS), value=HOSTILE)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_hostile_stored_values_cost_only_their_own_message(
    make_queue: QueueFactory, redis: aioredis.Redis, field: str, value: bytes
) -> None:
    """Whatever is written into one message's field, the worker keeps serving: the
    healthy message is handled exactly once, no loop meets an error it did not expect,
    the hostile one ends (handled once or failed) and the queue drains."""
    queue = await make_queue()
    await queue.enqueue("hostile", mid="hostile")
    await write_hostile(queue, redis, field, value)
    handler = Handled()
    async with worker(queue, handler, lock_timeout=0.5, idle_backoff=0.05) as w:
        await queue.enqueue("healthy", mid="healthy")
        await eventually(lambda: settled(queue), timeout=10, what="the queue drained")
        await until(lambda: w._outcomes_acknowledged(), what="acks sent")
        assert not [name for name in counts(w) if name.endswith("internal-error")], counts(w)
    assert handler.mids.count("healthy") == 1
    assert handler.mids.count("hostile") <= 1
    assert await queue.message_status("healthy") is None


# -- 8. what enqueue accepts, a worker can read ------------------------------------------


async def test_content_with_tuple_keys_reaches_the_handler_as_it_was_enqueued(queue: Queue) -> None:
    """`{(1, 2): "v"}` was accepted at enqueue, then failed by every worker as undecodable;
    now the handler gets it back, tuple key and all."""
    received: list[Any] = []

    async def handler(message: Message) -> None:
        received.append(message.content)

    await queue.enqueue({(1, 2): "v", "list": (3, 4)}, mid="tuple-keys")
    async with worker(queue, handler) as w:
        await eventually(lambda: settled(queue), what="handled and acknowledged")
        assert "message/undecodable" not in counts(w)
    assert received == [{(1, 2): "v", "list": [3, 4]}]
    assert await queue.message_status("tuple-keys") is None


@pytest.mark.parametrize("raised", ["SystemExit", "KeyboardInterrupt"])
async def test_a_handler_raising_system_exit_ends_the_process_with_a_log_line(
    queue: Queue, redis_url: str, raised: str
) -> None:
    """KeyboardInterrupt and SystemExit from a handler end the process, as they would
    anywhere else, with a line that says so; the message comes back after its lease."""
    await queue.enqueue("x", mid="m")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXITING_WORKER),
        redis_url,
        queue.name,
        raised,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode != 0
    if raised == "SystemExit":
        assert process.returncode == 3
    assert f"handler raised {raised} on message 'm'" in stderr.decode()
    assert "the process ends" in stderr.decode()
    handler = Handled()
    async with worker(queue, handler, lock_timeout=1.0):
        await until(lambda: handler.mids == ["m"], timeout=10, what="handed out again")
