"""The dashboard's series: rates from worker counters, the derived enqueue rate, the bounds."""

from __future__ import annotations

import pytest

from vermilion import QueueStatus
from vermilion.dashboard._series import SERIES, QueueSeries, WorkerReading


def status(ready: int = 0, locked: int = 0, backoff: int = 0, lag: float = 0.0) -> QueueStatus:
    return QueueStatus(
        nqueued=ready,
        nlocked=locked,
        nbackoff=backoff,
        ntotal=ready + locked + backoff,
        ndone=0,
        nfailed=0,
        lag=lag,
    )


def worker(
    wid: str, last_seen: float, success: int = 0, error: int = 0, retry: int = 0, p50: float | None = None
) -> WorkerReading:
    counts = {"handler/success": success, "handler/error": error, "handler/retry": retry}
    return WorkerReading(wid, last_seen, counts, p50=p50, p99=None if p50 is None else p50 * 2)


def latest(series: QueueSeries, name: str) -> float | None:
    return series.points[name][-1]


def test_a_new_worker_gives_a_baseline_then_rates_between_its_publications() -> None:
    series = QueueSeries(capacity=100)
    series.add(0.0, status(), [worker("w", 0.0, success=1000, error=50)])
    assert latest(series, "handled") == 0 and latest(series, "failed") == 0  # no spike from old counts
    series.add(1.0, status(), [worker("w", 2.0, success=1020, error=60, retry=4)])
    assert latest(series, "handled") == pytest.approx((20 + 10 + 4) / 2)
    assert latest(series, "failed") == pytest.approx(10 / 2)


def test_rates_are_held_until_the_next_publication_then_dropped_when_it_is_overdue() -> None:
    series = QueueSeries(capacity=100)
    series.add(0.0, status(), [worker("w", 0.0)])
    series.add(1.0, status(), [worker("w", 1.0, success=10)])
    series.add(2.0, status(), [worker("w", 1.0, success=10)])  # not published again yet
    assert latest(series, "handled") == pytest.approx(10.0)
    series.add(4.0, status(), [worker("w", 1.0, success=10)])  # 3 s after: twice the period + 1 s
    assert latest(series, "handled") == pytest.approx(10.0)
    series.add(4.5, status(), [worker("w", 1.0, success=10)])  # overdue: the worker likely died
    assert latest(series, "handled") == 0


def test_rates_sum_over_workers_and_a_gone_worker_makes_no_spike() -> None:
    series = QueueSeries(capacity=100)
    series.add(0.0, status(), [worker("a", 0.0), worker("b", 0.0, success=500)])
    series.add(1.0, status(), [worker("a", 1.0, success=3), worker("b", 1.0, success=505)])
    assert latest(series, "handled") == pytest.approx(8.0)
    series.add(2.0, status(), [worker("a", 2.0, success=6)])
    assert latest(series, "handled") == pytest.approx(3.0)
    series.add(3.0, status(), [worker("a", 3.0, success=9), worker("b", 3.0, success=900)])
    assert latest(series, "handled") == pytest.approx(3.0)  # b is back: a baseline again


def test_a_counter_that_goes_down_counts_as_no_progress() -> None:
    series = QueueSeries(capacity=100)
    series.add(0.0, status(), [worker("w", 0.0, success=100)])
    series.add(1.0, status(), [worker("w", 1.0, success=5)])
    assert latest(series, "handled") == 0


def test_enqueued_is_the_growth_of_live_messages_plus_the_finished_ones() -> None:
    series = QueueSeries(capacity=100)
    series.add(0.0, status(ready=10), [worker("w", 0.0)])
    assert latest(series, "enqueued") is None  # one point: no rate yet
    # 1 s later: 4 more live messages, and the worker finished 6 (5 successes, 1 failure; retries stay live).
    series.add(1.0, status(ready=12, locked=1, backoff=1), [worker("w", 1.0, success=5, error=1, retry=3)])
    assert latest(series, "enqueued") == pytest.approx(4 + 6)


def test_enqueued_is_averaged_over_the_workers_period_and_never_negative() -> None:
    series = QueueSeries(capacity=100)
    series.add(0.0, status(ready=100), [])
    for t in range(1, 8):
        series.add(float(t), status(ready=100 - 10 * t), [])  # draining with no visible worker
    assert latest(series, "enqueued") == 0
    assert latest(series, "ready") == 30


def test_handling_times_are_the_highest_among_live_workers() -> None:
    series = QueueSeries(capacity=100)
    series.add(0.0, status(), [worker("a", 0.0, p50=3.0), worker("b", 0.0, p50=7.0), worker("c", 0.0)])
    assert latest(series, "p50") == 7.0 and latest(series, "p99") == 14.0
    series.add(1.0, status(), [worker("c", 1.0)])
    assert latest(series, "p50") is None and latest(series, "p99") is None


def test_series_keep_the_newest_points_up_to_their_capacity() -> None:
    series = QueueSeries(capacity=3)
    for t in range(5):
        series.add(float(t), status(ready=t, lag=t / 10), [])
    lists = series.as_lists()
    assert set(lists) == set(SERIES)
    assert lists["t"] == [2.0, 3.0, 4.0]
    assert lists["ready"] == [2, 3, 4]
    assert lists["lag"] == [0.2, 0.3, 0.4]
    assert all(len(values) == 3 for values in lists.values())


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        QueueSeries(capacity=0)
