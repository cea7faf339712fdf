"""The worker's poll loop: lease as many messages as there are free slots, or wait.

Owns the count of free handler slots (the worker's invariant: ``0 <= busy <=
concurrency``, ``busy`` equal to the handler tasks not yet finished), the
``dequeue`` calls, and every wait between them: for a slot, for a suspect to
finish, after an error, and the idle wait on the queue's wake-up list that an
enqueue ends at once. It does not run handlers: it hands each reply to the
worker, which starts them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ._exceptions import VermilionError
from ._keys import QueueKeys
from ._logs import logger
from ._messages import PollInfo
from ._policies import ERROR_BACKOFF_CAP, error_backoff, exponential_idle_backoff, user_delay
from ._protocol import ScriptClient
from ._stats import RollingStats, Tally
from ._transport import Channel
from ._wire import DequeueReply

__all__ = ["Poller", "Slots"]

T = TypeVar("T")

_HOUSEKEEPING_LIMIT = 256
# Empty polls that found something due already back off from this, doubling:
# the next poll should have handed it out, so polling at once again would spin.
_DUE_NOW_BACKOFF = 0.01


class Slots:
    """The handler slots of one worker, and the events that say one came free."""

    __slots__ = ("busy", "concurrency", "freed", "suspect_finished", "suspects")

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.busy = 0
        self.suspects = 0  # handlers running on messages whose lease had lapsed
        self.new_events()

    def new_events(self) -> None:
        """Events bound to the running event loop (made again by every start)."""
        self.freed = asyncio.Event()
        self.suspect_finished = asyncio.Event()

    def free(self, awaiting_ack: int) -> int:
        """How many messages the next poll may lease.

        Outcomes awaiting their ack still hold their leases. Up to `concurrency`
        of them are the normal coalescing of acks; beyond that the acks are
        failing (Redis is struggling), and leasing more would only pile up
        leases that lapse while their outcomes wait.
        """
        return self.concurrency - self.busy - max(0, awaiting_ack - self.concurrency)


@dataclass(eq=False, kw_only=True)
class Poller:
    """One worker's poll loop (:meth:`run`), on the connection of its own it is given."""

    client: ScriptClient
    keys: QueueKeys
    lock_ms: int
    slots: Slots
    awaiting_ack: Callable[[], int]
    start_handlers: Callable[[DequeueReply], int]
    idle_backoff: Callable[[int], float | None]
    throttle: Callable[[int], float | None] | None
    monitor: Callable[[PollInfo], object] | None
    tally: Tally
    queue_size: RollingStats = field(default_factory=RollingStats, init=False)
    waiting: bool = field(default=False, init=False)  # in a wait that stop() may cut short
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _channel: Channel | None = field(default=None, init=False)
    _errors: int = field(default=0, init=False)  # failed polls in a row

    def begin(self, stopping: asyncio.Event, channel: Channel) -> None:
        """Make ready for a run: the worker's stop event, and the connection to poll on."""
        self._stopping = stopping
        self._channel = channel
        self._errors = 0

    async def unless_stopping(self, awaitable: Coroutine[Any, Any, T]) -> T | None:
        """Await ``awaitable``, a wait of the poll loop that stop() may cut short.

        stop() cancels the poll loop only while it waits here, never while a
        dequeue is in flight (whose leased messages would then be stranded).
        A plain await, so that waking from an idle wait costs no extra task.
        """
        if self._stopping.is_set():
            awaitable.close()
            return None
        self.waiting = True
        try:
            return await awaitable
        finally:
            self.waiting = False

    async def run(self) -> None:
        empty_polls = 0
        slots = self.slots
        while not self._stopping.is_set():
            free = slots.free(self.awaiting_ack())
            if free <= 0:
                slots.freed.clear()
                await self.unless_stopping(slots.freed.wait())
                continue
            polled = await self.poll_once(self.keys, free)
            if polled is None:
                continue
            reply, handed = polled
            self.queue_size.record(reply.ready)
            empty_polls = 0 if handed else empty_polls + 1
            self._call_monitor(PollInfo(self.keys.name, reply.ready, handed, reply.reclaimed, empty_polls))
            if handed:
                await self._pause_after_poll(reply.ready)
            elif reply.suspects_held_back and slots.suspects:
                await self._wait_for_suspect(empty_polls)
            else:
                await self._sleep_idle(empty_polls, reply.now_ms, reply.next_due_ms)

    async def poll_once(self, keys: QueueKeys, free: int) -> tuple[DequeueReply, int] | None:
        """Lease up to ``free`` messages of ``keys`` and start their handlers: the reply, and
        how many were handed out; None when the call failed, after waiting out a backoff
        that grows with the failures in a row."""
        try:
            # While it holds a suspect, a worker takes no other: two of them
            # may be a poison message and a neighbour that died beside it.
            reply = await self.client.dequeue(
                keys,
                free,
                self.lock_ms,
                _HOUSEKEEPING_LIMIT,
                self._channel,
                max_suspects=0 if self.slots.suspects else 1,
            )
        except VermilionError as exc:
            self._errors += 1
            delay = error_backoff(self._errors, 0.1)
            self.tally.add("poll/error")
            logger.warning("poll of queue %r failed (%s); retrying in %.2f s", keys.name, exc, delay)
            await self.unless_stopping(asyncio.sleep(delay))
            return None
        self._errors = 0
        handed = self.start_handlers(reply)
        if reply.reclaimed:
            self.tally.add("lease/reclaimed", reply.reclaimed)
        return reply, handed

    def _idle_timeout(self, empty_polls: int) -> float:
        fallback = exponential_idle_backoff(empty_polls)
        return user_delay(self.idle_backoff, empty_polls, "idle_backoff", fallback, self.keys.name)

    async def _pause_after_poll(self, queue_size: int) -> None:
        if self.throttle is None:
            return
        delay = user_delay(self.throttle, queue_size, "throttle", 0.0, self.keys.name)
        if delay:
            await self.unless_stopping(asyncio.sleep(delay))

    async def _wait_for_suspect(self, empty_polls: int) -> None:
        """Only suspects are ready, and this worker may take none while it holds one.

        Waiting on the wake-up list would hand this worker tokens meant for
        workers that may take a suspect; its own suspect finishing is the event
        that lets it take the next.
        """
        self.slots.suspect_finished.clear()
        if not self.slots.suspects:
            return
        timeout = self._idle_timeout(empty_polls)
        with contextlib.suppress(asyncio.TimeoutError):
            await self.unless_stopping(asyncio.wait_for(self.slots.suspect_finished.wait(), timeout))

    async def _sleep_idle(self, empty_polls: int, now_ms: int, next_due_ms: int | None) -> None:
        self.tally.add("sleep/end-of-queue")
        timeout = self._idle_timeout(empty_polls)
        if next_due_ms is not None:
            timeout = min(timeout, max(0.0, (next_due_ms - now_ms) / 1000))
        if timeout <= 0:
            if empty_polls <= 1:
                return  # due now: the next poll hands it out
            # Still nothing handed out though something was due: back off
            # rather than poll in a loop until it changes.
            self.tally.add("sleep/due-but-empty")
            timeout = min(ERROR_BACKOFF_CAP, _DUE_NOW_BACKOFF * 2 ** min(empty_polls, 10))
        try:
            await self.unless_stopping(self.client.wait_for_wakeup(self.keys, timeout, self._channel))
        except VermilionError as exc:
            logger.warning("waiting on queue %r failed (%s)", self.keys.name, exc)
            await self.unless_stopping(asyncio.sleep(min(timeout, 1.0)))

    def _call_monitor(self, poll: PollInfo) -> None:
        if self.monitor is None:
            return
        try:
            self.monitor(poll)
        except Exception:
            logger.exception("the monitor of queue %r raised", self.keys.name)
