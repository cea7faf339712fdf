"""The rolling-percentile tracker, checked against exact percentiles of known data."""

from __future__ import annotations

import random
import statistics

import pytest

from vermilion._stats import RollingStats, Tally, percentile


def exact(data: list[float], fraction: float) -> float:
    """The linear ("inclusive") percentile computed by the standard library."""
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    return cuts[round(fraction * 100) - 1]


def test_empty_tracker_has_no_summary() -> None:
    """No samples, no summary."""
    assert RollingStats().summary() is None


def test_single_sample() -> None:
    """One sample is every percentile."""
    stats = RollingStats()
    stats.record(4.0)
    summary = stats.summary()
    assert summary is not None
    assert (summary.n, summary.min, summary.max, summary.mean, summary.last) == (1, 4.0, 4.0, 4.0, 4.0)
    assert summary.p50 == summary.p99 == 4.0


@pytest.mark.parametrize("size", [2, 10, 101, 1000, 9999], ids=lambda n: f"n={n}")
def test_percentiles_match_exact_values(size: int) -> None:
    """Percentiles equal statistics.quantiles(method='inclusive') on the same data."""
    rng = random.Random(size)
    data = [rng.expovariate(1 / 50) for _ in range(size)]
    stats = RollingStats(window=10_000)
    for value in data:
        stats.record(value)
    summary = stats.summary()
    assert summary is not None
    for fraction, got in [(0.5, summary.p50), (0.9, summary.p90), (0.95, summary.p95), (0.99, summary.p99)]:
        assert got == pytest.approx(exact(data, fraction), rel=1e-12)
    assert summary.mean == pytest.approx(statistics.fmean(data))
    assert (summary.min, summary.max, summary.last, summary.n) == (min(data), max(data), data[-1], size)


def test_window_keeps_only_recent_samples_for_percentiles() -> None:
    """Percentiles cover the last `window` samples; n, min, max and mean cover all."""
    stats = RollingStats(window=100)
    for value in range(1000):
        stats.record(float(value))
    summary = stats.summary()
    assert summary is not None
    recent = [float(v) for v in range(900, 1000)]
    assert summary.p50 == pytest.approx(exact(recent, 0.5))
    assert summary.p99 == pytest.approx(exact(recent, 0.99))
    assert (summary.n, summary.min, summary.max) == (1000, 0.0, 999.0)
    assert summary.mean == pytest.approx(499.5)


def test_known_small_data() -> None:
    """Hand-checked values: 1..10 by linear interpolation."""
    ordered = [float(v) for v in range(1, 11)]
    assert percentile(ordered, 0.5) == 5.5
    assert percentile(ordered, 0.9) == pytest.approx(9.1)
    assert percentile(ordered, 0.0) == 1.0
    assert percentile(ordered, 1.0) == 10.0


def test_bad_arguments() -> None:
    """Empty data, fractions outside 0..1 and empty windows are refused."""
    with pytest.raises(ValueError, match="no data"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="fraction"):
        percentile([1.0], 1.5)
    with pytest.raises(ValueError, match="window"):
        RollingStats(window=0)


def test_as_dict_is_plain_data() -> None:
    """Summary.as_dict() gives the nine fields as plain numbers."""
    stats = RollingStats()
    stats.record(1.0)
    summary = stats.summary()
    assert summary is not None
    assert set(summary.as_dict()) == {"n", "min", "max", "mean", "last", "p50", "p90", "p95", "p99"}


class _Recorder:
    def __init__(self, name: str, log: list[tuple[str, str, float]]) -> None:
        self.name, self.log = name, log

    def count(self, event: str, n: int) -> None:
        self.log.append((self.name, event, n))

    def timing(self, measure: str, seconds: float) -> None:
        self.log.append((self.name, measure, seconds))


def test_tally_hands_events_to_each_attached_observer_in_turn() -> None:
    tally = Tally()
    log: list[tuple[str, str, float]] = []
    tally.add("handler/success")  # before any observer: counted, seen by none
    tally.attach(_Recorder("a", log))
    tally.add("ack/stale", 2)
    tally.attach(_Recorder("b", log))
    tally.timing("handling", 0.5)
    assert log == [("a", "ack/stale", 2), ("a", "handling", 0.5), ("b", "handling", 0.5)]
    assert tally.snapshot() == {"ack/stale": 2, "handler/success": 1}
