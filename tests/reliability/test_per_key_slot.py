"""T25: a worker killed while it holds a per-key slot (flow control).

The slot must come back when the dead worker's lease lapses: the next message of the key is
handed out then, and never while the slot is held; afterwards the key's count is back to 0
and the queue's keys pass the audit.
"""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from tests.reliability.conftest import ServerFactory, WorkerFactory
from tests.reliability.harness import audit, eventually
from vermilion import Queue

LEASE_S = 1.0


async def test_t25_a_killed_holder_gives_its_key_slot_back_when_its_lease_lapses(
    fault_server: ServerFactory, worker_process: WorkerFactory
) -> None:
    server = fault_server("redis")
    name = f"t25-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(server.url)
    meta = f"vermilion:{{{name}}}:v2:meta"
    async with Queue(name, redis=client) as queue:
        await queue.configure(max_per_key=1)
        for n in (1, 2):
            await queue.enqueue({"kind": "k"}, mid=f"k{n}", key="K")
        common = {"url": server.url, "queue": name, "concurrency": 2}
        holder = await asyncio.to_thread(worker_process, **common, lock_timeout=LEASE_S, die_at="in_handler")
        await eventually(lambda: asyncio.to_thread(lambda: not holder.alive()), 10, "the holder dies")
        assert await client.hget(meta, "held:K") == b"1"  # the dead worker's lease holds the slot
        assert (await queue.status()).nlocked == 1  # k2 waits behind the slot
        await asyncio.to_thread(worker_process, **common, lock_timeout=10.0)

        async def drained() -> bool:
            return (await queue.status()).ntotal == 0

        await eventually(drained, 15, "k1 (reclaimed) and k2 are handled once the lease lapses")
        assert await client.hget(meta, "held:K") is None
        assert await audit(client, name) == []
    await client.aclose()
