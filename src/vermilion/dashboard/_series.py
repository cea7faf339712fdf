"""The dashboard's time series of one queue: pure code, no I/O, no clock.

``QueueSeries.add`` takes one sample (the queue's ``QueueStatus`` and its live
workers, at a time the caller measured) and appends a point to each series,
in bounded rings. Rates come from the live workers' outcome counters:

* each worker publishes its counters every few seconds, so a worker's rate is
  its counters' growth between two publications divided by the time between
  them (its ``last_seen``), held until the next publication;
* a worker seen for the first time only gives a baseline, and a worker that is
  gone contributes nothing: neither makes a spike;
* a worker whose record stops changing stops counting after twice its
  publication period (it died, and its record has not expired yet).

There is no enqueue counter in Redis, so "enqueued per second" is derived:
the growth of the live messages (ready + locked + backoff) plus the messages
that left them (successes and failures of live workers), averaged over the
longest publication period of the live workers (5 s at least) and never below
zero.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vermilion._messages import QueueStatus

__all__ = ["SERIES", "QueueSeries", "WorkerReading"]

SERIES = ("t", "enqueued", "handled", "failed", "ready", "locked", "backoff", "lag", "p50", "p99")
"""The series every queue keeps, in the order the page plots them; ``t`` is Unix seconds."""

_HANDLED = ("handler/success", "handler/retry", "handler/error")
_FAILED = ("handler/error",)
_FINISHED = ("handler/success", "handler/error")  # outcomes that take a message out of the live set
_ENQUEUE_WINDOW = 5.0  # seconds the enqueue rate is averaged over, at least


@dataclass(frozen=True, slots=True)
class WorkerReading:
    """What the series need of one live worker's presence record."""

    id: str
    last_seen: float  # Unix seconds: when the worker wrote its counters
    counts: dict[str, int]
    p50: float | None = None  # handling time, ms
    p99: float | None = None

    def total(self, names: Iterable[str]) -> int:
        return sum(self.counts.get(name, 0) for name in names)


@dataclass(slots=True)
class _Rates:
    """One worker's last publication and the rates measured up to it."""

    reading: WorkerReading
    seen_at: float  # the sample time at which this publication was first seen
    period: float = 0.0  # seconds between its last two publications
    handled: float = 0.0
    failed: float = 0.0
    finished: float = 0.0


@dataclass(slots=True)
class QueueSeries:
    """The bounded series of one queue (``capacity`` points each)."""

    capacity: int
    points: dict[str, deque[float | None]] = field(init=False)
    _workers: dict[str, _Rates] = field(init=False, default_factory=dict)
    _flow: deque[tuple[float, int, float]] = field(init=False)  # (t, live messages, finished per s)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity}")
        self.points = {name: deque(maxlen=self.capacity) for name in SERIES}
        self._flow = deque(maxlen=self.capacity)

    def add(self, t: float, status: QueueStatus, workers: Sequence[WorkerReading]) -> None:
        """Append the point of time ``t`` from a ``QueueStatus`` and the live workers."""
        self._track(t, workers)
        current = [self._workers[reading.id] for reading in workers]
        counting = [rates for rates in current if self._counts(rates, t)]
        handled = sum(rates.handled for rates in counting)
        failed = sum(rates.failed for rates in counting)
        live = status.nqueued + status.nlocked + status.nbackoff
        self._flow.append((t, live, sum(rates.finished for rates in counting)))
        window = max([_ENQUEUE_WINDOW, *(rates.period for rates in current)])
        p50s = [reading.p50 for reading in workers if reading.p50 is not None]
        p99s = [reading.p99 for reading in workers if reading.p99 is not None]
        point: dict[str, float | None] = {
            "t": t,
            "enqueued": self._enqueue_rate(window),
            "handled": handled,
            "failed": failed,
            "ready": status.nqueued,
            "locked": status.nlocked,
            "backoff": status.nbackoff,
            "lag": status.lag,
            "p50": max(p50s) if p50s else None,
            "p99": max(p99s) if p99s else None,
        }
        for name in SERIES:
            self.points[name].append(point[name])

    def as_lists(self) -> dict[str, list[float | None]]:
        """Every series as a list, oldest point first (the shape uPlot draws)."""
        return {name: list(values) for name, values in self.points.items()}

    def _track(self, t: float, workers: Sequence[WorkerReading]) -> None:
        """Update each worker's rates from its newest publication; forget the gone ones."""
        present = {reading.id for reading in workers}
        for gone in self._workers.keys() - present:
            del self._workers[gone]
        for reading in workers:
            rates = self._workers.get(reading.id)
            if rates is None:
                self._workers[reading.id] = _Rates(reading, seen_at=t)
            elif reading.last_seen > rates.reading.last_seen:
                self._workers[reading.id] = _measured(rates, reading, t)

    @staticmethod
    def _counts(rates: _Rates, t: float) -> bool:
        """Whether a worker's held rates still count: it published within twice its period."""
        if rates.period <= 0:
            return False
        return t - rates.seen_at <= 2 * rates.period + 1.0

    def _enqueue_rate(self, window: float) -> float | None:
        """Live messages' growth plus finished messages, per second, over the last ``window`` s."""
        t1, live1, _ = self._flow[-1]
        start = len(self._flow) - 1
        while start > 0 and t1 - self._flow[start - 1][0] <= window:
            start -= 1
        t0, live0, _ = self._flow[start]
        if t1 <= t0:
            return None
        finished = [rate for _, _, rate in list(self._flow)[start + 1 :]]
        return max(0.0, (live1 - live0) / (t1 - t0) + sum(finished) / len(finished))


def _measured(previous: _Rates, reading: WorkerReading, t: float) -> _Rates:
    """The rates between a worker's previous publication and this one."""
    period = reading.last_seen - previous.reading.last_seen

    def rate(names: Iterable[str]) -> float:
        # A counter that went down belongs to a restarted worker reusing its id: no rate.
        grown = reading.total(names) - previous.reading.total(names)
        return max(0, grown) / period

    return _Rates(
        reading,
        seen_at=t,
        period=period,
        handled=rate(_HANDLED),
        failed=rate(_FAILED),
        finished=rate(_FINISHED),
    )
