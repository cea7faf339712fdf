"""``AsyncWorker``: handles a queue's messages with bounded concurrency.

The worker composes four parts, each in a module of its own, all running in
the event loop that called ``start()``:

* the poll loop (:mod:`._polling`) takes free handler slots first, then
  leases up to that many messages in one ``dequeue`` call; with nothing to do
  it blocks on the queue's wake-up list;
* a handler task per message (:mod:`._handler_tasks`, which keeps its slot
  and its lease) runs :mod:`._handling`, which turns the handler's return or
  exception into an outcome;
* the acknowledger (:mod:`._acks`) sends the outcomes of handlers that
  finished together in one fenced ``ack`` call, and retries it while Redis is
  unreachable;
* the heartbeat (:mod:`._leases`) renews every held lease in one ``extend``
  call, well before the leases lapse.

This module owns their lifecycle (start, supervised loops, a bounded stop)
and the worker's status (its options are read and set through
:mod:`._worker_options`); it sends nothing to Redis itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from datetime import timedelta
from functools import partial
from types import TracebackType
from typing import Any

from ._acks import Acknowledger
from ._error_mapping import is_tls_failure
from ._exceptions import VermilionConnectionError, VermilionError
from ._handler_tasks import HandlerTasks
from ._handling import ExceptionMapper, Handler, HandlerRunner, exception_to_failure
from ._leases import LeaseKeeper
from ._logs import logger
from ._messages import PollInfo, QueueStatus, WorkerStats, WorkerStatus
from ._policies import (
    DEFAULT,
    QueueSizeMonitor,
    _Default,
    as_delay_function,
    error_backoff,
    exponential_idle_backoff,
)
from ._polling import Poller, Slots
from ._presence import new_worker_id
from ._presence_beat import DEFAULT_PRESENCE_INTERVAL, presence_beat
from ._queue import Queue
from ._schedules import Schedule, ScheduleRunner
from ._shard_calls import ShardedCalls
from ._shard_polling import ShardPoller
from ._stats import Tally, WorkerObserver
from ._transport import Channel
from ._validation import positive_int, seconds, to_ms
from ._wire import OutcomeRequest
from ._worker_options import WorkerOptions, worker_monitor

__all__ = [  # the status types are re-exported for the modules that import them from here
    "AsyncWorker",
    "Handler",
    "PollInfo",
    "QueueSizeMonitor",
    "WorkerStats",
    "WorkerStatus",
    "exponential_idle_backoff",
    "observe_worker",
]

MAX_BATCH = 1000
_STOP_ACK_FLUSH_TIMEOUT = 5.0
# After the stop timeout, handlers are cancelled and given this long to end; one
# that swallows its cancellation is then abandoned, so that stop() returns.
_CANCEL_GRACE = 2.0


class AsyncWorker(WorkerOptions):
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
        presence_interval: seconds between the worker's announcements in Redis
            (``Queue.workers()`` lists it; the record lapses after three
            intervals without one); ``None`` announces nothing.
        schedules: recurring messages (:func:`vermilion.schedule`) this worker
            enqueues while it runs, on their own queues; any number of workers
            may run the same schedules: each slot is enqueued once.
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
        on_exception: ExceptionMapper = exception_to_failure,
        stop_timeout: float | timedelta = 30.0,
        presence_interval: float | timedelta | None = DEFAULT_PRESENCE_INTERVAL,
        schedules: Iterable[Schedule] = (),
    ) -> None:
        if not isinstance(queue, Queue):
            raise TypeError(f"queue must be a vermilion.Queue, not {type(queue).__name__}")
        if not callable(handler):
            raise TypeError("handler must be an async function taking a Message")
        self.queue: Queue = queue
        self.concurrency: int = positive_int(concurrency, "concurrency", maximum=MAX_BATCH)
        self.lock_timeout: float = seconds(lock_timeout, "lock_timeout", allow_zero=False)
        idle_backoff_function = as_delay_function(idle_backoff, "idle_backoff")
        throttle_function = None if throttle is None else as_delay_function(throttle, "throttle")
        monitor = worker_monitor(monitor)
        if not callable(on_exception):
            raise TypeError("on_exception must be callable")
        self.stop_timeout: float = seconds(stop_timeout, "stop_timeout")
        self._schedules = ScheduleRunner(schedules)
        self._lock_ms = to_ms(self.lock_timeout)

        self._tally = Tally()
        client, keys = queue._protocol
        self._client = client
        self._runner = HandlerRunner(
            queue=queue,
            handler=handler,
            handler_timeout=(
                None
                if handler_timeout is None
                else seconds(handler_timeout, "handler_timeout", allow_zero=False)
            ),
            max_attempts=None if max_attempts is None else positive_int(max_attempts, "max_attempts"),
            on_exception=on_exception,
            tally=self._tally,
        )
        self._slots = Slots(self.concurrency)
        # A sharded queue's acks and renewals go to each mid's shard.
        shards = queue._shards
        calls = client if len(shards) == 1 else ShardedCalls(client, shards)
        self._acks = Acknowledger(
            calls,
            keys,
            lambda: (queue.failure_history, queue.failure_history_bytes),
            self._tally,
            on_settled=self._settled,
        )
        acking = self._acks.in_flight.__contains__
        self._leases = LeaseKeeper(calls, keys, self._lock_ms, self._tally, acking)
        self._handler_tasks = HandlerTasks(self._runner, self._slots, self._leases, self._acks, self._tally)
        self._poller = (Poller if len(shards) == 1 else partial(ShardPoller, shards=shards))(
            client=client,
            keys=keys,
            lock_ms=self._lock_ms,
            slots=self._slots,
            awaiting_ack=self._acks.awaiting,
            start_handlers=self._handler_tasks.start_all,
            idle_backoff=idle_backoff_function,
            throttle=throttle_function,
            monitor=monitor,
            tally=self._tally,
        )
        self._running = False
        self._stop_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._channel: Channel | None = None
        self._stopping = asyncio.Event()
        self.id: str = new_worker_id()
        self._presence = presence_beat(
            presence_interval,
            client,
            queue.name,
            self.id,
            self.concurrency,
            self._slots,
            self.stats,
            self._tally,
        )

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return (
            f"<AsyncWorker queue={self.queue.name!r} {state} in_flight={self._slots.busy}/{self.concurrency}>"
        )

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
            await self._client.check_server()
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
        self._channel = self._client.open_channel()
        self._poller.begin(self._stopping, self._channel)
        self._running = True
        self._tasks = [
            asyncio.create_task(self._supervise(loop, name), name=f"vermilion-{name}-{self.queue.name}")
            for loop, name in (
                (self._poller.run, "poll"),
                (self._acks.run, "ack"),
                (self._leases.run, "heartbeat"),
            )
        ]
        if self._presence is not None:
            self._presence.launch(self._supervise)
        self._schedules.launch(self._supervise)
        logger.info("worker started on queue %r (concurrency %d)", self.queue.name, self.concurrency)

    def _new_events(self) -> None:
        # Created per start, so that a worker restarted in another event loop
        # never waits on an event bound to the old one.
        self._stopping = asyncio.Event()
        self._slots.new_events()
        self._acks.new_events()
        self._leases.new_events()

    async def _supervise(self, loop: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Run one of the worker's loops until the worker stops, whatever it raises.

        The loops handle the errors they expect (Redis unreachable, a reply
        refused); anything else is a bug or data nobody foresaw, and a worker
        whose loop died would look alive while it handled nothing. So the
        error is logged and counted, and the loop starts again after a back-off.
        """
        failures = 0
        while not self._stopping.is_set():
            try:
                await loop()
                return
            except Exception:
                failures += 1
                delay = error_backoff(failures, 0.1)
                self._tally.add(f"{name}/internal-error")
                logger.exception(
                    "internal error in the %s loop of the worker on queue %r; restarting it in %.2f s",
                    name,
                    self.queue.name,
                    delay,
                )
                if name == "poll":
                    await self._poller.unless_stopping(asyncio.sleep(delay))
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
        await self._schedules.stop()
        poll, acker, heartbeat = self._tasks
        if self._poller.waiting:
            poll.cancel()
        await asyncio.gather(poll, return_exceptions=True)
        await self._handler_tasks.end(grace)
        await self._acks.flush(_STOP_ACK_FLUSH_TIMEOUT)
        for task in (acker, heartbeat):
            task.cancel()
        await asyncio.gather(acker, heartbeat, return_exceptions=True)
        unacknowledged = self._acks.give_up()
        if unacknowledged:
            logger.warning(
                "%d outcomes could not be acknowledged before stopping; their messages"
                " will be handed out again when their leases lapse",
                unacknowledged,
            )
        self._leases.clear()
        if self._presence is not None:
            await self._presence.stop()
        if self._channel is not None:
            await self._channel.aclose()
            self._channel = None
        self._running = False
        self.queue._workers.discard(self)
        logger.info("worker stopped on queue %r", self.queue.name)

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

    def stats(self) -> WorkerStats:
        """The worker's own statistics, without asking Redis."""
        return WorkerStats(
            queue_size=self._poller.queue_size.summary(),
            queueing_time_ms=self._runner.queueing_ms.summary(),
            handling_time_ms=self._runner.handling_ms.summary(),
            counts=self._tally.snapshot(),
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
            in_flight=self._slots.busy,
            options=self._option_values(),
            stats=self.stats(),
            queue_status=queue_status,
        )

    def _outcomes_acknowledged(self) -> bool:
        """Whether every outcome known so far has been acknowledged (for ``testing.drain``)."""
        return self._acks.idle.is_set()

    def _settled(self, batch: list[OutcomeRequest]) -> None:
        self._handler_tasks.settled(batch)

    @property
    def _handlers(self) -> set[asyncio.Task[None]]:
        """The handler tasks running now."""
        return self._handler_tasks.running


def observe_worker(worker: AsyncWorker, observer: WorkerObserver) -> None:
    """Hand ``worker``'s events and timings to ``observer`` from now on (before or after
    it starts): the seam through which ``vermilion.prometheus`` watches a worker."""
    worker._tally.attach(observer)
