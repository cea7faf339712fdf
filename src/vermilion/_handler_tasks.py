"""The worker's handler tasks: one per leased message, its slot, its lease, its end.

Owns starting a task per message a poll leased (taking a slot and holding
the lease), submitting the outcome the task's :class:`HandlerRunner` found,
freeing the slot when the task ends, and ending tasks at ``stop()``: waiting,
cancelling, and at last abandoning a handler that ignores its cancellation,
so that stop returns. It neither polls nor talks to Redis itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ._acks import Acknowledger
from ._handling import HandlerRunner
from ._leases import LeaseKeeper
from ._logs import logger
from ._polling import Slots
from ._stats import Tally
from ._wire import DequeueReply, Leased, OutcomeRequest

__all__ = ["HandlerTasks"]

# After the stop timeout, handlers are cancelled and given this long to end; one
# that swallows its cancellation is then abandoned, so that stop() returns.
_CANCEL_GRACE = 2.0


@dataclass(eq=False)
class HandlerTasks:
    """The running handler tasks of one worker."""

    runner: HandlerRunner
    slots: Slots
    leases: LeaseKeeper
    acks: Acknowledger
    tally: Tally
    running: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    # Handlers that ignored stop()'s cancellation: no longer counted, renewed
    # or acknowledged; their messages come back when their leases lapse.
    _abandoned: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def start_all(self, reply: DequeueReply) -> int:
        """Start a handler per leased message; returns how many.

        The reply lets go of the messages: a large payload must not stay in
        memory while the poll loop waits, once its handler has decoded it.
        """
        for leased in reply.messages:
            self._start(leased, reply.now_ms)
        handed = len(reply.messages)
        reply.messages.clear()
        return handed

    def _start(self, leased: Leased, now_ms: int) -> None:
        self.slots.busy += 1
        if leased.suspect:
            self.slots.suspects += 1
        task = asyncio.create_task(self._handle(leased, now_ms), name=f"vermilion-handler-{leased.mid}")
        self.leases.hold(leased.mid, leased.token, leased.lock_ms, task)
        self.running.add(task)
        task.add_done_callback(self._done)
        if leased.suspect:
            task.add_done_callback(self._suspect_done)

    async def _handle(self, leased: Leased, now_ms: int) -> None:
        try:
            outcome = await self.runner.outcome(leased, now_ms)
        except BaseException:
            # Cancelled by stop(), or the process ends: leave the message to its lease.
            self.leases.drop((leased.mid, leased.token))
            raise
        if asyncio.current_task() in self._abandoned:
            return  # stop() gave up on it: the message is left to its lease
        self.acks.submit(self.runner.request_for(leased, outcome))

    def settled(self, batch: list[OutcomeRequest]) -> None:
        """Redis answered for these outcomes: their leases are over, their slots free."""
        for request in batch:
            self.leases.drop((request.mid, request.token))
        self.slots.freed.set()

    def _suspect_done(self, task: asyncio.Task[None]) -> None:
        self.slots.suspects -= 1
        self.slots.suspect_finished.set()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self.runner.cancelled_by_worker.discard(task)
        self.slots.busy -= 1
        self.slots.freed.set()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # KeyboardInterrupt or SystemExit, logged by the runner
            logger.debug("handler task of queue %r ended with %r", self.runner.queue.name, exc)

    async def end(self, grace: float) -> None:
        """Wait ``grace`` seconds for the running handlers, cancel the others, and
        abandon those that are still running a bounded while after that."""
        if not self.running:
            return
        _, unfinished = await asyncio.wait(set(self.running), timeout=grace)
        if not unfinished:
            return
        for task in unfinished:
            self.runner.cancelled_by_worker.add(task)
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
            self.tally.add("handler/abandoned", len(stubborn))
            logger.error(
                "%d handler(s) of queue %r ignored cancellation for %.1f s and were abandoned: their"
                " leases are no longer renewed and their outcomes will not be acknowledged",
                len(stubborn),
                self.runner.queue.name,
                _CANCEL_GRACE,
            )

    def _abandon(self, task: asyncio.Task[None]) -> None:
        """Stop accounting for a handler task that will not end: its slot and its
        lease are let go now, whatever it does later."""
        if task.remove_done_callback(self._suspect_done):
            self.slots.suspects -= 1
        task.remove_done_callback(self._done)
        self.running.discard(task)
        self.slots.busy -= 1
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned_done)
        self.leases.drop_held_by(task)

    def _abandoned_done(self, task: asyncio.Task[None]) -> None:
        self._abandoned.discard(task)
        self.runner.cancelled_by_worker.discard(task)
        logger.warning("an abandoned handler of queue %r ended at last", self.runner.queue.name)
