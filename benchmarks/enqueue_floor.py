"""Measure: the floor under a de-duplicating enqueue's Redis CPU, against a bare ``LPUSH``.

Issue #14 asks for a single enqueue at most 1.3x an ``LPUSH``'s Redis CPU. This
script shows where the floor is for any script that de-duplicates: each row is a
script doing a little more of what vermilion's enqueue does on its usual path
(a new mid, ready now, no bound), called one ``await`` at a time as a producer
calls ``enqueue`` (the footprint's pattern):

* ``empty``: an ``EVALSHA`` that runs no command (four keys, mid and payload);
* ``dedup+push``: ``SADD`` of the mid, then ``RPUSH`` of the payload: the least a
  queue that de-duplicates can do;
* ``+server time``: ``TIME``, and the entry packed with the enqueue time (lag
  and queueing time are measured by the server's clock);
* ``+bound check``: ``HGET`` of the queue's ``max_size`` first;
* ``enqueue.lua``: vermilion's enqueue script, its eleven keys.

The server's CPU (``INFO cpu``, user + system) over ``--n`` calls of each, in
turn within each of ``--reps`` repetitions, on a flushed database; medians,
and each one's ratio to the ``LPUSH``. Pin the server and this process to
different cores (``taskset``) as ``run.py`` does; the results of 2026-12-08
are in ``results-enqueue-floor-2026-12-08.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

import msgpack
import redis
import redis.asyncio as aioredis
from _common import payload

from vermilion._keys import QueueKeys
from vermilion._scripts import SCRIPTS

_TIMED_ENTRY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return {'already-queued'} end
redis.call('RPUSH', KEYS[2], '\\1' .. string.char(#ARGV[1]) .. ARGV[1] .. struct.pack('>I6', now) .. ARGV[2])
return {'added'}
"""

TIMES = "\u00d7"  # multiplication sign, for ratios
# KEYS: mids, ready, notify, meta (vermilion's names); ARGV: mid, payload.
STEPS = {
    "empty": "return {'added'}",
    "dedup+push": """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return {'already-queued'} end
redis.call('RPUSH', KEYS[2], ARGV[2])
return {'added'}
""",
    "+server time": _TIMED_ENTRY,
    "+bound check": "if redis.call('HGET', KEYS[4], 'max_size') then return {'full'} end\n" + _TIMED_ENTRY,
}


def server_cpu(meter: redis.Redis) -> float:
    info = meter.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def main(args: argparse.Namespace) -> None:
    meter = redis.Redis.from_url(args.url)
    client = aioredis.Redis.from_url(args.url)
    keys = QueueKeys.for_queue("floor").keys
    few = (keys[0], keys[1], keys[9], keys[10])  # mids, ready, notify, meta
    shas = {name: meter.script_load(body) for name, body in STEPS.items()}
    shas["enqueue.lua"] = meter.script_load(SCRIPTS["enqueue"].source)
    rows = ["LPUSH", *shas]
    cpu: dict[str, list[float]] = {row: [] for row in rows}
    sent = 0
    for _ in range(args.reps):
        meter.flushdb()
        for row in rows:
            before = server_cpu(meter)
            for i in range(args.n):
                sent += 1
                body, mid = msgpack.packb(payload(i)), b"%012x" % sent
                if row == "LPUSH":
                    await client.execute_command("LPUSH", "bare", body)
                elif row == "enqueue.lua":
                    await client.execute_command("EVALSHA", shas[row], len(keys), *keys, mid, body)
                else:
                    await client.execute_command("EVALSHA", shas[row], len(few), *few, mid, body)
            cpu[row].append((server_cpu(meter) - before) / args.n * 1e6)
    await client.aclose()
    base = statistics.median(cpu["LPUSH"])
    print(f"{'call':14} {'Redis CPU':>10} {'÷ LPUSH':>8}  repetitions (µs)")
    for row in rows:
        median = statistics.median(cpu[row])
        print(f"{row:14} {median:8.2f} µs {median / base:7.2f}{TIMES}  {[round(x, 1) for x in cpu[row]]}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="redis://127.0.0.1:6390/0", help="a Redis only this benchmark uses")
    p.add_argument("--n", type=int, default=5_000, help="calls of each kind per repetition")
    p.add_argument("--reps", type=int, default=7)
    asyncio.run(main(p.parse_args()))
