"""Measure: enqueue -> handler-start latency at a steady rate, worker idle first.

This process runs the worker; once it has been idle for a second, it starts a
producer process (this script with ``--role producer``, pinned to the helper
core) that enqueues N messages one at a time at a steady rate, each carrying
its send time (``time.monotonic()``, one clock for every process on Linux).
The handler records ``now - send time`` as it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from _common import emit, helper_command, parser, payload, percentile, run, stop_quietly, wait_for
from _libs import adapter

IDLE_FIRST = 1.0


async def produce(args: argparse.Namespace) -> None:
    lib = adapter(args.lib, args.url)
    await lib.open()
    interval = 1.0 / args.rate
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    for i in range(args.n):
        delay = start + i * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        message = payload(i)
        message["t"] = time.monotonic()
        await lib.enqueue(message)
    await lib.close()


async def measure(args: argparse.Namespace) -> None:
    lib = adapter(args.lib, args.url)
    latencies: list[float] = []
    done = asyncio.Event()

    def on_message(message: dict[str, Any]) -> None:
        latencies.append(time.monotonic() - message["t"])
        if len(latencies) >= args.n:
            done.set()

    await lib.start_worker(on_message)
    await asyncio.sleep(IDLE_FIRST)
    arguments = ["--role", "producer", "--lib", args.lib, "--url", args.url]
    arguments += ["--n", str(args.n), "--rate", str(args.rate)]
    command = helper_command("latency.py", arguments, args.helper_cpu)
    producer = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL)
    try:
        await wait_for(done, args.n / args.rate + 30.0, f"{args.n} handler calls")
    finally:
        code = await producer.wait()
    if code != 0:
        print(f"producer exited with {code}", file=sys.stderr)
    ordered = sorted(latencies)
    emit(
        {
            "latency_p50_ms": percentile(ordered, 50) * 1000,
            "latency_p90_ms": percentile(ordered, 90) * 1000,
            "latency_p99_ms": percentile(ordered, 99) * 1000,
            "latency_max_ms": ordered[-1] * 1000,
            "received": len(latencies),
        }
    )
    await stop_quietly(lib.stop_worker)


async def main(args: argparse.Namespace) -> None:
    if args.role == "producer":
        await produce(args)
    else:
        await measure(args)


if __name__ == "__main__":
    p = parser(__doc__ or "")
    p.add_argument("--n", type=int, default=2_000)
    p.add_argument("--rate", type=float, default=500.0, help="messages per second")
    p.add_argument("--role", choices=("worker", "producer"), default="worker")
    run(main, p.parse_args())
