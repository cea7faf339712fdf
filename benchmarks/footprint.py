"""Measure: what the server pays per message, in memory, CPU and commands.

Four phases on one empty database, the server measured through ``INFO``:

0. **idle**: one worker (concurrency 50) started on the empty queue; ``INFO
   commandstats`` calls (every command Redis ran, those inside scripts
   included, the ``EVALSHA`` itself counted too) over its first ``--idle-settle``
   seconds (start-up included) and over the ``--idle-window`` seconds after:
   Redis commands per idle second. Then one message is enqueued and the time
   from the enqueue to the handler's start is taken: is the idle worker still
   woken at once? The bare list's idle consumer here is a ``BRPOP`` loop with
   a timeout (``--brpop-timeout``), so that it too wakes up now and then;
1. **memory**: N messages enqueued in batches of 100 (the library's bulk call);
   ``used_memory`` after minus before, over N: bytes of Redis memory per queued
   message, payload and bookkeeping together;
2. **handled**: one worker (concurrency 50, no-op handler) drains those N;
   the server's CPU (``used_cpu_user + used_cpu_sys``) from the worker's start
   to a short settle after the last handler call (so that the last acks are in),
   over N: Redis CPU per handled message;
3. **enqueue**: M more messages enqueued one ``await`` at a time; the server's
   CPU over M, and ``INFO commandstats`` calls over M (every command Redis ran,
   those inside scripts included): Redis CPU and commands per single enqueue.

An ``INFO`` reply does not count the ``INFO`` itself (Redis counts a call once
it has run), so each difference of two readings includes the first of them,
one ``INFO``, and nothing else of the meter's: that one is subtracted.

The server's CPU includes reading and writing the sockets, as a user's bill
does. This process's own CPU is measured by the other scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

import redis.asyncio as aioredis
from _common import BATCH, emit, parser, payload, run, stop_quietly, wait_for
from _libs import Adapter, BareList, adapter

WARMUP = 200
# After the last handler call, the last outcomes still travel to Redis.
SETTLE_SECONDS = 0.3


async def _used_memory(meter: aioredis.Redis) -> int:
    return int((await meter.info("memory"))["used_memory"])


async def _server_cpu(meter: aioredis.Redis) -> float:
    info = await meter.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _commands_run(meter: aioredis.Redis) -> int:
    return sum((await _calls(meter)).values())


async def _calls(meter: aioredis.Redis) -> Counter[str]:
    info = await meter.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()})


def _between(before: Counter[str], after: Counter[str]) -> Counter[str]:
    """Commands Redis ran between two readings, less the meter's first INFO."""
    delta = after - before
    delta["info"] -= 1
    return +delta  # drops a zero count


async def _idle(args: argparse.Namespace, lib: Adapter, meter: aioredis.Redis) -> dict[str, Any]:
    """Phase 0: commands per second of an idle worker, then the wake-up by one enqueue."""
    woken = asyncio.Event()
    woken_at = 0.0

    def on_message(_: dict[str, Any]) -> None:
        nonlocal woken_at
        if not woken.is_set():
            woken_at = time.perf_counter()
            woken.set()

    if isinstance(lib, BareList):
        lib.block_timeout = args.brpop_timeout
    start = await _calls(meter)
    started = time.perf_counter()
    await lib.start_worker(on_message)
    await asyncio.sleep(args.idle_settle)
    settled = await _calls(meter)
    settled_at = time.perf_counter()
    await asyncio.sleep(args.idle_window)
    end = await _calls(meter)
    window = time.perf_counter() - settled_at
    first = settled_at - started

    sent = time.perf_counter()
    await lib.enqueue(payload(-WARMUP - 1))
    replied = time.perf_counter()
    await wait_for(woken, args.timeout, "the handler call after the idle window")
    await stop_quietly(lib.stop_worker)
    if isinstance(lib, BareList):
        lib.block_timeout = 0.0
    start_commands, idle_commands = _between(start, settled), _between(settled, end)
    return {
        "redis_idle_cmds_per_s": sum(idle_commands.values()) / window,
        "redis_idle_start_cmds_per_s": sum(start_commands.values()) / first,
        "idle_wake_ms": (woken_at - sent) * 1e3,
        "idle_wake_enqueue_ms": (replied - sent) * 1e3,
        "idle_window_s": window,
        "idle_start_s": first,
        "idle_commands": dict(idle_commands.most_common()),
        "idle_start_commands": dict(start_commands.most_common()),
    }


async def main(args: argparse.Namespace) -> None:
    meter = aioredis.Redis.from_url(args.url)
    lib = adapter(args.lib, args.url)
    await lib.open()
    idle = await _idle(args, lib, meter)  # first: the queue is empty and new
    for i in range(WARMUP):  # connections, script loading; then drained with the rest
        await lib.enqueue(payload(-i - 1))

    memory_before = await _used_memory(meter)
    messages = [payload(i) for i in range(args.n)]
    for start in range(0, args.n, BATCH):
        await lib.enqueue_batch(messages[start : start + BATCH])
    bytes_per_message = (await _used_memory(meter) - memory_before) / args.n

    handled = 0
    expected = args.n + WARMUP
    done = asyncio.Event()

    def on_message(_: dict[str, Any]) -> None:
        nonlocal handled
        handled += 1
        if handled == expected:
            done.set()

    cpu = await _server_cpu(meter)
    await lib.start_worker(on_message)
    await wait_for(done, args.timeout, f"{expected} handler calls")
    await asyncio.sleep(SETTLE_SECONDS)
    cpu_per_handled = (await _server_cpu(meter) - cpu) / expected
    await stop_quietly(lib.stop_worker)

    singles = [payload(i) for i in range(args.singles)]
    cpu, calls = await _server_cpu(meter), await _commands_run(meter)
    started = time.perf_counter()
    for message in singles:
        await lib.enqueue(message)
    elapsed = time.perf_counter() - started
    cpu_per_enqueue = (await _server_cpu(meter) - cpu) / args.singles
    # The meter's own INFO commandstats is one of the calls counted.
    commands_per_enqueue = (await _commands_run(meter) - calls - 1) / args.singles
    await lib.close()
    await meter.aclose()
    emit(
        {
            "redis_bytes_per_msg": bytes_per_message,
            "redis_cpu_handled_us": cpu_per_handled * 1e6,
            "redis_cpu_enqueue_us": cpu_per_enqueue * 1e6,
            "redis_cmds_per_enqueue": commands_per_enqueue,
            "seconds": elapsed,
            **idle,
        }
    )


if __name__ == "__main__":
    p = parser(__doc__ or "")
    p.add_argument("--n", type=int, default=20_000, help="messages for the memory and handled phases")
    p.add_argument("--singles", type=int, default=5_000, help="single enqueues for the CPU phase")
    p.add_argument("--idle-settle", type=float, default=5.0, help="seconds from the idle worker's start")
    p.add_argument("--idle-window", type=float, default=60.0, help="idle seconds measured after the settle")
    p.add_argument(
        "--brpop-timeout", type=float, default=1.0, help="the bare list's idle BRPOP timeout, seconds"
    )
    p.add_argument("--timeout", type=float, default=600.0)
    run(main, p.parse_args())
