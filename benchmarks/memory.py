"""Measure: the worker's resident memory (RSS) as it handles more and more messages.

This process starts the worker, then a separate process (fill.py, on the
helper core) enqueues the largest checkpoint's worth of messages with the
library's batch operation while the worker drains them. The worker reads its
own RSS (``/proc/self/statm``) when the handler has been called 20,000 times,
and at each further checkpoint. A worker that keeps nothing per message stays
flat.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _common import emit, helper_command, parser, rss_bytes, run, settle, stop_quietly, wait_for
from _libs import adapter


async def main(args: argparse.Namespace) -> None:
    checkpoints = sorted({int(n) for n in args.checkpoints.split(",")})
    total = checkpoints[-1]
    lib = adapter(args.lib, args.url)
    rss: dict[int, int] = {}
    done = asyncio.Event()
    count = 0

    def on_message(payload: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        if count in checkpoints:
            rss[count] = rss_bytes()
            if count == total:
                done.set()

    settle()
    before = rss_bytes()
    started = time.perf_counter()
    await lib.start_worker(on_message)
    arguments = ["--lib", args.lib, "--url", args.url, "--n", str(total)]
    fill = helper_command("fill.py", arguments, args.helper_cpu)
    feeder = await asyncio.create_subprocess_exec(*fill, stdout=asyncio.subprocess.DEVNULL)
    try:
        await wait_for(done, args.timeout, f"{total} handler calls")
    finally:
        await feeder.wait()
    result: dict[str, Any] = {"rss_start_mb": before / 2**20, "seconds": time.perf_counter() - started}
    for n in checkpoints:
        result[f"rss_{n}_mb"] = rss[n] / 2**20
    if len(checkpoints) > 1:
        result["rss_growth_mb"] = (rss[total] - rss[checkpoints[0]]) / 2**20
    emit(result)
    await stop_quietly(lib.stop_worker)


if __name__ == "__main__":
    p = parser(__doc__ or "")
    p.add_argument("--checkpoints", default="20000,50000", help="handler-call counts to read RSS at")
    p.add_argument("--timeout", type=float, default=3600.0)
    run(main, p.parse_args())
