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
each on a connection of its own, all at once. A ``BLPOP`` that is still
blocked when the loop goes back to work is left to finish, not cancelled (a
cancelled one would cost its connection); a token it brings wakes its shard
at the next wait.
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
from ._policies import ERROR_BACKOFF_CAP, error_backoff
from ._polling import _DUE_NOW_BACKOFF, _HOUSEKEEPING_LIMIT, Poller
from ._protocol import ScriptClient
from ._transport import Channel

__all__ = ["ShardPoller"]


class _Wakeups:
    """The blocking waits on the shards' wake-up lists, one per group of shards
    that one ``BLPOP`` can cover."""

    def __init__(self, client: ScriptClient, shards: tuple[QueueKeys, ...]) -> None:
        self._client = client
        self._shards = shards
        one_node = not isinstance(client.transport, ClusterTransport)
        self._groups = [tuple(range(len(shards)))] if one_node else [(i,) for i in range(len(shards))]
        self._notify = {keys.key("notify"): index for index, keys in enumerate(shards)}
        self._channels: list[Channel | None] = [None] * len(self._groups)
        self._waits: list[asyncio.Task[bytes | None] | None] = [None] * len(self._groups)
        self._retry_at = [0.0] * len(self._groups)

    async def wait(self, timeout: float, also: asyncio.Event | None) -> set[int]:
        """The shards whose tokens arrived within ``timeout`` seconds (empty: none did,
        or ``also`` was set)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            woken = self._harvest(loop.time())
            remaining = deadline - loop.time()
            if woken or remaining <= 0 or (also is not None and also.is_set()):
                return woken
            waiting = self._launch(loop.time(), remaining)
            event_task = None if also is None else asyncio.ensure_future(also.wait())
            if event_task is not None:
                waiting.append(event_task)
            pause = min([remaining, *[at - loop.time() for at in self._retry_at if at > loop.time()]])
            try:
                if waiting:
                    await asyncio.wait(waiting, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(pause)
            finally:
                if event_task is not None:
                    event_task.cancel()

    def _launch(self, now: float, timeout: float) -> list[asyncio.Future[Any]]:
        """A ``BLPOP`` for every group that has none blocked (nor is backing off after an error)."""
        pending: list[asyncio.Future[Any]] = []
        for group, shards in enumerate(self._groups):
            task = self._waits[group]
            if task is None and self._retry_at[group] <= now:
                channel = self._channels[group]
                if channel is None:
                    channel = self._channels[group] = self._client.open_channel()
                keys = [self._shards[index] for index in shards]
                task = self._waits[group] = asyncio.ensure_future(
                    self._client.wait_for_wakeup(keys, timeout, channel)
                )
            if task is not None:
                pending.append(task)
        return pending

    def _harvest(self, now: float) -> set[int]:
        woken: set[int] = set()
        for group, task in enumerate(self._waits):
            if task is None or not task.done():
                continue
            self._waits[group] = None
            try:
                key = task.result()
            except VermilionError as exc:
                logger.warning("waiting on a shard's wake-up list failed (%s)", exc)
                self._retry_at[group] = now + 1.0
                continue
            if key is not None:
                woken.add(self._notify[key])
        return woken

    async def aclose(self) -> None:
        waits = [task for task in self._waits if task is not None]
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        self._waits = [None] * len(self._groups)
        for channel in self._channels:
            if channel is not None:
                await channel.aclose()
        self._channels = [None] * len(self._groups)


@dataclass(eq=False, kw_only=True)
class ShardPoller(Poller):
    """The poll loop (:meth:`run`) over the shards of one queue; ``keys`` are the queue's own."""

    shards: tuple[QueueKeys, ...]
    _sizes: list[int] = field(default_factory=list, init=False)

    async def run(self) -> None:
        count = len(self.shards)
        wakeups = _Wakeups(self.client, self.shards)
        ready = set(range(count))  # the shards to poll before the next idle wait
        held_back: set[int] = set()  # shards with a suspect this worker may not take now
        due_at: list[float | None] = [None] * count
        self._sizes = [0] * count
        turn = empty_rounds = errors = 0
        slots = self.slots
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                free = slots.free(self.awaiting_ack())
                if free <= 0:
                    slots.freed.clear()
                    await self.unless_stopping(slots.freed.wait())
                    continue
                if not ready:
                    ready = await self._idle(wakeups, empty_rounds, due_at, held_back)
                    continue
                index = next(i % count for i in range(turn, turn + count) if i % count in ready)
                turn = index + 1
                try:
                    reply = await self.client.dequeue(
                        self.shards[index],
                        free,
                        self.lock_ms,
                        _HOUSEKEEPING_LIMIT,
                        self._channel,
                        max_suspects=0 if slots.suspects else 1,
                    )
                except VermilionError as exc:
                    errors += 1
                    delay = error_backoff(errors, 0.1)
                    self.tally.add("poll/error")
                    logger.warning(
                        "poll of queue %r failed (%s); retrying in %.2f s",
                        self.shards[index].name,
                        exc,
                        delay,
                    )
                    await self.unless_stopping(asyncio.sleep(delay))
                    continue
                errors = 0
                handed = self.start_handlers(reply)
                if reply.reclaimed:
                    self.tally.add("lease/reclaimed", reply.reclaimed)
                self._sizes[index] = reply.ready
                size = sum(self._sizes)
                self.queue_size.record(size)
                if handed:
                    empty_rounds = 0
                else:
                    ready.discard(index)
                    if reply.suspects_held_back and slots.suspects:
                        held_back.add(index)
                    wait_ms = None if reply.next_due_ms is None else reply.next_due_ms - reply.now_ms
                    due_at[index] = None if wait_ms is None else loop.time() + max(0, wait_ms) / 1000
                    if not ready:
                        empty_rounds += 1
                self._call_monitor(PollInfo(self.keys.name, size, handed, reply.reclaimed, empty_rounds))
                if handed:
                    await self._pause_after_poll(size)
        finally:
            await wakeups.aclose()

    async def _idle(
        self, wakeups: _Wakeups, empty_rounds: int, due_at: list[float | None], held_back: set[int]
    ) -> set[int]:
        """Wait for a wake-up, a suspect to finish, or the idle timeout; the shards to poll next."""
        now = asyncio.get_running_loop().time()
        timeout = self._idle_timeout(empty_rounds)
        dues = [at for at in due_at if at is not None]
        if dues:
            timeout = min(timeout, max(0.0, min(dues) - now))
        everything = set(range(len(self.shards)))
        if timeout <= 0:
            if empty_rounds <= 1:
                return everything  # due now: the next polls hand it out
            self.tally.add("sleep/due-but-empty")
            timeout = min(ERROR_BACKOFF_CAP, _DUE_NOW_BACKOFF * 2 ** min(empty_rounds, 10))
        self.tally.add("sleep/end-of-queue")
        suspect = self.slots.suspect_finished if held_back else None
        if suspect is not None:
            suspect.clear()
        woken = await self.unless_stopping(wakeups.wait(timeout, suspect))
        if suspect is not None and suspect.is_set():
            woken = (woken or set()) | held_back
            held_back.clear()
        if woken is None:
            return set()  # stopping
        if not woken:
            held_back.clear()
            return everything  # the sweep: every shard once
        return woken
