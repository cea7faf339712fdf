"""Helpers shared by the measure scripts: arguments, payloads, clocks, output.

Every measure script is run by ``run.py`` in a fresh process, with one
library, against a Redis that ``run.py`` flushed just before; it prints one
JSON object (its measurements) as the last line of its standard output.
Only the standard library, redis-py and msgpack are imported here, so that the
scripts also run in a benchmark environment pinned to an older redis-py (arq).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# vermilion with metrics, or metrics and tracing (see _libs.py for the SDK configuration).
VARIANTS = ("vermilion-metrics", "vermilion-observed", "vermilion-observed-10pct")
LIBRARIES = ("vermilion", "arq", "saq", "taskiq", "streaq", "bullmq", "bare-list", *VARIANTS)
CEILING = "bare-list"
PEERS = ("arq", "saq", "taskiq", "streaq", "bullmq")
CONCURRENCY = 50
BATCH = 100
QUEUE = "bench"
# Lowest poll interval given to libraries that poll rather than block (arq):
# 1 ms; 0 would make them spin.
POLL_INTERVAL = 0.001
_STRING = "abcdefghijklmnopqrst"  # 20 characters


def payload(i: int) -> dict[str, Any]:
    """The benchmark message: a dict with an int and a 20-character string."""
    return {"i": i, "s": _STRING}


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every measure script takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--lib", required=True, choices=LIBRARIES)
    p.add_argument("--url", default="redis://127.0.0.1:6390/0", help="a Redis only this benchmark uses")
    p.add_argument("--helper-cpu", type=int, default=None, help="core for helper processes (fill, producer)")
    return p


_emitted = False


def emit(result: dict[str, Any]) -> None:
    """Print the measurements as the last line of stdout, for run.py."""
    global _emitted
    print(json.dumps(result), flush=True)
    _emitted = True


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, all threads."""
    return time.process_time()


def settle() -> None:
    """Collect garbage before a timed section, so that it starts clean."""
    gc.collect()


def run(main: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> None:
    """Run an async ``main(args)`` and exit at once when it returns.

    Some libraries leave background tasks or threads behind when stopped; the
    measurements are printed by then, so the process exits without waiting.
    """
    code = 0
    try:
        if os.environ.get("BENCH_LOOP") == "uvloop":  # vermilion[uvloop]; see README.md
            import uvloop

            uvloop.run(main(args))
        else:
            asyncio.run(main(args))
    except BaseException as exc:  # report; exit non-zero unless the measurements were printed
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        code = 0 if _emitted else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def helper_command(script: str, arguments: Sequence[str], cpu: int | None) -> list[str]:
    """The command for a helper process (same interpreter), pinned to ``cpu`` if taskset exists."""
    command = [sys.executable, str(HERE / script), *arguments]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    return command


def fill(args: argparse.Namespace, n: int) -> float:
    """Enqueue ``n`` messages from a separate process (fill.py); returns its seconds."""
    started = time.perf_counter()
    subprocess.run(
        helper_command("fill.py", ["--lib", args.lib, "--url", args.url, "--n", str(n)], args.helper_cpu),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


async def wait_for(event: asyncio.Event, timeout: float, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"{what} did not happen within {timeout:.0f} s") from None


async def stop_quietly(stop: Callable[[], Any], timeout: float = 10.0) -> None:
    """Stop a worker, giving up after ``timeout``: the measurements are already taken."""
    with contextlib.suppress(Exception, asyncio.TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(stop(), timeout)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]
