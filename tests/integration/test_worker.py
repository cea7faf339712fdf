"""AsyncWorker against a real server: outcomes, limits, leases, stop, wake-ups."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.conftest import QueueFactory
from tests.layout import encode_record, make_ready_with_record
from vermilion import (
    AsyncWorker,
    Failure,
    Message,
    MessageStatus,
    PollInfo,
    Queue,
    QueueSizeMonitor,
    Retry,
    Success,
)
from vermilion._keys import QueueKeys

Outcome = Success | Retry | Failure | None


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``predicate`` every 5 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)


class Recorder:
    """A handler that records every call and answers with a fixed outcome."""

    def __init__(self, outcome: Outcome = None, delay: float = 0.0) -> None:
        self.outcome = outcome
        self.delay = delay
        self.calls: list[Message] = []
        self.by_mid: collections.Counter[str] = collections.Counter()

    async def __call__(self, message: Message) -> Outcome:
        self.calls.append(message)
        self.by_mid[message.mid] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.outcome


@contextlib.asynccontextmanager
async def running(queue: Queue, handler: Any, **options: Any) -> AsyncIterator[AsyncWorker]:
    options.setdefault("monitor", None)
    worker = AsyncWorker(queue, handler, **options)
    async with worker:
        yield worker


async def test_success_removes_the_message(queue: Queue) -> None:
    """A handler returning None (Success) leaves no trace of the message."""
    handler = Recorder()
    async with running(queue, handler) as worker:
        await queue.enqueue({"n": 1}, mid="m")
        await wait_until(lambda: worker.stats().counts.get("handler/success", 0) == 1)
        await wait_until(lambda: worker._outcomes_acknowledged())
    assert handler.calls[0].content == {"n": 1}
    assert handler.calls[0].attempt == 1
    assert handler.calls[0].queue == queue.name
    assert await queue.message_status("m") is None
    assert (await queue.status()).ntotal == 0


async def test_success_with_backoff_keeps_the_mid_deduplicated(queue: Queue) -> None:
    """Success(backoff) makes later enqueues of the mid answer 'backoff'."""
    async with running(queue, Recorder(Success(backoff=30))) as worker:
        await queue.enqueue("x", mid="m")
        await wait_until(lambda: worker.stats().counts.get("handler/backoff", 0) == 1)
    assert await queue.message_status("m") == MessageStatus.DONE_WITH_BACKOFF
    result = await queue.enqueue("again", mid="m")
    assert (result.ok, result.error) == (False, "backoff")


async def test_retry_hands_the_message_out_again(queue: Queue) -> None:
    """Retry() sends the message back to be handled again, attempt + 1."""
    attempts: list[int] = []

    async def handler(message: Message) -> Outcome:
        attempts.append(message.attempt)
        return Retry() if message.attempt < 3 else None

    async with running(queue, handler) as worker:
        await queue.enqueue("x", mid="m")
        await wait_until(lambda: worker.stats().counts.get("handler/success", 0) == 1)
    assert attempts == [1, 2, 3]
    assert worker.stats().counts["handler/retry"] == 2


async def test_retry_with_backoff_waits(queue: Queue) -> None:
    """Retry(backoff) hands the message out again no sooner than the backoff."""
    seen: list[float] = []

    async def handler(message: Message) -> Outcome:
        seen.append(time.monotonic())
        return Retry(backoff=0.3) if message.attempt == 1 else None

    async with running(queue, handler) as worker:
        await queue.enqueue("x")
        await wait_until(lambda: worker.stats().counts.get("handler/success", 0) == 1)
    assert seen[1] - seen[0] >= 0.29
    assert seen[1] - seen[0] < 1.0  # the idle worker woke for the due time, not its backoff
    assert worker.stats().counts["handler/backoff"] == 1


async def test_failure_is_recorded_and_not_retried(queue: Queue) -> None:
    """Failure() ends the message: status failed, counted as handler/error."""
    handler = Recorder(Failure(reason="bad order"))
    async with running(queue, handler) as worker:
        await queue.enqueue("x", mid="m")
        await wait_until(lambda: worker.stats().counts.get("handler/error", 0) == 1)
        await wait_until(lambda: worker._outcomes_acknowledged())
    assert await queue.message_status("m") == MessageStatus.FAILED
    assert (await queue.status()).nfailed == 1
    assert len(handler.calls) == 1


async def test_exception_fails_the_message_and_logs(queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    """An exception from the handler is a Failure by default, logged with its traceback."""

    async def handler(message: Message) -> Outcome:
        raise RuntimeError("boom")

    async with running(queue, handler) as worker:
        await queue.enqueue("x", mid="m")
        await wait_until(lambda: worker.stats().counts.get("handler/error", 0) == 1)
        await wait_until(lambda: worker._outcomes_acknowledged())
    assert await queue.message_status("m") == MessageStatus.FAILED
    assert worker.stats().counts["handler/exception"] == 1
    records = [r for r in caplog.records if r.exc_info and "boom" in str(r.exc_info[1])]
    assert records, "the handler's exception was not logged with its traceback"


async def test_on_exception_can_ask_for_a_retry(queue: Queue) -> None:
    """on_exception maps an exception to Retry(backoff=...)."""
    attempts: list[int] = []

    async def handler(message: Message) -> Outcome:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise ConnectionError("flaky")
        return None

    def on_exception(exc: BaseException, message: Message) -> Success | Retry | Failure:
        assert isinstance(exc, ConnectionError)
        return Retry(backoff=0.01)

    async with running(queue, handler, on_exception=on_exception) as worker:
        await queue.enqueue("x")
        await wait_until(lambda: worker.stats().counts.get("handler/success", 0) == 1)
    assert attempts == [1, 2]
    counts = worker.stats().counts
    assert counts["handler/retry"] == 1
    assert "handler/error" not in counts


async def test_bad_handler_result_fails_the_message(queue: Queue) -> None:
    """A handler that returns something else than an outcome fails its message."""

    async def handler(message: Message) -> Any:
        return "done"

    async with running(queue, handler) as worker:
        await queue.enqueue("x", mid="m")
        await wait_until(lambda: worker.stats().counts.get("handler/error", 0) == 1)
        await wait_until(lambda: worker._outcomes_acknowledged())
    assert await queue.message_status("m") == MessageStatus.FAILED


async def test_concurrency_cap_holds_under_load(queue: Queue) -> None:
    """Never more than `concurrency` handlers at once, and the cap is reached."""
    active = 0
    peak = 0
    done = 0

    async def handler(message: Message) -> Outcome:
        nonlocal active, peak, done
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.002)
        active -= 1
        done += 1
        return None

    await queue.enqueue_many(range(600))
    async with running(queue, handler, concurrency=7):
        await wait_until(lambda: done == 600, timeout=30)
    assert peak == 7


async def test_long_handler_is_handled_once(make_queue: QueueFactory) -> None:
    """A handler running 3x lock_timeout keeps its lease: no other worker gets the message."""
    queue = await make_queue()
    twin = await make_queue(queue.name)
    # Lease 1 s, handler 3 s; the heartbeat renews every third of a second.
    # (A 0.3 s lease once lapsed on a machine loaded by other processes.)
    slow = Recorder(delay=3.0)  # shared by both workers: it sees every hand-out
    async with (
        running(queue, slow, lock_timeout=1.0) as first,
        running(twin, slow, lock_timeout=1.0) as second,
    ):
        await queue.enqueue("x", mid="m")
        # A lapsed lease would be reclaimed by the idle twin within the 3 s.
        await wait_until(
            lambda: (
                first.stats().counts.get("handler/success", 0)
                + second.stats().counts.get("handler/success", 0)
                == 1
            )
        )
        await wait_until(lambda: first._outcomes_acknowledged() and second._outcomes_acknowledged())
        counts = {**first.stats().counts, **second.stats().counts}
    assert len(slow.calls) == 1
    assert slow.calls[0].attempt == 1
    assert "lease/reclaimed" not in counts
    assert await queue.message_status("m") is None


async def test_handler_timeout_cancels_and_fails(queue: Queue) -> None:
    """A handler running past handler_timeout is cancelled and treated as an exception."""
    cancelled = asyncio.Event()

    async def handler(message: Message) -> Outcome:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    async with running(queue, handler, handler_timeout=0.1) as worker:
        await queue.enqueue("x", mid="m")
        await asyncio.wait_for(cancelled.wait(), 5)
        await wait_until(lambda: worker.stats().counts.get("handler/error", 0) == 1)
        await wait_until(lambda: worker._outcomes_acknowledged())
    counts = worker.stats().counts
    assert counts["handler/timeout"] == 1
    assert await queue.message_status("m") == MessageStatus.FAILED


async def test_max_attempts_fails_without_calling_the_handler(queue: Queue) -> None:
    """A message handed out more than max_attempts times is failed, the handler not called."""
    handler = Recorder(Retry())
    async with running(queue, handler, max_attempts=3) as worker:
        await queue.enqueue("x", mid="m")
        await wait_until(lambda: worker.stats().counts.get("message/max-attempts", 0) == 1)
        await wait_until(lambda: worker._outcomes_acknowledged())
    assert [m.attempt for m in handler.calls] == [1, 2, 3]
    assert await queue.message_status("m") == MessageStatus.FAILED


async def test_undecodable_payload_fails_without_calling_the_handler(
    queue: Queue, redis: aioredis.Redis
) -> None:
    """Stored bytes that cannot be decoded fail their message; the worker carries on."""
    await queue.enqueue("placeholder", mid="bad")
    keys = QueueKeys.for_queue(queue.name)
    await make_ready_with_record(redis, keys, "bad", encode_record("r", b"\xc1"))  # 0xc1: never valid msgpack
    await queue.enqueue("fine", mid="good")
    handler = Recorder()
    async with running(queue, handler) as worker:
        await wait_until(lambda: worker.stats().counts.get("handler/success", 0) == 1)
        await wait_until(lambda: worker.stats().counts.get("message/undecodable", 0) == 1)
        await wait_until(lambda: worker._outcomes_acknowledged())
    assert [m.mid for m in handler.calls] == ["good"]
    assert await queue.message_status("bad") == MessageStatus.FAILED


async def test_graceful_stop_waits_for_running_handlers(queue: Queue) -> None:
    """stop() waits for in-flight handlers and acknowledges their outcomes."""
    started = asyncio.Event()
    finished = asyncio.Event()

    async def handler(message: Message) -> Outcome:
        started.set()
        await asyncio.sleep(0.3)
        finished.set()
        return None

    worker = AsyncWorker(queue, handler, monitor=None)
    await worker.start()
    await queue.enqueue("x", mid="m")
    await asyncio.wait_for(started.wait(), 5)
    await worker.stop(timeout=10)
    assert finished.is_set()
    assert not worker.running
    assert await queue.message_status("m") is None


async def test_stop_timeout_leaves_the_message_to_its_lease(make_queue: QueueFactory) -> None:
    """stop(timeout) cancels a handler that runs on; its message is handed out again, attempt 2."""
    queue = await make_queue()
    started = asyncio.Event()

    async def stuck(message: Message) -> Outcome:
        started.set()
        await asyncio.sleep(60)
        return None

    worker = AsyncWorker(queue, stuck, lock_timeout=0.5, monitor=None)
    await worker.start()
    await queue.enqueue("x", mid="m")
    await asyncio.wait_for(started.wait(), 5)
    await worker.stop(timeout=0.05)
    assert await queue.message_status("m") == MessageStatus.LOCKED  # not acknowledged
    second = Recorder()
    async with running(queue, second, lock_timeout=0.5) as rescuer:
        await wait_until(lambda: rescuer.stats().counts.get("handler/success", 0) == 1, timeout=10)
    assert [m.attempt for m in second.calls] == [2]


async def test_idle_worker_picks_up_within_100_ms(queue: Queue) -> None:
    """An idle worker blocked on the wake-up list handles a new message within 100 ms."""
    received: asyncio.Queue[float] = asyncio.Queue()

    async def handler(message: Message) -> Outcome:
        received.put_nowait(time.perf_counter())
        return None

    async with running(queue, handler) as worker:
        await wait_until(lambda: worker.stats().counts.get("sleep/end-of-queue", 0) >= 2)
        latencies = []
        for _ in range(5):
            sent = time.perf_counter()
            await queue.enqueue("x")
            latencies.append(await asyncio.wait_for(received.get(), 5) - sent)
            await wait_until(lambda: worker._outcomes_acknowledged())
    latencies.sort()
    assert latencies[2] < 0.1, latencies  # median: robust to one scheduling hiccup


async def test_client_kill_does_not_stop_the_worker(make_queue: QueueFactory, redis: aioredis.Redis) -> None:
    """Killing every connection of the worker leaves it able to handle later messages."""
    queue = await make_queue()
    handler = Recorder()
    async with running(queue, handler) as worker:
        await queue.enqueue("first")
        await wait_until(lambda: len(handler.calls) == 1)
        await wait_until(lambda: worker.stats().counts.get("sleep/end-of-queue", 0) >= 1)
        killed = await redis.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        # A fresh producer: the old one's pooled connections were killed too, and
        # a command sent in the instant before the server closes them is one whose
        # outcome nobody can know (OutcomeUnknownError), which is not this test.
        producer = await make_queue(queue.name)
        await producer.enqueue("second")
        await wait_until(lambda: len(handler.calls) == 2, timeout=15)
    assert [m.content for m in handler.calls] == ["first", "second"]


async def test_two_workers_handle_each_message_once(make_queue: QueueFactory) -> None:
    """Two workers x concurrency 20 over 5,000 messages handle each exactly once."""
    queue = await make_queue()
    twin = await make_queue(queue.name)
    handler_a, handler_b = Recorder(), Recorder()
    mids = [f"m{i}" for i in range(5000)]
    for start in range(0, 5000, 1000):
        await queue.enqueue_many(range(start, start + 1000), mids=mids[start : start + 1000])
    async with running(queue, handler_a, concurrency=20), running(twin, handler_b, concurrency=20):
        await wait_until(lambda: len(handler_a.calls) + len(handler_b.calls) >= 5000, timeout=60)
    together = handler_a.by_mid + handler_b.by_mid
    assert set(together) == set(mids)
    assert max(together.values()) == 1
    assert handler_a.calls and handler_b.calls  # both took part


async def test_status_counts_match_outcomes(queue: Queue) -> None:
    """status() counts equal the outcomes the handler produced; stats are filled."""

    async def handler(message: Message) -> Outcome:
        n = message.content
        if n % 10 == 0:
            return Failure()
        if n % 10 == 1 and message.attempt == 1:
            return Retry()
        if n % 10 == 2:
            return Success(backoff=60)
        return None

    await queue.enqueue_many(range(100))
    async with running(queue, handler, concurrency=5) as worker:
        await wait_until(
            lambda: sum(worker.stats().counts.get(k, 0) for k in ("handler/success", "handler/error")) == 100
        )
        status = await worker.status()
    counts = status.stats.counts
    assert counts["handler/error"] == 10
    assert counts["handler/retry"] == 10
    assert counts["handler/success"] == 90
    assert counts["handler/backoff"] == 10
    assert status.stats.handling_time_ms is not None and status.stats.handling_time_ms.n == 110
    assert status.stats.queueing_time_ms is not None and status.stats.queueing_time_ms.n == 100
    assert status.stats.queue_size is not None
    assert status.queue == queue.name and status.concurrency == 5
    assert status.queue_status is not None and status.queue_status.ndone == 10
    plain = status.as_dict()
    assert plain["stats"]["counts"]["handler/error"] == 10
    assert isinstance(plain["stats"]["handling_time_ms"]["p99"], float)


async def test_monitor_is_called_after_each_poll(queue: Queue) -> None:
    """The monitor receives the queue size and poll details."""
    polls: list[PollInfo] = []
    await queue.enqueue_many(range(3))
    async with running(queue, Recorder(), monitor=polls.append):
        await wait_until(lambda: any(p.handed_out for p in polls) and any(p.empty_polls for p in polls))
    first = next(p for p in polls if p.handed_out)
    assert first.queue == queue.name
    assert first.handed_out == 3


async def test_async_with_binds_and_stops(queue: Queue) -> None:
    """`async with AsyncWorker(...) as worker` binds a running worker and stops it on exit."""
    async with AsyncWorker(queue, Recorder(), monitor=None) as worker:
        assert worker.running
        assert "running" in repr(worker)
    assert not worker.running


async def test_run_until_cancelled(queue: Queue) -> None:
    """run() handles messages until its task is cancelled, then stops."""
    handler = Recorder()
    worker = AsyncWorker(queue, handler, monitor=None)
    task = asyncio.create_task(worker.run())
    await queue.enqueue("x")
    await wait_until(lambda: len(handler.calls) == 1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not worker.running


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"concurrency": 0}, ValueError),
        ({"concurrency": 1.5}, TypeError),
        ({"lock_timeout": 0}, ValueError),
        ({"lock_timeout": -1}, ValueError),
        ({"handler_timeout": float("nan")}, ValueError),
        ({"max_attempts": 0}, ValueError),
        ({"monitor": 3}, TypeError),
    ],
    ids=[
        "zero-concurrency",
        "float-concurrency",
        "zero-lock",
        "negative-lock",
        "nan-timeout",
        "zero-attempts",
        "monitor",
    ],
)
async def test_bad_options_are_refused(queue: Queue, options: dict[str, Any], error: type[Exception]) -> None:
    """Bad worker options raise at construction."""
    with pytest.raises(error):
        AsyncWorker(queue, Recorder(), **options)


async def test_short_per_message_lease_is_renewed(make_queue: QueueFactory) -> None:
    """A message's own short lock_timeout is renewed in time even when the worker default is long."""
    queue = await make_queue()
    twin = await make_queue(queue.name)
    slow = Recorder(delay=1.0)
    async with running(queue, slow, lock_timeout=30) as first, running(twin, slow, lock_timeout=30) as second:
        await queue.enqueue("x", mid="m", lock_timeout=0.3)
        await wait_until(
            lambda: (
                first.stats().counts.get("handler/success", 0)
                + second.stats().counts.get("handler/success", 0)
                == 1
            )
        )
        counts = {**first.stats().counts, **second.stats().counts}
    assert [m.attempt for m in slow.calls] == [1]
    assert slow.calls[0].lock_timeout == 0.3
    assert counts.get("heartbeat/extend", 0) >= 2
    assert "lease/reclaimed" not in counts


async def test_concurrent_stops_share_one_stop(queue: Queue) -> None:
    """stop() called twice at once stops the worker once, and both calls return."""
    worker = AsyncWorker(queue, Recorder(), monitor=None)
    await worker.start()
    await asyncio.gather(worker.stop(), worker.stop())
    assert not worker.running
    await worker.start()  # a stopped worker can start again
    await queue.enqueue("x")
    await wait_until(lambda: worker.stats().counts.get("handler/success", 0) == 1)
    await worker.stop()


def test_queue_size_monitor_warns_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """The default monitor warns above max_size, then stays quiet for its interval."""
    monitor = QueueSizeMonitor(max_size=10, interval=3600)
    monitor(PollInfo("q", queue_size=10, handed_out=0, reclaimed=0, empty_polls=1))
    assert not caplog.records
    monitor(PollInfo("q", queue_size=11, handed_out=0, reclaimed=0, empty_polls=1))
    monitor(PollInfo("q", queue_size=50, handed_out=0, reclaimed=0, empty_polls=1))
    warnings = [r for r in caplog.records if "holds 11 ready messages" in r.getMessage()]
    assert len(warnings) == 1
    assert len(caplog.records) == 1


async def test_each_worker_has_its_own_default_monitor(queue: Queue) -> None:
    """Workers built with the default monitor do not share its warning clock."""
    first = AsyncWorker(queue, Recorder())
    second = AsyncWorker(queue, Recorder())
    assert isinstance(first.monitor, QueueSizeMonitor)
    assert first.monitor is not second.monitor


async def test_failing_idle_backoff_function_is_logged_not_fatal(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    """An idle_backoff function that raises is logged and replaced; the worker keeps handling."""

    def broken(empty_polls: int) -> float:
        raise ZeroDivisionError("oops")

    handler = Recorder()
    async with running(queue, handler, idle_backoff=broken) as worker:
        await wait_until(lambda: worker.stats().counts.get("sleep/end-of-queue", 0) >= 1)
        await queue.enqueue("x")
        await wait_until(lambda: len(handler.calls) == 1)
        assert worker.running
    assert any("idle_backoff" in r.getMessage() for r in caplog.records)


async def test_handlers_own_timeout_error_is_not_a_handler_timeout(queue: Queue) -> None:
    """A TimeoutError raised by the handler itself is an ordinary exception, not handler_timeout."""

    async def handler(message: Message) -> Outcome:
        raise TimeoutError("upstream API timed out")

    reasons: list[str] = []

    def on_exception(exc: BaseException, message: Message) -> Failure:
        reasons.append(str(exc))
        return Failure(str(exc))

    async with running(queue, handler, handler_timeout=10, on_exception=on_exception) as worker:
        await queue.enqueue("x")
        await wait_until(lambda: worker.stats().counts.get("handler/error", 0) == 1)
    assert reasons == ["upstream API timed out"]
    assert "handler/timeout" not in worker.stats().counts


async def test_a_batch_wakes_as_many_idle_workers(make_queue: QueueFactory) -> None:
    """enqueue_many of two messages wakes two idle workers of concurrency 1 at once."""
    first_queue = await make_queue()
    second_queue = await make_queue(first_queue.name)
    started: list[float] = []
    release = asyncio.Event()

    async def handler(message: Message) -> Outcome:
        started.append(time.monotonic())
        await release.wait()  # each worker stays busy with its one message
        return None

    options: dict[str, Any] = {"concurrency": 1, "idle_backoff": 30.0}
    async with running(first_queue, handler, **options) as a, running(second_queue, handler, **options) as b:
        await wait_until(lambda: all(w.stats().counts.get("sleep/end-of-queue", 0) >= 1 for w in (a, b)))
        sent = time.monotonic()
        await first_queue.enqueue_many(["one", "two"])
        await wait_until(lambda: len(started) == 2, timeout=5)  # not after a 30 s idle timeout
        release.set()
    assert max(started) - sent < 1.0


async def test_stop_timeout_bounds_async_with_exit(queue: Queue) -> None:
    """stop_timeout is what `async with` waits for running handlers; the message is left to its lease."""
    started = asyncio.Event()

    async def stuck(message: Message) -> Outcome:
        started.set()
        await asyncio.sleep(60)
        return None

    async with running(queue, stuck, stop_timeout=0.1, lock_timeout=30) as worker:
        await queue.enqueue("x", mid="m")
        await asyncio.wait_for(started.wait(), 5)
        exiting = time.monotonic()
    assert time.monotonic() - exiting < 5
    assert not worker.running
    assert worker.stop_timeout == 0.1
    assert await queue.message_status("m") == MessageStatus.LOCKED


async def test_closing_a_queue_under_a_running_worker_warns(
    make_queue: QueueFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """aclose() of a queue whose worker still runs logs a warning; after stop() it does not."""
    queue = await make_queue()
    worker = AsyncWorker(queue, Recorder(), monitor=None)
    await worker.start()
    await queue.aclose()
    assert any("still run on it" in r.getMessage() for r in caplog.records)
    await worker.stop()
    caplog.clear()
    await queue.aclose()
    assert not any("still run on it" in r.getMessage() for r in caplog.records)


async def test_sync_handler_fails_its_message_with_a_clear_reason(queue: Queue) -> None:
    """A plain (non-async) handler fails each message, saying that handlers must be async."""
    reasons: list[str] = []

    def sync_handler(message: Message) -> None:
        return None

    def on_exception(exc: BaseException, message: Message) -> Failure:
        reasons.append(str(exc))
        return Failure(str(exc))

    async with running(queue, sync_handler, on_exception=on_exception) as worker:
        await queue.enqueue("x")
        await wait_until(lambda: worker.stats().counts.get("handler/error", 0) == 1)
    assert "must be async functions" in reasons[0]


async def test_options_set_after_construction_take_effect(queue: Queue) -> None:
    """The handler and its options stay plain settable attributes of the worker: a value set
    after construction is the one the running worker uses."""
    calls: list[str] = []

    async def first(message: Message) -> None:
        calls.append("first")

    async def second(message: Message) -> None:
        calls.append("second")

    worker = AsyncWorker(queue, first, monitor=None)
    worker.handler = second
    worker.max_attempts = 1
    worker.monitor = None
    assert (worker.handler, worker.max_attempts, worker.monitor) == (second, 1, None)
    async with worker:
        await queue.enqueue("x", mid="m")
        await wait_until(lambda: calls == ["second"])
