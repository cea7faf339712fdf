"""T3: a long handler keeps its lease while a second worker polls (plan §5, crashes and leases)."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.reliability.conftest import ServerFactory, WorkerFactory
from tests.reliability.harness import Truth, audit, eventually, locks_key
from tests.reliability.servers import chaos_seconds
from vermilion import Queue


async def test_t3_long_handler_keeps_its_lease(
    fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path
) -> None:
    """T3: lease 1 s, handler 5 s [10 s full], a rival polling: 1 start, attempt 1, lease renewed."""
    server = fault_server("redis")
    name = f"t3-{uuid.uuid4().hex[:8]}"
    handler_seconds = chaos_seconds(5.0, 10.0)
    common = {"url": server.url, "queue": name, "lock_timeout": 1.0, "concurrency": 1}
    worker_process(**common, sleep_min=handler_seconds, sleep_max=handler_seconds)
    client = server.client()
    async with Queue(name, redis=client) as queue:
        await queue.enqueue({"kind": "slow"}, mid="long")
        lease_ends: list[float] = []

        async def started() -> bool:
            return await client.zscore(locks_key(name), "long") is not None

        await eventually(started, 10, "the first worker took the message")
        worker_process(**common, idle_backoff=0.05)  # the rival polls every 50 ms

        async def finished() -> bool:
            score = await client.zscore(locks_key(name), "long")
            if score is not None:
                lease_ends.append(score)
            return await queue.message_status("long") is None

        await eventually(finished, handler_seconds + 10, "the message was handled")
        assert await audit(client, name) == []
    await client.aclose()
    truth = Truth.read(truth_log)
    assert truth.starts["long"] == [(1, truth.starts["long"][0][1])]  # one start, attempt 1
    renewals = len(set(lease_ends))
    assert renewals >= handler_seconds - 1  # renewed every third of a second, sampled every 20 ms
