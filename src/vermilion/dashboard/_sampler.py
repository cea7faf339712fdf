"""The dashboard's sampler: one background task that reads Redis every interval.

Owns the ``Queue`` objects the dashboard reads through (all on one client),
the latest status and live workers of every queue, and each queue's
``QueueSeries``. It uses only vermilion's public API (``queue_names``,
``Queue.status``, ``Queue.workers``); the routes read what it keeps and never
wait for Redis to draw a plot. Each sample reads the queues a page shows and
at most ``MAX_READS`` others, in turn: the cost to Redis stays bounded however
many queues it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from vermilion import Queue, queue_names, queue_shards
from vermilion._messages import QueueStatus
from vermilion._presence import WorkerPresence
from vermilion._serialization import Serializer

from ._series import QueueSeries, WorkerReading

__all__ = ["MAX_READS", "QueueSample", "Sampler"]

log = logging.getLogger("vermilion.dashboard")

_NAMES_EVERY = 5  # samples between SCANs for queue names: a SCAN walks the whole keyspace
_STOP_WAIT = 10.0  # seconds stop() lets the sample under way finish before cancelling it
_READS_AT_ONCE = 16  # queues read concurrently: each read holds one of the client's connections
# Queues read per sample besides those a page shows: two to three script calls each, so a
# Redis holding thousands of queues is not read thousands of times per interval.
MAX_READS = 200
_WATCH_SECONDS = 5.0  # a queue a page asked for within this long (or 3 intervals) is read every sample


@dataclass(frozen=True, slots=True)
class QueueSample:
    """The newest reading of one queue."""

    status: QueueStatus
    workers: Sequence[WorkerPresence]


class Sampler:
    """Samples every queue each ``interval`` seconds and keeps ``history`` seconds of series."""

    def __init__(
        self,
        client: aioredis.Redis,
        serializer: Serializer | None,
        interval: float,
        history: float,
        *,
        owns_client: bool,
        max_reads: int = MAX_READS,
    ) -> None:
        self.client = client
        self._owns_client = owns_client
        self.interval = interval
        self.capacity = max(1, round(history / interval))
        self._serializer = serializer
        self._queues: dict[str, Queue] = {}
        self.series: dict[str, QueueSeries] = {}
        self.latest: dict[str, QueueSample] = {}
        self.error: str | None = None  # why the last sample failed, shown on the page
        self._names_at = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._reads = asyncio.Semaphore(_READS_AT_ONCE)
        self._sampled = asyncio.Event()
        self._max_reads = max_reads
        self._watched: dict[str, float] = {}  # queue name -> when a page last asked for it
        self._turn = 0  # where the next sample's turn over the unwatched queues starts

    def watch(self, name: str) -> None:
        """Note that a page shows ``name``: it is read at every sample for the next seconds."""
        self._watched[name] = time.monotonic()

    def queue(self, name: str) -> Queue:
        """The ``Queue`` for a name (checked: a bad name raises ``ValueError``)."""
        queue = self._queues.get(name)
        if queue is None:
            queue = Queue(name, redis=self.client, serializer=self._serializer)
            self._queues[name] = queue
        return queue

    @property
    def names(self) -> list[str]:
        return sorted(self.latest)

    def start(self) -> None:
        """Start sampling in the running event loop, unless already started."""
        if self._task is None or self._task.done():
            self._stopping = asyncio.Event()
            self._sampled = asyncio.Event()
            self._reads = asyncio.Semaphore(_READS_AT_ONCE)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vermilion-dashboard")

    async def first_sample(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until one sample was taken, so a fresh page is not empty."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._sampled.wait(), timeout)

    async def stop(self) -> None:
        """Stop after the sample under way: cancelling a Redis call would cost its connection."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), _STOP_WAIT)
        except asyncio.TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        try:
            await self._sample_until_stopped()
        finally:
            # Also when the event loop cancels this task at its end (a mounted app).
            if self._owns_client:
                await self.client.aclose()

    async def _sample_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            began = loop.time()
            try:
                await self.sample()
            except Exception as exc:  # Redis away or refusing: keep the page up, say why
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("dashboard sample failed: %s", self.error)
            self._sampled.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0.0, self.interval - (loop.time() - began)))

    async def sample(self) -> None:
        """Read the queues due (see :meth:`_due`) and append a point to each one's series.

        A queue that cannot be read keeps its previous reading and gets no
        point; one whose workers cannot be read still gets its counts. Either
        error is kept in ``error`` for the page.
        """
        now = time.monotonic()
        if now - self._names_at >= _NAMES_EVERY * self.interval or not self.latest:
            await self._refresh_names()
            self._names_at = now
        names = self._due(now)
        # return_exceptions: one queue's error must not cost the others their
        # point, and a cancelled gather then raises CancelledError, never a child's error.
        readings = await asyncio.gather(
            *(self._read(self._queues[name]) for name in names), return_exceptions=True
        )
        t = time.time()
        errors = []
        for name, reading in zip(names, readings, strict=True):
            if isinstance(reading, BaseException):
                errors.append(f"{name}: {type(reading).__name__}: {reading}")
                continue
            sample, error = reading
            self.latest[name] = sample
            workers = [_reading(worker) for worker in sample.workers]
            self.series.setdefault(name, QueueSeries(self.capacity)).add(t, sample.status, workers)
            if error is not None:
                errors.append(f"{name}: {error}")
        self.error = "; ".join(errors) or None

    def _due(self, now: float) -> list[str]:
        """The queues this sample reads: those a page shows, then at most ``max_reads``
        others: first any never read, then the rest in turn, so that each is read at
        least once every ``ceil(queues / max_reads)`` samples."""
        horizon = now - max(_WATCH_SECONDS, 3 * self.interval)
        self._watched = {name: at for name, at in self._watched.items() if at >= horizon}
        watched = [name for name in self._queues if name in self._watched]
        unread = [name for name in self._queues if name not in self._watched and name not in self.latest]
        others = [name for name in self._queues if name not in self._watched and name in self.latest]
        chosen = unread[: self._max_reads]
        room = min(self._max_reads - len(chosen), len(others))
        if room > 0:
            start = self._turn % len(others)
            chosen += [others[(start + k) % len(others)] for k in range(room)]
            self._turn = start + room
        return watched + chosen

    async def _refresh_names(self) -> None:
        # with_workers: a queue whose workers keep up is empty most of the time,
        # and would leave the page (and lose its plots) between two messages.
        names = set(await queue_names(self.client, with_workers=True))
        for gone in self._queues.keys() - names:
            del self._queues[gone]
            self.series.pop(gone, None)
            self.latest.pop(gone, None)
        for name in sorted(names - self._queues.keys()):
            # A sharded queue's client must give its shard count.
            shards = await queue_shards(self.client, name)
            self._queues[name] = Queue(name, redis=self.client, serializer=self._serializer, shards=shards)

    async def _read(self, queue: Queue) -> tuple[QueueSample, str | None]:
        async with self._reads:
            return await self._read_now(queue)

    @staticmethod
    async def _read_now(queue: Queue) -> tuple[QueueSample, str | None]:
        status = await queue.status()
        try:
            workers = await queue.workers()
        except Exception as exc:  # e.g. a server that refuses the presence script
            return QueueSample(status, ()), f"live workers unreadable: {type(exc).__name__}: {exc}"
        return QueueSample(status, sorted(workers, key=lambda worker: worker.id)), None


def _reading(worker: WorkerPresence) -> WorkerReading:
    summary = worker.handling_time_ms
    return WorkerReading(
        id=worker.id,
        last_seen=worker.last_seen.timestamp(),
        counts=dict(worker.counts),
        p50=None if summary is None else summary.p50,
        p99=None if summary is None else summary.p99,
    )
