"""Prometheus metrics for vermilion (the extra ``vermilion[prometheus]``).

Two parts, each registered on a ``prometheus_client`` registry (the default one
unless told otherwise):

* :class:`QueueCollector`, a custom collector: at each scrape it reads every
  queue's counts and lag from Redis (one ``counts`` script call per queue), so
  that the figures are those of Redis, whichever process scrapes them;
* :class:`WorkerMetrics`: counters and histograms a worker feeds as it handles
  messages (attach a worker with :meth:`WorkerMetrics.instrument`).

:func:`serve_metrics` serves ``/metrics`` over HTTP, as ``vermilion worker
--metrics-port`` does. ``import vermilion`` never imports this module.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from typing import Any, TypeVar
from weakref import WeakSet

import redis.asyncio as aioredis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._queue import DEFAULT_URL, Queue
from ._queues import queue_names, queue_shards
from ._validation import check_queue_name, seconds
from ._worker import AsyncWorker, observe_worker

__all__ = [
    "HANDLING_BUCKETS",
    "QUEUEING_BUCKETS",
    "QueueCollector",
    "WorkerMetrics",
    "serve_metrics",
]

_T = TypeVar("_T")
log: logging.Logger = logging.getLogger("vermilion.prometheus")

HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Upper bounds (seconds) of the handling-time histogram's buckets."""
QUEUEING_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
"""Upper bounds (seconds) of the queueing-time histogram's buckets: queues wait longer than handlers run."""

# The queue gauges: metric name, help, the QueueStatus field read.
_QUEUE_GAUGES = (
    ("vermilion_queue_ready_messages", "Messages ready to be handled now.", "nqueued"),
    ("vermilion_queue_delayed_messages", "Messages waiting for their delay or retry backoff.", "nbackoff"),
    ("vermilion_queue_locked_messages", "Messages being handled under a lease.", "nlocked"),
    ("vermilion_queue_done_messages", "Handled messages inside their de-duplication window.", "ndone"),
    ("vermilion_queue_failed_messages", "Failed messages kept in the failure history.", "nfailed"),
    ("vermilion_queue_lag_seconds", "How long the oldest ready message has waited.", "lag"),
)


class QueueCollector(Collector):
    """Queue gauges read from Redis at scrape time, labelled ``queue``.

    Args:
        url: the Redis URL (default ``$VERMILION_URL``, else ``redis://127.0.0.1:6379/0``).
        queues: the queues to report; ``None`` reports every queue with data or
            a live worker in Redis (``queue_names(..., with_workers=True)``, a
            ``SCAN`` at each scrape: an admin's command).
        timeout: seconds a scrape may spend reading Redis.

    A scrape that cannot read Redis reports ``vermilion_redis_up 0`` and no
    queue gauges (and logs a warning), so that an alert can tell "Redis
    unreachable" from "queue empty". The collector reads Redis in a thread of
    its own, with its own event loop and connection; :meth:`close` ends both.
    """

    def __init__(
        self, url: str | None = None, queues: Iterable[str] | None = None, *, timeout: float = 5.0
    ) -> None:
        self.url: str = url or os.environ.get("VERMILION_URL") or DEFAULT_URL
        self.queues: tuple[str, ...] | None = (
            None if queues is None else tuple(check_queue_name(name) for name in queues)
        )
        self.timeout: float = seconds(timeout, "timeout", allow_zero=False)
        self._runner: _LoopThread | None = None
        self._client: aioredis.Redis | None = None
        # Kept between scrapes: each checks its queue's protocol version once, not per scrape.
        self._queues: dict[str, Queue] = {}
        self._lock = threading.Lock()  # scrapes may come from several HTTP threads at once

    def describe(self) -> Iterator[Metric]:
        """The metric names without samples: registering the collector reads nothing from Redis."""
        gauges, up = self._families()
        yield from gauges.values()
        yield up

    def collect(self) -> Iterator[Metric]:
        gauges, up = self._families()
        with self._lock:
            try:
                statuses = self._loop().run(self._read(), self.timeout)
            except Exception as exc:  # every failure of a scrape is reported the same way
                log.warning("reading queue metrics from Redis failed: %s: %s", type(exc).__name__, exc)
                up.add_metric([], 0)
                yield up
                return
        for name, status in statuses:
            for metric, _, field in _QUEUE_GAUGES:
                gauges[metric].add_metric([name], float(getattr(status, field)))
        up.add_metric([], 1)
        yield from gauges.values()
        yield up

    def close(self) -> None:
        """Close the collector's connection and stop its thread (unregister it first)."""
        with self._lock:
            if self._runner is None:
                return
            if self._client is not None:
                self._runner.run(self._client.aclose(), self.timeout)
                self._client = None
                self._queues.clear()
            self._runner.stop()
            self._runner = None

    @staticmethod
    def _families() -> tuple[dict[str, GaugeMetricFamily], GaugeMetricFamily]:
        gauges = {
            name: GaugeMetricFamily(name, documentation, labels=["queue"])
            for name, documentation, _ in _QUEUE_GAUGES
        }
        up = GaugeMetricFamily(
            "vermilion_redis_up", "Whether the last scrape could read the queues from Redis."
        )
        return gauges, up

    def _loop(self) -> _LoopThread:
        if self._runner is None:
            self._runner = _LoopThread()
        return self._runner

    async def _read(self) -> list[tuple[str, Any]]:
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url, socket_connect_timeout=self.timeout, socket_timeout=self.timeout
            )
        client = self._client
        names: Sequence[str] = (
            self.queues if self.queues is not None else await queue_names(client, with_workers=True)
        )
        return [(name, await (await self._queue(name, client)).status()) for name in names]

    async def _queue(self, name: str, client: aioredis.Redis) -> Queue:
        queue = self._queues.get(name)
        if queue is None:
            # A sharded queue shows as one, its counts summed over its shards.
            shards = await queue_shards(client, name)
            queue = self._queues[name] = Queue(name, redis=client, shards=shards)
        return queue


class _LoopThread:
    """An event loop running in a daemon thread, for a caller that is not async (a scrape)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vermilion-metrics", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, timeout), self._loop)
        return future.result()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class WorkerMetrics:
    """Counters and histograms of the workers attached with :meth:`instrument`, labelled ``queue``.

    * ``vermilion_worker_handled_messages_total{queue, outcome}``: ``outcome`` is
      ``success``, ``retry`` or ``failure`` (a handler's exception is a failure
      unless ``on_exception`` maps it otherwise);
    * ``vermilion_worker_handling_seconds{queue}`` (histogram): each handler run;
    * ``vermilion_worker_queueing_seconds{queue}`` (histogram): from enqueue to
      the first hand-out of each message;
    * ``vermilion_worker_lease_renewals_total{queue}``: leases renewed;
    * ``vermilion_worker_stale_acks_total{queue}``: outcomes that found their
      lease gone (it lapsed and the message was handed out again, or the queue
      was cleared);
    * ``vermilion_worker_poll_errors_total{queue}``: polls Redis failed or refused.

    Create one per registry (the metric names may be registered once); attach
    any number of workers to it.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        handling_buckets: Sequence[float] = HANDLING_BUCKETS,
        queueing_buckets: Sequence[float] = QUEUEING_BUCKETS,
    ) -> None:
        self.handled: Counter = Counter(
            "vermilion_worker_handled_messages_total",
            "Messages whose handling ended, by outcome.",
            ["queue", "outcome"],
            registry=registry,
        )
        self.handling: Histogram = Histogram(
            "vermilion_worker_handling_seconds",
            "Time a handler took on a message.",
            ["queue"],
            buckets=handling_buckets,
            registry=registry,
        )
        self.queueing: Histogram = Histogram(
            "vermilion_worker_queueing_seconds",
            "Time from enqueue to a message's first hand-out.",
            ["queue"],
            buckets=queueing_buckets,
            registry=registry,
        )
        self.lease_renewals: Counter = Counter(
            "vermilion_worker_lease_renewals_total",
            "Leases renewed while handlers ran.",
            ["queue"],
            registry=registry,
        )
        self.stale_acks: Counter = Counter(
            "vermilion_worker_stale_acks_total",
            "Outcomes that found their lease gone (lapsed and reclaimed, or the queue cleared).",
            ["queue"],
            registry=registry,
        )
        self.poll_errors: Counter = Counter(
            "vermilion_worker_poll_errors_total",
            "Polls that failed: Redis unreachable or refusing.",
            ["queue"],
            registry=registry,
        )
        self._workers: WeakSet[AsyncWorker] = WeakSet()

    def instrument(self, worker: AsyncWorker) -> None:
        """Feed these metrics from ``worker``'s events from now on (before or after it starts)."""
        if not isinstance(worker, AsyncWorker):
            raise TypeError(f"worker must be a vermilion.AsyncWorker, not {type(worker).__name__}")
        if worker not in self._workers:  # attached once, however often asked
            self._workers.add(worker)
            observe_worker(worker, _Observer(self, worker.queue.name))


class _Observer:
    """Turns one worker's events into its queue's children of a :class:`WorkerMetrics`."""

    __slots__ = ("_counters", "_timings")

    def __init__(self, metrics: WorkerMetrics, queue: str) -> None:
        # Children bound once: a labels() lookup per message would cost more than the rest.
        # Binding them also exports every series at 0 before its first event.
        self._counters = {
            "handler/success": metrics.handled.labels(queue, "success"),
            "handler/retry": metrics.handled.labels(queue, "retry"),
            "handler/error": metrics.handled.labels(queue, "failure"),
            "lease/renewed": metrics.lease_renewals.labels(queue),
            "ack/stale": metrics.stale_acks.labels(queue),
            "poll/error": metrics.poll_errors.labels(queue),
        }
        self._timings = {
            "handling": metrics.handling.labels(queue),
            "queueing": metrics.queueing.labels(queue),
        }

    def count(self, event: str, n: int) -> None:
        counter = self._counters.get(event)
        if counter is not None:
            counter.inc(n)

    def timing(self, measure: str, seconds: float) -> None:
        histogram = self._timings.get(measure)
        if histogram is not None:
            histogram.observe(seconds)


def serve_metrics(
    port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> tuple[Any, threading.Thread]:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread.

    Returns ``prometheus_client``'s server and thread (``server.shutdown()``
    stops it). Port 0 picks a free port: ``server.server_port`` tells which.
    """
    server, thread = start_http_server(port, addr=host, registry=registry)
    return server, thread
