"""Measure: Redis commands per second sent by an idle worker (empty queue).

MONITOR-free. ``INFO commandstats`` counts every command Redis ran, including
those that Lua scripts and functions run inside (``redis.call``); only the
commands a client sends count here. To separate them, the slow log is set to
log every command (``slowlog-log-slower-than 0``) during the window: Redis
logs the commands run inside scripts with the client address ``?:0``. So:

    client commands = commandstats delta - commands logged from inside scripts
                      - the meter's own first INFO

(Blocking commands that time out never reach the slow log, but they are
client commands and commandstats counts them.) The window starts after a
warm-up, so that start-up commands are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

import redis.asyncio as aioredis
from _common import emit, parser, run, stop_quietly
from _libs import adapter

METER = "bench-meter"


def _calls(info: dict[str, Any]) -> Counter[str]:
    return Counter({name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def main(args: argparse.Namespace) -> None:
    meter = aioredis.Redis.from_url(args.url, client_name=METER)
    saved = await meter.config_get("slowlog-log-slower-than")
    await meter.config_set("slowlog-max-len", 1_000_000)
    await meter.slowlog_reset()
    await meter.config_set("slowlog-log-slower-than", 0)

    lib = adapter(args.lib, args.url)
    await lib.start_worker(lambda payload: None)
    await asyncio.sleep(args.warmup)

    before = _calls(await meter.info("commandstats"))
    started = time.perf_counter()
    await asyncio.sleep(args.window)
    after = _calls(await meter.info("commandstats"))
    window = time.perf_counter() - started
    await meter.config_set("slowlog-log-slower-than", str(saved["slowlog-log-slower-than"]))
    entries = await meter.execute_command("SLOWLOG", "GET", "-1")  # type: ignore[no-untyped-call]
    await stop_quietly(lib.stop_worker)

    # The meter's two INFOs bound the window in the slow log.
    marks = [
        int(e[0])
        for e in entries
        if _text(e[5]) == METER and [_text(a).lower() for a in e[3][:2]] == ["info", "commandstats"]
    ]
    if len(marks) < 2:
        raise RuntimeError("the slow log lost the window's bounds; raise slowlog-max-len")
    first, last = sorted(marks)[-2:]
    inner = Counter(
        _text(e[3][0]).lower() for e in entries if first < int(e[0]) < last and _text(e[4]).startswith("?")
    )
    delta = after - before
    delta["info"] -= 1  # the meter's first INFO
    total_client = sum(delta.values()) - sum(inner.values())
    client = delta - inner  # by name: best effort (subcommands are named differently)
    emit(
        {
            "idle_cmds_per_s": total_client / window,
            "idle_all_cmds_per_s": sum(delta.values()) / window,
            "idle_window_s": window,
            "idle_client_commands": dict(client.most_common()),
            "idle_script_commands": dict(inner.most_common()),
        }
    )


if __name__ == "__main__":
    p = parser(__doc__ or "")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds idle before the window")
    p.add_argument("--window", type=float, default=10.0)
    run(main, p.parse_args())
