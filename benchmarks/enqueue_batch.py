"""Measure: enqueue in batches of 100 (the library's bulk call, or a gather of 100)."""

from __future__ import annotations

import argparse
import time

from _common import BATCH, cpu_seconds, emit, parser, payload, run, settle
from _libs import adapter

WARMUP_BATCHES = 2


async def main(args: argparse.Namespace) -> None:
    lib = adapter(args.lib, args.url)
    await lib.open()
    for b in range(WARMUP_BATCHES):  # connections, script loading
        await lib.enqueue_batch([payload(-(b * BATCH + i) - 1) for i in range(BATCH)])
    batches = [[payload(i) for i in range(s, min(args.n, s + BATCH))] for s in range(0, args.n, BATCH)]
    settle()
    cpu = cpu_seconds()
    started = time.perf_counter()
    for batch in batches:
        await lib.enqueue_batch(batch)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    await lib.close()
    emit({"batch_rate": args.n / elapsed, "batch_cpu_us": cpu / args.n * 1e6, "seconds": elapsed})


if __name__ == "__main__":
    p = parser(__doc__ or "")
    p.add_argument("--n", type=int, default=20_000)
    run(main, p.parse_args())
