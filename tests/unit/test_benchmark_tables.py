"""The benchmark runner's table helpers (benchmarks/run.py, standard library only)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

RUN_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark_run", RUN_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def stat(run: ModuleType, median: float) -> object:
    return run.Stat(median, median, median, 3)


@pytest.mark.parametrize(
    ("ours", "other", "digits", "shown"),
    [
        (11_311.0, 7_962.0, 0, "1.42\u00d7"),
        (0.24, 0.31, 2, "0.77\u00d7"),
        (58_201.0, 1.0, 0, "58,201\u00d7"),
        # A denominator that the table itself shows as zero gives no ratio.
        (0.29, -0.00390625, 2, "\u2014"),
        (0.29, 0.004, 2, "\u2014"),
        (0.02, 0.0, 2, "\u2014"),
        (5.0, 0.4, 0, "\u2014"),
    ],
)
def test_ratio(run: ModuleType, ours: float, other: float, digits: int, shown: str) -> None:
    assert run.ratio(stat(run, ours), stat(run, other), digits) == shown


def test_ratio_of_a_missing_measure(run: ModuleType) -> None:
    assert run.ratio(None, stat(run, 1.0), 2) == "\u2014"
    assert run.ratio(stat(run, 1.0), None, 2) == "\u2014"


def test_ratio_just_above_the_shown_resolution(run: ModuleType) -> None:
    assert run.ratio(stat(run, 0.29), stat(run, 0.006), 2) == "48.33\u00d7"
