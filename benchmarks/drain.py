"""Measure: drain N pre-enqueued messages with one worker (concurrency 50, no-op handler).

The queue is filled by a separate process first; this process then starts the
worker and counts handler calls in-process. The rate runs from just before
the worker starts to the last handler call; so does the CPU time, which is
this process's (all threads), divided by N.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _common import cpu_seconds, emit, fill, parser, rss_bytes, run, settle, stop_quietly, wait_for
from _libs import adapter


async def main(args: argparse.Namespace) -> None:
    fill_seconds = 0.0 if args.no_fill else fill(args, args.n)
    lib = adapter(args.lib, args.url)
    done = asyncio.Event()
    count = 0
    last = 0.0
    last_cpu = 0.0

    def on_message(payload: dict[str, Any]) -> None:
        nonlocal count, last, last_cpu
        count += 1
        if count == args.n:
            last = time.perf_counter()
            last_cpu = cpu_seconds()
            done.set()

    settle()
    cpu = cpu_seconds()
    started = time.perf_counter()
    await lib.start_worker(on_message)
    await wait_for(done, args.timeout, f"{args.n} handler calls")
    elapsed = last - started
    result = {
        "drain_rate": args.n / elapsed,
        "drain_cpu_us": (last_cpu - cpu) / args.n * 1e6,
        "seconds": elapsed,
        "fill_seconds": fill_seconds,
        "rss_mb": rss_bytes() / 2**20,
    }
    await asyncio.sleep(0.2)  # would a message be handled twice?
    result["extra_calls"] = count - args.n
    emit(result)
    await stop_quietly(lib.stop_worker)


if __name__ == "__main__":
    p = parser(__doc__ or "")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--no-fill", action="store_true", help="the queue already holds N messages (profiling)")
    run(main, p.parse_args())
