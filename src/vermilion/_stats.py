"""Rolling statistics for the worker: pure code, no I/O, no clock.

``RollingStats.record`` is O(1): it updates running totals and overwrites the
oldest slot of a fixed-size ring. Percentiles are computed on read, over the
samples in the ring (the most recent ``window``), by linear interpolation
between closest ranks (the method numpy and ``statistics.quantiles(...,
method="inclusive")`` call "linear"/"inclusive").
"""

# No `from __future__ import annotations`: see _messages.py.
import math
from dataclasses import asdict, dataclass
from typing import Protocol

__all__ = ["DEFAULT_WINDOW", "RollingStats", "Summary", "Tally", "WorkerObserver", "percentile"]

DEFAULT_WINDOW = 10_000


@dataclass(frozen=True, slots=True)
class Summary:
    """A summary of one measure.

    ``n``, ``min``, ``max``, ``mean`` and ``last`` cover every sample recorded;
    the percentiles cover the most recent samples (the tracker's window).
    """

    n: int
    min: float
    max: float
    mean: float
    last: float
    p50: float
    p90: float
    p95: float
    p99: float

    def as_dict(self) -> dict[str, float]:
        """The nine fields as a plain dict."""
        return asdict(self)


def percentile(ordered: list[float], fraction: float) -> float:
    """The ``fraction`` (0..1) percentile of sorted, non-empty data, interpolated linearly."""
    if not ordered:
        raise ValueError("percentile of no data")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0..1, got {fraction}")
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    weight = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * weight


class RollingStats:
    """Records samples in O(1) and summarizes them on read."""

    __slots__ = ("_count", "_last", "_max", "_min", "_next", "_ring", "_sum", "_window")

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self._window = window
        self._ring: list[float] = []
        self._next = 0  # slot the next sample overwrites once the ring is full
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._last = math.nan

    def record(self, value: float) -> None:
        if len(self._ring) < self._window:
            self._ring.append(value)
        else:
            self._ring[self._next] = value
            self._next = (self._next + 1) % self._window
        self._count += 1
        self._sum += value
        self._last = value
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value

    def __len__(self) -> int:
        return self._count

    def summary(self) -> Summary | None:
        """The summary so far, or ``None`` before the first sample."""
        if not self._count:
            return None
        ordered = sorted(self._ring)
        return Summary(
            n=self._count,
            min=self._min,
            max=self._max,
            mean=self._sum / self._count,
            last=self._last,
            p50=percentile(ordered, 0.50),
            p90=percentile(ordered, 0.90),
            p95=percentile(ordered, 0.95),
            p99=percentile(ordered, 0.99),
        )


class WorkerObserver(Protocol):
    """Sees a worker's events as they happen (``vermilion.prometheus`` attaches one).

    Called in the worker's event loop, on its hot paths: it must be quick and must not raise.
    """

    def count(self, event: str, n: int) -> None:
        """``n`` more of ``event``, a key of ``WorkerStats.counts`` (``"handler/success"``, ...)."""

    def timing(self, measure: str, seconds: float) -> None:
        """One sample of ``"handling"`` (a handler's run) or ``"queueing"`` (enqueue to first hand-out)."""


class Tally:
    """Named event counts (``"handler/success"``, ``"ack/stale"``, …) that the worker's parts share.

    It also hands each event, and each timing, to the observers attached to it:
    with none (the default), that costs one test of an empty tuple.
    """

    __slots__ = ("_counts", "observers")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self.observers: tuple[WorkerObserver, ...] = ()

    def add(self, key: str, n: int = 1) -> None:
        self._counts[key] = self._counts.get(key, 0) + n
        for observer in self.observers:
            observer.count(key, n)

    def attach(self, observer: WorkerObserver) -> None:
        """Hand every event and timing from now on to ``observer`` too."""
        self.observers = (*self.observers, observer)

    def timing(self, measure: str, seconds: float) -> None:
        """Hand a timing to the observers (the worker's own summaries keep theirs)."""
        for observer in self.observers:
            observer.timing(measure, seconds)

    def snapshot(self) -> dict[str, int]:
        """The counts so far, sorted by name."""
        return dict(sorted(self._counts.items()))
