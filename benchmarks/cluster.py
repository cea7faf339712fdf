"""Measure: one queue sharded over a 3-master Redis Cluster against one queue on one server.

Starts its own servers on free loopback ports (a 3-master cluster without
replicas, and one plain server, from redis-server or the embedded Valkey's
binary) and, in alternating rounds, on each setup:

* enqueue: N messages, one ``enqueue`` per message from 64 concurrent tasks;
* drain: the same N messages with one worker (concurrency 64, no-op handler).

For each phase it reads ``INFO cpu`` of every master before and after: the
Redis CPU seconds per node, each node's share of them, and the rate per
Redis-CPU-second (all nodes) and per busiest-node-CPU-second (what bounds a
cluster whose nodes have a core each). The client is one Python process: on a
small machine it, not Redis, bounds the absolute rates, which therefore do not
scale here; the per-node split and the rates per Redis-CPU-second do.

    python benchmarks/cluster.py [--n 20000] [--rounds 3] [--shards 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from tests.cluster.servers import LocalCluster
from tests.reliability.servers import FaultServer, binary

from vermilion import AsyncWorker, Message, Queue

_PRODUCERS = 64
_CONCURRENCY = 64


def redis_cpu(ports: list[int]) -> dict[int, float]:
    """used_cpu_sys + used_cpu_user of each server, in seconds."""
    seconds = {}
    for port in ports:
        info = redis.Redis(port=port).info("cpu")
        seconds[port] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return seconds


async def enqueue_all(queue: Queue, n: int) -> None:
    counter = iter(range(n))

    async def producer() -> None:
        for i in counter:
            await queue.enqueue({"i": i}, mid=f"m{i}")

    await asyncio.gather(*(producer() for _ in range(_PRODUCERS)))


async def drain_all(queue: Queue, n: int) -> None:
    done = asyncio.Event()
    count = 0

    async def handle(message: Message) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    async with AsyncWorker(queue, handle, concurrency=_CONCURRENCY, monitor=None, presence_interval=None):
        await asyncio.wait_for(done.wait(), 600)


async def phase(queue: Queue, ports: list[int], n: int, what: str) -> dict[str, Any]:
    before = redis_cpu(ports)
    started = time.perf_counter()
    await (enqueue_all(queue, n) if what == "enqueue" else drain_all(queue, n))
    elapsed = time.perf_counter() - started
    after = redis_cpu(ports)
    used = {port: after[port] - before[port] for port in ports}
    total = sum(used.values())
    return {
        "rate": n / elapsed,
        "redis_cpu_s": total,
        "shares": [used[port] / total for port in ports],
        "per_redis_cpu_s": n / total,
        "per_busiest_node_cpu_s": n / max(used.values()),
    }


async def one_round(url: str, ports: list[int], shards: int, n: int) -> dict[str, dict[str, Any]]:
    async with Queue(f"bench-{uuid.uuid4().hex[:8]}", url, shards=shards) as queue:
        enqueued = await phase(queue, ports, n, "enqueue")
        drained = await phase(queue, ports, n, "drain")
        await queue.clear()
    return {"enqueue": enqueued, "drain": drained}


def median_of(rounds: list[dict[str, dict[str, Any]]], what: str, field: str) -> float:
    return statistics.median(r[what][field] for r in rounds)


def summary(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for what in ("enqueue", "drain"):
        out[what] = {
            field: median_of(rounds, what, field)
            for field in ("rate", "redis_cpu_s", "per_redis_cpu_s", "per_busiest_node_cpu_s")
        }
        nodes = len(rounds[0][what]["shares"])
        out[what]["shares"] = [statistics.median(r[what]["shares"][i] for r in rounds) for i in range(nodes)]
    return out


def table(medians: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| | setup | rate (msg/s) | Redis CPU s | msg per Redis-CPU-s | msg per busiest-node-CPU-s"
        " | each node's share of Redis CPU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for what in ("enqueue", "drain"):
        for label, figures in medians.items():
            f = figures[what]
            shares = " / ".join(f"{share:.0%}" for share in f["shares"])
            lines.append(
                f"| {what} | {label} | {f['rate']:,.0f} | {f['redis_cpu_s']:.2f}"
                f" | {f['per_redis_cpu_s']:,.0f} | {f['per_busiest_node_cpu_s']:,.0f} | {shares} |"
            )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    kind = "redis" if binary("redis") else "valkey"
    single = FaultServer(kind)
    cluster = LocalCluster(masters=3, replicas=0)
    single.start()
    cluster.start()
    try:
        masters = cluster.master_ports()
        setups = {
            "1 queue, 1 server": (single.url, [single.port], 1),
            "1 queue, cluster": (cluster.url, masters, 1),
            f"shards={args.shards}, cluster": (cluster.url, masters, args.shards),
        }
        rounds: dict[str, list[dict[str, dict[str, Any]]]] = {label: [] for label in setups}
        for number in range(args.rounds):
            # Alternating, so that the machine's noise falls on every setup alike.
            for label, (url, ports, shards) in setups.items():
                rounds[label].append(await one_round(url, ports, shards, args.n))
            print(f"round {number + 1}/{args.rounds} done", file=sys.stderr)
        medians = {label: summary(figures) for label, figures in rounds.items()}
        if args.json:
            print(json.dumps({"n": args.n, "server": kind, "medians": medians, "rounds": rounds}, indent=2))
        else:
            print(table(medians))
    finally:
        cluster.stop()
        single.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000, help="messages per phase (default 20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are shown")
    parser.add_argument("--shards", type=int, default=3, help="the sharded queue's shard count (default 3)")
    parser.add_argument("--json", action="store_true", help="every round's figures as JSON")
    asyncio.run(main(parser.parse_args()))
