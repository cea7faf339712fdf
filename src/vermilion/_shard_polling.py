"""The poll loop of a worker on a sharded queue: every shard in turn, and one idle wait over all.

The worker's slots are shared by the shards. The loop polls the shards that
may have work in turn (round-robin), each with every free slot, so a busy
shard never starves another: as soon as a slot frees, the next shard with
work is asked first. A shard that answers empty is left out until a
wake-up names it or the idle wait ends, when every shard is polled once
(the sweep that reclaims lapsed leases and hands out delayed messages).

The idle wait is a ``BLPOP`` on the shards' wake-up lists: on one server one
``BLPOP`` over all of them (Redis answers with the list that had a token);
on a cluster, where one command cannot span slots, one ``BLPOP`` per shard,
each on a connection of its own, all at once. Each blocks for a minute,
longer than any idle timeout, and is left to finish, never cancelled (a
cancelled one would cost its connection): it outlives the sweeps and the
busy spells, and a token it brings names the shard to poll next.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ._cluster import ClusterTransport
from ._exceptions import VermilionError
from ._keys import QueueKeys
from ._logs import logger
from ._messages import PollInfo
from ._policies import ERROR_BACKOFF_CAP
from ._polling import _DUE_NOW_BACKOFF, Poller, Slots
from ._protocol import ScriptClient
from ._transport import Channel
from ._wire import DequeueReply

__all__ = ["ShardPoller"]

# While some shards keep the worker busy, the quiet ones are polled this often
# anyway (lapsed leases of a crashed worker).
_BUSY_SWEEP = 5.0
# How long each wake-up wait blocks: longer than the idle timeout, so that an idle
# worker's sweeps of the shards do not each start new waits (a cluster's would
# double the idle commands); the poll loop's own timeouts do not depend on it.
_WAIT_SECONDS = 60.0


class _Wakeups:
    """The blocking waits on the wake-up lists of the shards that answered empty.

    Each wait is a task on a connection of its own: on one server one ``BLPOP``
    covers every such shard not yet covered; on a cluster one covers one shard.
    A wait is left to finish when the loop goes back to work (cancelling one
    would cost its connection); its token names the shard to poll next.
    """

    def __init__(self, client: ScriptClient, shards: tuple[QueueKeys, ...]) -> None:
        self._client = client
        self._shards = shards
        self._one_node = not isinstance(client.transport, ClusterTransport)
        self._notify = {keys.key("notify"): index for index, keys in enumerate(shards)}
        self._waits: dict[asyncio.Task[bytes | None], tuple[tuple[int, ...], Channel]] = {}
        self._free: list[Channel] = []
        self._retry_at = 0.0

    def launch(self, quiet: set[int]) -> None:
        """Start waits on the ``quiet`` shards that no wait covers yet."""
        now = asyncio.get_running_loop().time()
        covered = {index for shards, _ in self._waits.values() for index in shards}
        uncovered = sorted(quiet - covered)
        if not uncovered or now < self._retry_at:
            return
        groups = [tuple(uncovered)] if self._one_node else [(index,) for index in uncovered]
        for group in groups:
            channel = self._free.pop() if self._free else self._client.open_channel()
            keys = [self._shards[index] for index in group]
            task = asyncio.ensure_future(self._client.wait_for_wakeup(keys, _WAIT_SECONDS, channel))
            self._waits[task] = (group, channel)

    def harvest(self) -> set[int]:
        """The shards whose tokens the finished waits brought."""
        woken: set[int] = set()
        for task in [task for task in self._waits if task.done()]:
            _, channel = self._waits.pop(task)
            self._free.append(channel)
            try:
                key = task.result()
            except VermilionError as exc:
                logger.warning("waiting on the wake-up lists of a sharded queue failed (%s)", exc)
                self._retry_at = asyncio.get_running_loop().time() + 1.0
                continue
            if key is not None:
                woken.add(self._notify[key])
        return woken

    async def wait(self, quiet: set[int], timeout: float, also: asyncio.Event | None) -> set[int]:
        """The shards whose tokens arrived within ``timeout`` seconds (empty: none
        did, or ``also`` was set first)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            woken = self.harvest()
            remaining = deadline - loop.time()
            if woken or remaining <= 0 or (also is not None and also.is_set()):
                return woken
            self.launch(quiet)
            waiting: list[asyncio.Future[Any]] = list(self._waits)
            event_task = None if also is None else asyncio.ensure_future(also.wait())
            if event_task is not None:
                waiting.append(event_task)
            try:
                if waiting:
                    await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                else:  # backing off after a failed wait
                    await asyncio.sleep(min(remaining, max(0.001, self._retry_at - loop.time())))
            finally:
                if event_task is not None:
                    event_task.cancel()

    async def aclose(self) -> None:
        waits, self._waits = self._waits, {}
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        channels = [channel for _, channel in waits.values()] + self._free
        self._free = []
        for channel in channels:
            await channel.aclose()


@dataclass(eq=False, kw_only=True)
class ShardPoller(Poller):
    """The poll loop (:meth:`run`) over the shards of one queue; ``keys`` are the queue's own."""

    shards: tuple[QueueKeys, ...]

    async def run(self) -> None:
        every = set(range(len(self.shards)))
        wakeups = _Wakeups(self.client, self.shards)
        state = _Round(ready=set(every), due_at=[None] * len(self.shards), sizes=[0] * len(self.shards))
        loop = asyncio.get_running_loop()
        sweep_at = loop.time() + _BUSY_SWEEP
        slots = self.slots
        try:
            while not self._stopping.is_set():
                free = slots.free(self.awaiting_ack())
                if free <= 0:
                    slots.freed.clear()
                    await self.unless_stopping(slots.freed.wait())
                    continue
                now = loop.time()
                state.wake(wakeups.harvest(), now, slots.suspect_finished)
                if now >= sweep_at:
                    # Lapsed leases and due messages of the quiet shards, while others keep it busy.
                    state.ready |= every
                    sweep_at = now + _BUSY_SWEEP
                if not state.ready:
                    state.ready = await self._idle(wakeups, state)
                    sweep_at = loop.time() + _BUSY_SWEEP
                    continue
                if state.busy:
                    # Not in a sweep of empty shards, which would start a wait per shard.
                    wakeups.launch(every - state.ready)
                index = state.next_shard()
                polled = await self.poll_once(self.shards[index], free)
                if polled is None:
                    continue
                reply, handed = polled
                size = state.polled(index, reply, handed, loop.time(), slots)
                self.queue_size.record(size)
                poll = PollInfo(self.keys.name, size, handed, reply.reclaimed, state.empty_rounds)
                self._call_monitor(poll)
                if handed:
                    await self._pause_after_poll(size)
        finally:
            await wakeups.aclose()

    async def _idle(self, wakeups: _Wakeups, state: _Round) -> set[int]:
        """Wait for a wake-up, a suspect to finish, or the idle timeout; the shards to poll next."""
        now = asyncio.get_running_loop().time()
        timeout = self._idle_timeout(state.empty_rounds)
        dues = [at for at in state.due_at if at is not None]
        if dues:
            timeout = min(timeout, max(0.0, min(dues) - now))
        every = set(range(len(self.shards)))
        if timeout <= 0:
            if state.empty_rounds <= 1:
                return every  # due now: the next polls hand it out
            self.tally.add("sleep/due-but-empty")
            timeout = min(ERROR_BACKOFF_CAP, _DUE_NOW_BACKOFF * 2 ** min(state.empty_rounds, 10))
        self.tally.add("sleep/end-of-queue")
        suspect = self.slots.suspect_finished if state.held_back else None
        woken = await self.unless_stopping(wakeups.wait(every, timeout, suspect))
        if woken is None:
            return set()  # stopping
        if suspect is not None and suspect.is_set():
            woken |= state.held_back
            state.held_back.clear()
        if not woken:
            state.held_back.clear()
            return every  # the sweep: every shard once
        return woken


@dataclass(eq=False)
class _Round:
    """Which shards to poll, in turn, and what their last polls said."""

    ready: set[int]  # the shards to poll before the next idle wait
    due_at: list[float | None]  # per shard: when its next delayed message is due (loop time)
    sizes: list[int]  # per shard: the ready messages its last poll counted
    held_back: set[int] = field(default_factory=set)  # a suspect this worker may not take now
    empty_rounds: int = 0
    busy: bool = False  # the last poll handed messages out
    _turn: int = 0

    def next_shard(self) -> int:
        count = len(self.sizes)
        index = next(i % count for i in range(self._turn, self._turn + count) if i % count in self.ready)
        self._turn = index + 1
        return index

    def wake(self, woken: set[int], now: float, suspect_finished: asyncio.Event) -> None:
        """Add the shards that a token, a due time or a finished suspect says to poll."""
        self.ready |= woken
        for index, at in enumerate(self.due_at):
            if at is not None and at <= now:
                self.ready.add(index)
                self.due_at[index] = None
        if self.held_back and suspect_finished.is_set():
            self.ready |= self.held_back
            self.held_back.clear()

    def polled(self, index: int, reply: DequeueReply, handed: int, now: float, slots: Slots) -> int:
        """Record a poll's answer; the queue's ready messages over every shard, as last counted."""
        self.sizes[index] = reply.ready
        self.busy = handed > 0
        if handed:
            self.empty_rounds = 0
        else:
            self.ready.discard(index)
            if reply.suspects_held_back and slots.suspects:
                slots.suspect_finished.clear()
                self.held_back.add(index)
            wait_ms = None if reply.next_due_ms is None else reply.next_due_ms - reply.now_ms
            self.due_at[index] = None if wait_ms is None else now + max(0, wait_ms) / 1000
            if not self.ready:
                self.empty_rounds += 1
        return sum(self.sizes)
