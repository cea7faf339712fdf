"""``AsyncWorker``: handles a queue's messages with bounded concurrency.

Three tasks cooperate, all in the event loop that called ``start()``:

* the poll loop takes free handler slots first, then leases up to that many
  messages in one ``dequeue`` call, and starts one handler task per message;
  with nothing to do it blocks on the queue's wake-up list;
* the acknowledger sends the outcomes of handlers that finished together in
  one fenced ``ack`` call, and retries it while Redis is unreachable;
* the heartbeat renews every held lease in one ``extend`` call, well before
  the leases lapse.

Invariant: ``0 <= self._busy <= concurrency`` and ``self._busy`` equals the
number of handler tasks not yet finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

import anyio

from ._error_mapping import is_tls_failure
from ._exceptions import (
    OutcomeUnknownError,
    SerializationError,
    VermilionConnectionError,
    VermilionError,
)
from ._logs import logger
from ._messages import (
    Failure,
    Message,
    Outcome,
    PollInfo,
    QueueStatus,
    Retry,
    Success,
    WorkerStats,
    WorkerStatus,
)
from ._queue import Queue
from ._serialization import decode_payload
from ._stats import RollingStats
from ._transport import Channel
from ._validation import positive_int, seconds, to_ms
from ._wire import DequeueReply, Leased, OutcomeRequest

__all__ = [  # the status types are re-exported for the modules that import them from here
    "AsyncWorker",
    "PollInfo",
    "QueueSizeMonitor",
    "WorkerStats",
    "WorkerStatus",
    "exponential_idle_backoff",
]

T = TypeVar("T")
Handler = Callable[[Message], Awaitable[Success | Retry | Failure | None]]
ExceptionMapper = Callable[[BaseException, Message], Outcome]

MAX_BATCH = 1000
_HOUSEKEEPING_LIMIT = 256
_ACK_BATCH = 500
# Retries after Redis errors back off up to this cap (jittered down to half):
# short enough that a worker is back within about a second of Redis, long
# enough that a fleet of idle workers does not hammer a server that is down.
_ERROR_BACKOFF_CAP = 2.0
_REASON_MAX_CHARS = 1000
# A raw payload larger than this is let go as soon as it is decoded.
_LARGE_PAYLOAD_BYTES = 64 * 1024
_STOP_ACK_FLUSH_TIMEOUT = 5.0
# After the stop timeout, handlers are cancelled and given this long to end; one
# that swallows its cancellation is then abandoned, so that stop() returns.
_CANCEL_GRACE = 2.0
# Empty polls that found something due already back off from this, doubling:
# the next poll should have handed it out, so polling at once again would spin.
_DUE_NOW_BACKOFF = 0.01


def exponential_idle_backoff(empty_polls: int) -> float:
    """Seconds an idle worker may sleep after ``empty_polls`` empty polls in a row.

    Doubles from 0.5-1 s up to 8-16 s, jittered so that idle workers spread out.
    An enqueue wakes a sleeping worker at once whatever this says.
    """
    n = min(max(empty_polls, 1) - 1, 4)
    scale = float(2**n)
    return (scale + random.random() * scale) * 0.5


class QueueSizeMonitor:
    """The default monitor: warns when the queue holds more than ``max_size``
    ready messages, at most once per ``interval`` seconds."""

    def __init__(self, max_size: int = 1000, interval: float | timedelta = 6 * 3600.0) -> None:
        self.max_size: int = positive_int(max_size, "max_size")
        self.interval: float = seconds(interval, "interval")
        self._last_warning: float | None = None

    def __call__(self, poll: PollInfo) -> None:
        if poll.queue_size <= self.max_size:
            return
        now = time.monotonic()
        if self._last_warning is not None and now - self._last_warning < self.interval:
            return
        self._last_warning = now
        logger.warning(
            "queue %r holds %s ready messages (more than %s): are the workers keeping up?",
            poll.queue,
            f"{poll.queue_size:,}",
            f"{self.max_size:,}",
        )

    def __repr__(self) -> str:
        return f"QueueSizeMonitor(max_size={self.max_size}, interval={self.interval})"


def _exception_to_failure(exc: BaseException, message: Message) -> Outcome:
    return Failure(reason=f"{type(exc).__name__}: {exc}")


def _error_backoff(errors: int, base: float) -> float:
    """Seconds before retrying after ``errors`` failures in a row: doubling from
    ``base`` up to the cap, jittered down to half so that workers spread out."""
    delay: float = min(_ERROR_BACKOFF_CAP, base * 2.0 ** min(errors, 10))
    return delay * (0.5 + random.random() / 2)


class _Default:
    """Marks an option left at its default (where ``None`` means something else)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()


@dataclass(slots=True)
class _Lease:
    mid: str
    token: int
    lock_ms: int
    renewed_at: float  # time.monotonic() of the hand-out or the last renewal
    task: asyncio.Task[None] | None = None  # the handler holding it

    @property
    def renew_at(self) -> float:
        # A third of the lease: two renewals can fail before it lapses.
        return self.renewed_at + self.lock_ms / 3000


class AsyncWorker:
    """Handles the messages of one queue, at most ``concurrency`` at a time.

    Args:
        queue: the queue to serve; the worker uses its Redis client.
        handler: ``async def handler(msg: Message) -> Success | Retry | Failure | None``;
            ``None`` means ``Success()``.
        concurrency: most handlers running at once.
        lock_timeout: the lease in seconds for messages without their own. The
            worker renews leases while handlers run, so this bounds how long a
            crashed worker's messages wait to be handed out again, not how long
            a handler may run.
        idle_backoff: seconds to sleep when the queue is empty: a number, or a
            function of the count of empty polls in a row (default: 0.5 s
            doubling to 16 s, jittered). Enqueues wake the worker at once.
        throttle: seconds to pause after each poll that handed out messages: a
            number, or a function of the queue size returning seconds or None.
        handler_timeout: seconds a handler may run before it is cancelled and
            treated as if it raised ``TimeoutError``.
        max_attempts: a message handed out more often than this is failed
            without calling the handler (a poison-message guard).
        monitor: called with a ``PollInfo`` after each poll; ``None`` disables.
            The default warns when more than 1,000 messages are ready.
        on_exception: maps a handler's exception to an outcome; by default
            ``Failure`` (not retried), as in Carmine.
        stop_timeout: how long ``async with`` exit and a cancelled ``run()``
            wait for running handlers (``stop()``'s default timeout). Keep it
            below your platform's shutdown grace period (Kubernetes: 30 s).
    """

    def __init__(
        self,
        queue: Queue,
        handler: Handler,
        *,
        concurrency: int = 10,
        lock_timeout: float | timedelta = 30.0,
        idle_backoff: float | timedelta | Callable[[int], float] = exponential_idle_backoff,
        throttle: float | timedelta | Callable[[int], float | None] | None = None,
        handler_timeout: float | timedelta | None = None,
        max_attempts: int | None = None,
        monitor: Callable[[PollInfo], object] | _Default | None = DEFAULT,
        on_exception: ExceptionMapper = _exception_to_failure,
        stop_timeout: float | timedelta = 30.0,
    ) -> None:
        if not isinstance(queue, Queue):
            raise TypeError(f"queue must be a vermilion.Queue, not {type(queue).__name__}")
        if not callable(handler):
            raise TypeError("handler must be an async function taking a Message")
        self.queue: Queue = queue
        self.handler: Handler = handler
        self.concurrency: int = positive_int(concurrency, "concurrency", maximum=MAX_BATCH)
        self.lock_timeout: float = seconds(lock_timeout, "lock_timeout", allow_zero=False)
        self._idle_backoff = self._as_delay_function(idle_backoff, "idle_backoff")
        self._throttle = None if throttle is None else self._as_delay_function(throttle, "throttle")
        self.handler_timeout: float | None = (
            None if handler_timeout is None else seconds(handler_timeout, "handler_timeout", allow_zero=False)
        )
        self.max_attempts: int | None = (
            None if max_attempts is None else positive_int(max_attempts, "max_attempts")
        )
        if isinstance(monitor, _Default):
            monitor = QueueSizeMonitor()  # one per worker: each keeps its own warning clock
        elif monitor is not None and not callable(monitor):
            raise TypeError("monitor must be callable or None")
        if not callable(on_exception):
            raise TypeError("on_exception must be callable")
        self.stop_timeout: float = seconds(stop_timeout, "stop_timeout")
        self.monitor: Callable[[PollInfo], object] | None = monitor
        self.on_exception: ExceptionMapper = on_exception
        self._lock_ms = to_ms(self.lock_timeout)

        self._connection, self._keys = queue._protocol
        self._running = False
        self._stop_task: asyncio.Task[None] | None = None
        self._busy = 0
        self._handlers: set[asyncio.Task[None]] = set()
        # Handlers that ignored stop()'s cancellation: no longer counted, renewed
        # or acknowledged; their messages come back when their leases lapse.
        self._abandoned: set[asyncio.Task[None]] = set()
        # Handler tasks stop() cancelled: a CancelledError in those is the
        # worker's, in any other the handler's own failure (Python 3.10 has no
        # Task.cancelling() to tell them apart).
        self._cancelled_by_stop: set[asyncio.Task[None]] = set()
        self._leases: dict[tuple[str, int], _Lease] = {}
        self._pending_acks: list[OutcomeRequest] = []
        self._acks_in_flight: set[tuple[str, int]] = set()
        # Outcomes whose ack may have applied though its reply was lost.
        self._acks_uncertain: set[tuple[str, int]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._heartbeat_target = 0.0
        self._poll_waiting = False
        self._suspects_held = 0  # handlers running on messages whose lease had lapsed
        self._channel: Channel | None = None
        self._new_events()
        self._stats_queue_size = RollingStats()
        self._stats_queueing = RollingStats()
        self._stats_handling = RollingStats()
        self._counts: dict[str, int] = {}

    def _new_events(self) -> None:
        # Created per start, so that a worker restarted in another event loop
        # never waits on an event bound to the old one.
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._suspect_finished = asyncio.Event()
        self._acks_wanted = asyncio.Event()
        self._acks_idle = asyncio.Event()
        self._acks_idle.set()
        self._lease_added = asyncio.Event()

    @staticmethod
    def _as_delay_function(value: object, argument: str) -> Callable[[int], float | None]:
        if callable(value):
            return value
        delay = seconds(value, argument)
        return lambda _: delay

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<AsyncWorker queue={self.queue.name!r} {state} in_flight={self._busy}/{self.concurrency}>"

    # -- lifecycle ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        """Check the server and start polling in the background.

        Raises :class:`ConfigurationError` for a server vermilion cannot use (too
        old, credentials refused), :class:`VermilionConnectionError` when TLS
        fails (a certificate not trusted). A Redis that cannot be reached is no error:
        the worker starts, logs a warning and keeps trying with capped backoff,
        so that a service may start before its Redis does.
        """
        if self._running:
            raise RuntimeError("this worker is already running")
        try:
            await self._connection.check_server()
        except VermilionConnectionError as exc:
            if is_tls_failure(exc):
                raise
            logger.warning(
                "Redis is unreachable (%s); the worker on queue %r starts and keeps trying",
                exc,
                self.queue.name,
            )
        self.queue._workers.add(self)
        self._new_events()
        self._stop_task = None
        self._channel = self._connection.open_channel()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._supervise(loop), name=f"vermilion-{loop.__name__}-{self.queue.name}")
            for loop in (self._poll_loop, self._ack_loop, self._heartbeat_loop)
        ]
        logger.info("worker started on queue %r (concurrency %d)", self.queue.name, self.concurrency)

    async def _supervise(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run one of the worker's loops until the worker stops, whatever it raises.

        The loops handle the errors they expect (Redis unreachable, a reply
        refused); anything else is a bug or data nobody foresaw, and a worker
        whose loop died would look alive while it handled nothing. So the
        error is logged and counted, and the loop starts again after a back-off.
        """
        name = loop.__name__.strip("_").removesuffix("_loop")
        failures = 0
        while not self._stopping.is_set():
            try:
                await loop()
                return
            except Exception:
                failures += 1
                delay = _error_backoff(failures, 0.1)
                self._count(f"{name}/internal-error")
                logger.exception(
                    "internal error in the %s loop of the worker on queue %r; restarting it in %.2f s",
                    name,
                    self.queue.name,
                    delay,
                )
                if loop == self._poll_loop:
                    await self._unless_stopping(asyncio.sleep(delay))
                else:
                    await asyncio.sleep(delay)

    async def stop(self, timeout: float | timedelta | None = None) -> None:
        """Stop taking messages and wait up to ``timeout`` seconds for running handlers.

        ``timeout`` defaults to the worker's ``stop_timeout`` (30 s).

        Handlers still running then are cancelled and their messages are not
        acknowledged: their leases lapse and the messages are handed out again.
        Outcomes already known are acknowledged before this returns.
        """
        grace = self.stop_timeout if timeout is None else seconds(timeout, "timeout")
        if not self._running:
            return
        if self._stop_task is None:  # concurrent calls share one stop
            self._stop_task = asyncio.create_task(self._stop(grace))
        await asyncio.shield(self._stop_task)

    async def _stop(self, grace: float) -> None:
        self._stopping.set()
        poll, acker, heartbeat = self._tasks
        if self._poll_waiting:
            poll.cancel()
        await asyncio.gather(poll, return_exceptions=True)
        if self._handlers:
            await self._end_handlers(grace)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._acks_idle.wait(), _STOP_ACK_FLUSH_TIMEOUT)
        for task in (acker, heartbeat):
            task.cancel()
        await asyncio.gather(acker, heartbeat, return_exceptions=True)
        if self._pending_acks:
            logger.warning(
                "%d outcomes could not be acknowledged before stopping; their messages"
                " will be handed out again when their leases lapse",
                len(self._pending_acks),
            )
            self._pending_acks.clear()
        self._acks_uncertain.clear()
        self._leases.clear()
        if self._channel is not None:
            await self._channel.aclose()
            self._channel = None
        self._running = False
        self.queue._workers.discard(self)
        logger.info("worker stopped on queue %r", self.queue.name)

    async def _end_handlers(self, grace: float) -> None:
        """Wait ``grace`` seconds for the running handlers, cancel the others, and
        abandon those that are still running a bounded while after that."""
        _, unfinished = await asyncio.wait(set(self._handlers), timeout=grace)
        if not unfinished:
            return
        for task in unfinished:
            self._cancelled_by_stop.add(task)
            task.cancel()
        logger.warning(
            "stopped %d handler(s) that ran past the stop timeout; their messages"
            " will be handed out again when their leases lapse",
            len(unfinished),
        )
        _, stubborn = await asyncio.wait(unfinished, timeout=_CANCEL_GRACE)
        for task in stubborn:
            self._abandon(task)
        if stubborn:
            self._count("handler/abandoned", len(stubborn))
            logger.error(
                "%d handler(s) of queue %r ignored cancellation for %.1f s and were abandoned: their"
                " leases are no longer renewed and their outcomes will not be acknowledged",
                len(stubborn),
                self.queue.name,
                _CANCEL_GRACE,
            )

    def _abandon(self, task: asyncio.Task[None]) -> None:
        """Stop accounting for a handler task that will not end: its slot and its
        lease are let go now, whatever it does later."""
        if task.remove_done_callback(self._suspect_done):
            self._suspects_held -= 1
        task.remove_done_callback(self._handler_done)
        self._handlers.discard(task)
        self._busy -= 1
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned_done)
        for key, lease in list(self._leases.items()):
            if lease.task is task:
                del self._leases[key]

    def _abandoned_done(self, task: asyncio.Task[None]) -> None:
        self._abandoned.discard(task)
        self._cancelled_by_stop.discard(task)
        logger.warning("an abandoned handler of queue %r ended at last", self.queue.name)

    async def run(self) -> None:
        """Run until cancelled, then stop gracefully."""
        await self.start()
        try:
            await self._stopping.wait()
        finally:
            await asyncio.shield(self.stop())

    async def __aenter__(self) -> AsyncWorker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- status ------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        self._counts[key] = self._counts.get(key, 0) + n

    def stats(self) -> WorkerStats:
        """The worker's own statistics, without asking Redis."""
        return WorkerStats(
            queue_size=self._stats_queue_size.summary(),
            queueing_time_ms=self._stats_queueing.summary(),
            handling_time_ms=self._stats_handling.summary(),
            counts=dict(sorted(self._counts.items())),
        )

    async def status(self) -> WorkerStatus:
        """A snapshot of the worker, with live queue counts from Redis."""
        try:
            queue_status: QueueStatus | None = await self.queue.status()
        except VermilionError:
            queue_status = None
        return WorkerStatus(
            queue=self.queue.name,
            running=self._running,
            concurrency=self.concurrency,
            in_flight=self._busy,
            options={
                "lock_timeout": self.lock_timeout,
                "handler_timeout": self.handler_timeout,
                "max_attempts": self.max_attempts,
                "idle_backoff": getattr(self._idle_backoff, "__name__", repr(self._idle_backoff)),
                "throttle": None if self._throttle is None else repr(self._throttle),
                "monitor": repr(self.monitor),
                "stop_timeout": self.stop_timeout,
            },
            stats=self.stats(),
            queue_status=queue_status,
        )

    # -- the poll loop -------------------------------------------------------------

    async def _unless_stopping(self, awaitable: Coroutine[Any, Any, T]) -> T | None:
        """Await ``awaitable``, a wait of the poll loop that stop() may cut short.

        stop() cancels the poll loop only while it waits here, never while a
        dequeue is in flight (whose leased messages would then be stranded).
        A plain await, so that waking from an idle wait costs no extra task.
        """
        if self._stopping.is_set():
            awaitable.close()
            return None
        self._poll_waiting = True
        try:
            return await awaitable
        finally:
            self._poll_waiting = False

    async def _poll_loop(self) -> None:
        empty_polls = 0
        errors = 0
        while not self._stopping.is_set():
            free = self._free_slots()
            if free <= 0:
                self._slot_freed.clear()
                await self._unless_stopping(self._slot_freed.wait())
                continue
            try:
                # While it holds a suspect, a worker takes no other: two of them
                # may be a poison message and a neighbour that died beside it.
                reply = await self._connection.dequeue(
                    self._keys,
                    free,
                    self._lock_ms,
                    _HOUSEKEEPING_LIMIT,
                    self._channel,
                    max_suspects=0 if self._suspects_held else 1,
                )
            except VermilionError as exc:
                errors += 1
                delay = _error_backoff(errors, 0.1)
                self._count("poll/error")
                logger.warning(
                    "poll of queue %r failed (%s); retrying in %.2f s", self.queue.name, exc, delay
                )
                await self._unless_stopping(asyncio.sleep(delay))
                continue
            errors = 0
            handed = self._start_handlers(reply)
            if reply.reclaimed:
                self._count("lease/reclaimed", reply.reclaimed)
            self._stats_queue_size.record(reply.ready)
            empty_polls = 0 if handed else empty_polls + 1
            self._call_monitor(PollInfo(self.queue.name, reply.ready, handed, reply.reclaimed, empty_polls))
            if handed:
                await self._pause_after_poll(reply.ready)
            elif reply.suspects_held_back and self._suspects_held:
                await self._wait_for_suspect(empty_polls)
            else:
                await self._sleep_idle(empty_polls, reply.now_ms, reply.next_due_ms)

    def _free_slots(self) -> int:
        """How many messages the next poll may lease.

        Outcomes awaiting their ack still hold their leases. Up to `concurrency`
        of them are the normal coalescing of acks; beyond that the acks are
        failing (Redis is struggling), and leasing more would only pile up
        leases that lapse while their outcomes wait.
        """
        awaiting_ack = len(self._pending_acks) + len(self._acks_in_flight)
        return self.concurrency - self._busy - max(0, awaiting_ack - self.concurrency)

    async def _pause_after_poll(self, queue_size: int) -> None:
        if self._throttle is None:
            return
        delay = self._user_delay(self._throttle, queue_size, "throttle", 0.0)
        if delay:
            await self._unless_stopping(asyncio.sleep(delay))

    async def _wait_for_suspect(self, empty_polls: int) -> None:
        """Only suspects are ready, and this worker may take none while it holds one.

        Waiting on the wake-up list would hand this worker tokens meant for
        workers that may take a suspect; its own suspect finishing is the event
        that lets it take the next.
        """
        self._suspect_finished.clear()
        if not self._suspects_held:
            return
        timeout = self._user_delay(
            self._idle_backoff, empty_polls, "idle_backoff", exponential_idle_backoff(empty_polls)
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await self._unless_stopping(asyncio.wait_for(self._suspect_finished.wait(), timeout))

    async def _sleep_idle(self, empty_polls: int, now_ms: int, next_due_ms: int | None) -> None:
        self._count("sleep/end-of-queue")
        timeout = self._user_delay(
            self._idle_backoff, empty_polls, "idle_backoff", exponential_idle_backoff(empty_polls)
        )
        if next_due_ms is not None:
            timeout = min(timeout, max(0.0, (next_due_ms - now_ms) / 1000))
        if timeout <= 0:
            if empty_polls <= 1:
                return  # due now: the next poll hands it out
            # Still nothing handed out though something was due: back off
            # rather than poll in a loop until it changes.
            self._count("sleep/due-but-empty")
            timeout = min(_ERROR_BACKOFF_CAP, _DUE_NOW_BACKOFF * 2 ** min(empty_polls, 10))
        try:
            await self._unless_stopping(self._connection.wait_for_wakeup(self._keys, timeout, self._channel))
        except VermilionError as exc:
            logger.warning("waiting on queue %r failed (%s)", self.queue.name, exc)
            await self._unless_stopping(asyncio.sleep(min(timeout, 1.0)))

    def _user_delay(
        self, function: Callable[[int], float | None], argument: int, name: str, fallback: float
    ) -> float:
        """Call a user's delay function; a bad answer is logged and replaced, never fatal."""
        try:
            value = function(argument)
            return 0.0 if value is None else seconds(value, name)
        except Exception:
            logger.exception(
                "%s of the worker on queue %r failed; using %.2f s", name, self.queue.name, fallback
            )
            return fallback

    def _call_monitor(self, poll: PollInfo) -> None:
        if self.monitor is None:
            return
        try:
            self.monitor(poll)
        except Exception:
            logger.exception("the monitor of queue %r raised", self.queue.name)

    # -- handling ------------------------------------------------------------------

    def _start_handlers(self, reply: DequeueReply) -> int:
        """Start a handler per leased message; returns how many.

        The reply lets go of the messages: a large payload must not stay in
        memory while the poll loop waits, once its handler has decoded it.
        """
        for leased in reply.messages:
            self._start_handler(leased, reply.now_ms)
        handed = len(reply.messages)
        reply.messages.clear()
        return handed

    def _start_handler(self, leased: Leased, now_ms: int) -> None:
        self._busy += 1
        if leased.suspect:
            self._suspects_held += 1
        task = asyncio.create_task(self._handle(leased, now_ms), name=f"vermilion-handler-{leased.mid}")
        lease = _Lease(leased.mid, leased.token, leased.lock_ms, time.monotonic(), task)
        self._leases[(leased.mid, leased.token)] = lease
        if lease.renew_at < self._heartbeat_target:
            self._lease_added.set()
        self._handlers.add(task)
        task.add_done_callback(self._handler_done)
        if leased.suspect:
            task.add_done_callback(self._suspect_done)

    def _suspect_done(self, task: asyncio.Task[None]) -> None:
        self._suspects_held -= 1
        self._suspect_finished.set()

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        self._cancelled_by_stop.discard(task)
        self._busy -= 1
        self._slot_freed.set()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # KeyboardInterrupt or SystemExit, logged by _outcome_of
            logger.debug("handler task of queue %r ended with %r", self.queue.name, exc)

    async def _handle(self, leased: Leased, now_ms: int) -> None:
        lease_key = (leased.mid, leased.token)
        try:
            outcome = await self._isolated_outcome(leased, now_ms)
        except BaseException:
            # Cancelled by stop(), or the process ends: leave the message to its lease.
            self._leases.pop(lease_key, None)
            raise
        if asyncio.current_task() in self._abandoned:
            return  # stop() gave up on it: the message is left to its lease
        self._submit(leased, outcome)

    async def _isolated_outcome(self, leased: Leased, now_ms: int) -> Outcome:
        """The message's outcome; an error of vermilion's own (a bug, or stored
        data nobody foresaw) fails this message alone instead of leaving it to
        come back, and fail the same way, every lease."""
        try:
            content = self._decode(leased)
            if len(leased.payload) > _LARGE_PAYLOAD_BYTES:
                # Only the decoded content is kept while the handler runs: a payload
                # of many MiB would otherwise be held twice.
                leased = leased._replace(payload=b"")
            return await self._outcome_of(leased, content, now_ms)
        except Exception as exc:
            self._count("message/internal-error")
            logger.exception(
                "internal error while handling message %r of queue %r; failing it",
                leased.mid,
                self.queue.name,
            )
            return Failure(reason=f"internal error in vermilion: {type(exc).__name__}: {exc}")

    def _decode(self, leased: Leased) -> Any:
        """The message's content, or an _Undecodable saying why there is none."""
        try:
            return decode_payload(self.queue.serializer, leased.payload, self.queue.max_payload_bytes)
        except SerializationError as exc:
            return _Undecodable(str(exc))

    async def _outcome_of(self, leased: Leased, content: Any, now_ms: int) -> Outcome:
        if not _is_text(leased.mid):
            self._count("message/bad-mid")
            logger.error(
                "message %r of queue %r has a mid that is not UTF-8 text (written by hand?); failing it",
                leased.mid,
                self.queue.name,
            )
            return Failure(reason="mid is not UTF-8 text")
        if isinstance(content, _Undecodable):
            self._count("message/undecodable")
            logger.error(
                "message %r of queue %r cannot be decoded; failing it: %s",
                leased.mid,
                self.queue.name,
                content.reason,
            )
            return Failure(reason=content.reason)
        if self.max_attempts is not None and leased.attempt > self.max_attempts:
            self._count("message/max-attempts")
            logger.error(
                "message %r of queue %r was handed out %d times (max_attempts %d); failing it",
                leased.mid,
                self.queue.name,
                leased.attempt,
                self.max_attempts,
            )
            return Failure(reason=f"handed out {leased.attempt} times; max_attempts is {self.max_attempts}")
        age_ms = max(0, now_ms - leased.enqueued_ms)
        message = Message(
            content=content,
            mid=leased.mid,
            queue=self.queue.name,
            attempt=leased.attempt,
            lock_timeout=leased.lock_ms / 1000,
            age=age_ms / 1000,
            lease_token=leased.token,
        )
        if leased.attempt == 1:
            self._stats_queueing.record(age_ms)
        started = time.perf_counter()
        try:
            outcome = await self._call_handler(message)
        except Exception as exc:
            outcome = self._map_exception(exc, message)
        except (KeyboardInterrupt, SystemExit) as exc:
            logger.critical(
                "handler raised %s on message %r of queue %r: the process ends; the message"
                " is handed out again when its lease lapses",
                type(exc).__name__,
                message.mid,
                self.queue.name,
            )
            raise
        except asyncio.CancelledError as exc:
            if self._cancelled_by_worker():
                raise
            # The handler's own (a future it awaited was cancelled, say): a
            # failure like any other, or it would come back every lease.
            outcome = self._map_exception(exc, message)
        except BaseException as exc:  # GeneratorExit, a user's BaseException subclass
            outcome = self._map_exception(exc, message)
        finally:
            self._stats_handling.record((time.perf_counter() - started) * 1000)
        return outcome

    def _cancelled_by_worker(self) -> bool:
        """Whether the running handler task was cancelled (by stop(), or by the
        event loop shutting down) rather than raising CancelledError itself."""
        task = asyncio.current_task()
        if task is None:
            return False
        cancelling = getattr(task, "cancelling", None)  # Python 3.11+
        return task in self._cancelled_by_stop or (cancelling is not None and cancelling() > 0)

    async def _call_handler(self, message: Message) -> Outcome:
        if self.handler_timeout is None:
            result = await self._awaitable(message)
        else:
            # A cancel scope rather than catching TimeoutError: a handler's own
            # timeout (an HTTP call's, say) must not pass for handler_timeout.
            with anyio.move_on_after(self.handler_timeout) as scope:
                result = await self._awaitable(message)
            if scope.cancelled_caught:
                self._count("handler/timeout")
                raise TimeoutError(f"handler ran longer than handler_timeout ({self.handler_timeout} s)")
        if result is None:
            return Success()
        if isinstance(result, (Success, Retry, Failure)):
            return result
        raise TypeError(f"handler returned {result!r}; expected Success, Retry, Failure or None")

    def _awaitable(self, message: Message) -> Awaitable[Success | Retry | Failure | None]:
        result = self.handler(message)
        if not inspect.isawaitable(result):
            raise TypeError(
                f"handler returned {result!r} instead of an awaitable: handlers must be async functions"
            )
        return result

    def _map_exception(self, exc: BaseException, message: Message) -> Outcome:
        self._count("handler/exception")
        logger.error(
            "handler raised on message %r (attempt %d) of queue %r",
            message.mid,
            message.attempt,
            self.queue.name,
            exc_info=exc,
        )
        try:
            outcome = self.on_exception(exc, message)
        except Exception:
            logger.exception("on_exception raised; failing message %r", message.mid)
            return _exception_to_failure(exc, message)
        if not isinstance(outcome, (Success, Retry, Failure)):
            logger.error("on_exception returned %r; failing message %r", outcome, message.mid)
            return _exception_to_failure(exc, message)
        return outcome

    def _submit(self, leased: Leased, outcome: Outcome) -> None:
        if isinstance(outcome, Success):
            self._count("handler/success")
            request = OutcomeRequest(leased.mid, leased.token, "s", _backoff_ms(outcome.backoff))
        elif isinstance(outcome, Retry):
            self._count("handler/retry")
            request = OutcomeRequest(leased.mid, leased.token, "r", _backoff_ms(outcome.backoff))
        else:
            self._count("handler/error")
            request = OutcomeRequest(leased.mid, leased.token, "f", 0, outcome.reason[:_REASON_MAX_CHARS])
        if request.backoff_ms:
            self._count("handler/backoff")
        self._pending_acks.append(request)
        self._acks_idle.clear()
        self._acks_wanted.set()

    # -- acknowledging -------------------------------------------------------------

    async def _ack_loop(self) -> None:
        errors = 0
        while True:
            await self._acks_wanted.wait()
            self._acks_wanted.clear()
            while self._pending_acks:
                batch = self._pending_acks[:_ACK_BATCH]
                del self._pending_acks[:_ACK_BATCH]
                in_flight = {(request.mid, request.token) for request in batch}
                self._acks_in_flight |= in_flight
                try:
                    applied = await self._connection.ack(self._keys, batch, self.queue.failure_history)
                except VermilionError as exc:
                    # Fenced: re-sending can never apply an outcome twice.
                    self._pending_acks[:0] = batch
                    if isinstance(exc, OutcomeUnknownError):
                        self._acks_uncertain |= in_flight
                    errors += 1
                    delay = _error_backoff(errors, 0.05)
                    self._count("ack/error")
                    logger.warning(
                        "acknowledging %d outcomes failed (%s); retrying in %.2f s", len(batch), exc, delay
                    )
                    await asyncio.sleep(delay)
                    continue
                finally:
                    self._acks_in_flight -= in_flight
                errors = 0
                self._after_ack(batch, applied)
                self._slot_freed.set()
            self._acks_idle.set()

    def _after_ack(self, batch: list[OutcomeRequest], applied: list[bool | None]) -> None:
        for request, ok in zip(batch, applied, strict=True):
            key = (request.mid, request.token)
            self._leases.pop(key, None)
            if key in self._acks_uncertain:
                self._acks_uncertain.discard(key)
                ok = ok or None
            if ok is None:
                # Re-sent after a lost reply: the first send may have applied it.
                self._count("ack/unknown")
            elif not ok:
                self._count("ack/stale")
                logger.warning(
                    "outcome of message %r of queue %r was not applied: its lease had lapsed and"
                    " was reclaimed (the message is or was handled again)",
                    request.mid,
                    self.queue.name,
                )

    # -- heartbeat -------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        errors = 0
        while True:
            target = min((lease.renew_at for lease in self._leases.values()), default=None)
            timeout = self._lock_ms / 3000 if target is None else max(0.0, target - time.monotonic())
            self._heartbeat_target = time.monotonic() + timeout
            self._lease_added.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                # A new lease that needs renewing sooner than the target wakes this.
                await asyncio.wait_for(self._lease_added.wait(), timeout)
                continue
            if await self._renew_due_leases():
                errors = 0
                continue
            errors += 1
            # Within a third of the lease, so that a second try comes before it lapses.
            await asyncio.sleep(min(_error_backoff(errors, 0.05), self._lock_ms / 3000))

    async def _renew_due_leases(self) -> bool:
        """Renew the leases that are due; False if Redis could not be asked."""
        now = time.monotonic()
        # Renew every lease within half a period of its time, so that leases
        # handed out together are renewed together in one call.
        leases = [lease for lease in self._leases.values() if lease.renew_at - lease.lock_ms / 6000 <= now]
        if not leases:
            return True
        try:
            renewed = await self._connection.extend(
                self._keys, [(lease.mid, lease.token, lease.lock_ms) for lease in leases]
            )
        except VermilionError as exc:
            self._count("heartbeat/error")
            logger.warning("renewing %d leases of queue %r failed: %s", len(leases), self.queue.name, exc)
            return False
        self._count("heartbeat/extend")
        for lease, ok in zip(leases, renewed, strict=True):
            key = (lease.mid, lease.token)
            if ok:
                lease.renewed_at = now
                continue
            # Gone from Redis: never asked for again (asking again at once, while
            # an ack of it waits to be retried, was a busy loop).
            if self._leases.pop(key, None) is not None and key not in self._acks_in_flight:
                # An ack in flight may have applied and ended the lease itself.
                self._count("lease/lost")
                logger.warning(
                    "lost the lease of message %r of queue %r: it lapsed and was reclaimed",
                    lease.mid,
                    self.queue.name,
                )
        return True


@dataclass(frozen=True, slots=True)
class _Undecodable:
    """Stands for the content of a message whose payload could not be decoded."""

    reason: str


def _is_text(mid: str) -> bool:
    """Whether a mid from Redis was UTF-8 (else it holds surrogate escapes)."""
    if mid.isascii():
        return True
    try:
        mid.encode()
    except UnicodeEncodeError:
        return False
    return True


def _backoff_ms(backoff: float | None) -> int:
    return 0 if backoff is None else to_ms(backoff)
