"""Measure: enqueue one message at a time (one ``await`` per message)."""

from __future__ import annotations

import argparse
import time

from _common import cpu_seconds, emit, parser, payload, run, settle
from _libs import adapter

WARMUP = 200


async def main(args: argparse.Namespace) -> None:
    lib = adapter(args.lib, args.url)
    await lib.open()
    for i in range(WARMUP):  # connections, script loading
        await lib.enqueue(payload(-i - 1))
    messages = [payload(i) for i in range(args.n)]
    settle()
    cpu = cpu_seconds()
    started = time.perf_counter()
    for message in messages:
        await lib.enqueue(message)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    await lib.close()
    emit({"enqueue_rate": args.n / elapsed, "enqueue_cpu_us": cpu / args.n * 1e6, "seconds": elapsed})


if __name__ == "__main__":
    p = parser(__doc__ or "")
    p.add_argument("--n", type=int, default=20_000)
    run(main, p.parse_args())
