"""The worker's presence beat: announce the worker in Redis, rarely, and withdraw it at stop.

One beat at start, then one every ``interval`` seconds, each writing the
worker's record to expire after three intervals: a worker that dies without
stopping disappears by itself. The beat is the worker's cheapest loop on
purpose (issue #14: an idle worker's cost is counted in server commands), so
the default interval is long. A Redis error fails one beat, is logged and
counted (``presence/error``), and the next beat tries again: presence never
stops a worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from ._exceptions import VermilionError
from ._logs import logger
from ._messages import WorkerStats
from ._presence import encode_record
from ._presence_calls import beat, withdraw
from ._protocol import ScriptClient
from ._stats import Tally
from ._validation import seconds, to_ms

__all__ = ["DEFAULT_PRESENCE_INTERVAL", "TTL_INTERVALS", "PresenceBeat", "presence_beat"]

# 60 s keeps an idle worker within 0.5 Redis commands/s, its polling included (benchmarks/footprint.py).
DEFAULT_PRESENCE_INTERVAL = 60.0
TTL_INTERVALS = 3
"""A record lives this many intervals: two beats may fail before a live worker vanishes."""
_WITHDRAW_TIMEOUT = 5.0


class _Busy(Protocol):
    @property
    def busy(self) -> int: ...


Supervisor = Callable[[Callable[[], Coroutine[Any, Any, None]], str], Coroutine[Any, Any, None]]


def presence_beat(
    interval: float | timedelta | None,
    client: ScriptClient,
    queue: str,
    worker_id: str,
    concurrency: int,
    slots: _Busy,
    stats: Callable[[], WorkerStats],
    tally: Tally,
) -> PresenceBeat | None:
    """The beat of a worker given ``presence_interval``, or None when it is None (no presence)."""
    if interval is None:
        return None
    return PresenceBeat(
        client=client,
        queue=queue,
        worker_id=worker_id,
        interval=seconds(interval, "presence_interval", allow_zero=False),
        concurrency=concurrency,
        in_flight=lambda: slots.busy,
        stats=stats,
        tally=tally,
    )


@dataclass(eq=False, kw_only=True)
class PresenceBeat:
    """Writes one worker's presence record every ``interval`` seconds while it runs."""

    client: ScriptClient
    queue: str
    worker_id: str
    interval: float
    concurrency: int
    in_flight: Callable[[], int]
    stats: Callable[[], WorkerStats]
    tally: Tally
    _started_ms: int | None = field(default=None, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    @property
    def ttl_ms(self) -> int:
        return to_ms(self.interval) * TTL_INTERVALS

    def launch(self, supervise: Supervisor) -> None:
        """Start beating in a task that ``supervise`` restarts if it raises (a bug)."""
        self._task = asyncio.create_task(
            supervise(self.run, "presence"), name=f"vermilion-presence-{self.queue}"
        )

    async def stop(self) -> None:
        """Stop beating and remove the record."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.withdraw()

    async def run(self) -> None:
        """Beat now, then every ``interval`` seconds, until cancelled."""
        first = True
        while True:
            await self.beat_once(prune=first)
            first = False
            await asyncio.sleep(self.interval)

    async def beat_once(self, *, prune: bool = False) -> bool:
        """Write the record once; False (logged) if Redis refused or could not be reached.

        ``prune`` also drops expired entries of the queue's index: done at start,
        so that workers that keep crashing and restarting clean up after
        themselves, and on every read.
        """
        stats = self.stats()
        record = encode_record(
            worker_id=self.worker_id,
            queue=self.queue,
            concurrency=self.concurrency,
            in_flight=self.in_flight(),
            ttl_ms=self.ttl_ms,
            started_ms=self._started_ms,
            counts=stats.counts,
            handling_time_ms=stats.handling_time_ms,
            queueing_time_ms=stats.queueing_time_ms,
        )
        try:
            now_ms = await beat(self.client, self.queue, self.worker_id, self.ttl_ms, record, prune=prune)
        except VermilionError as exc:
            self.tally.add("presence/error")
            logger.warning(
                "announcing worker %s of queue %r failed (%s); next try in %g s",
                self.worker_id,
                self.queue,
                exc,
                self.interval,
            )
            return False
        if self._started_ms is None:
            self._started_ms = now_ms  # the first beat that reached Redis is the worker's start
        return True

    async def withdraw(self) -> None:
        """Remove the record (at stop); a failure is logged: the record then expires by itself."""
        try:
            await asyncio.wait_for(withdraw(self.client, self.queue, self.worker_id), _WITHDRAW_TIMEOUT)
        except (VermilionError, asyncio.TimeoutError) as exc:
            logger.warning(
                "removing the presence of worker %s of queue %r failed (%s); it expires in %g s",
                self.worker_id,
                self.queue,
                exc,
                self.ttl_ms / 1000,
            )
        self._started_ms = None
