"""A failover drill: a producer and a worker on one queue while its master is SIGKILLed.

Both keep the same Queue and AsyncWorker objects throughout, as a service
would. Measured: enqueues acknowledged but never handled (lost), messages
handled more than once (duplicated), enqueues whose outcome is unknown, and
the seconds from the kill to the first enqueue acknowledged again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.helpers import eventually
from vermilion import (
    AsyncWorker,
    Message,
    OutcomeUnknownError,
    Queue,
    ReplicationError,
    VermilionConnectionError,
)


class FailoverDrill:
    def __init__(self, queue: Queue, *, messages: int, **enqueue_options: Any) -> None:
        self.queue = queue
        self.messages = messages
        self.enqueue_options = enqueue_options
        self.acknowledged: list[str] = []
        self.unknown: list[str] = []
        self.unconfirmed: list[str] = []
        self.handled: Counter[str] = Counter()
        self.killed_at: float | None = None
        self.recovered_at: float | None = None

    async def _handle(self, message: Message) -> None:
        self.handled[message.mid] += 1
        await asyncio.sleep(0.002)

    async def _enqueue(self, index: int) -> None:
        mid = f"m{index}"
        while True:
            try:
                result = await self.queue.enqueue(index, mid=mid, **self.enqueue_options)
            except OutcomeUnknownError:
                self.unknown.append(mid)  # may or may not be stored: not counted as acknowledged
                return
            except ReplicationError:
                self.unconfirmed.append(mid)  # stored on the master only: not acknowledged either
                return
            except VermilionConnectionError:
                await asyncio.sleep(0.05)  # never sent: safe to send again
                continue
            assert result.ok, result
            self.acknowledged.append(mid)
            if self.killed_at is not None and self.recovered_at is None:
                self.recovered_at = time.monotonic()
            return

    async def _produce(self) -> None:
        for index in range(self.messages):
            await self._enqueue(index)
            await asyncio.sleep(0.003)

    async def _drained(self) -> bool:
        status = await self.queue.status()
        return status.nqueued + status.nlocked + status.nbackoff == 0

    async def run(
        self, kill: Callable[[], None], revive: Callable[[], None] | None = None
    ) -> dict[str, float]:
        """Produce and drain; ``kill`` the master once a fifth of the messages were handled,
        and ``revive`` it (as a replica of the new master) two seconds later."""
        worker = AsyncWorker(
            self.queue, self._handle, concurrency=8, monitor=None, idle_backoff=0.05, lock_timeout=3
        )
        async with worker:
            producing = asyncio.create_task(self._produce())
            await eventually(
                lambda: asyncio.sleep(0, len(self.handled) > self.messages // 5), 30, what="a running drain"
            )
            kill()
            self.killed_at = time.monotonic()
            if revive is not None:
                await asyncio.sleep(2)
                await asyncio.to_thread(revive)
            await asyncio.wait_for(producing, 90)
            await eventually(self._drained, 60, interval=0.1, what="the queue drained on the new master")
        assert self.recovered_at is not None, "no enqueue was acknowledged after the kill"
        return {
            "acknowledged": len(self.acknowledged),
            "unknown": len(self.unknown),
            "unconfirmed": len(self.unconfirmed),
            "lost": len(set(self.acknowledged) - set(self.handled)),
            "duplicated": sum(1 for times in self.handled.values() if times > 1),
            "recovery_s": round(self.recovered_at - self.killed_at, 2),
        }
