"""Queues on a Sentinel-watched master (1 master, 2 replicas, 3 Sentinels), through a failover."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from redis.asyncio.sentinel import Sentinel

from tests.cluster.drill import FailoverDrill
from tests.cluster.servers import LocalSentinels, report, wait_until
from tests.reliability.servers import binary
from vermilion import Message, Queue, VermilionError
from vermilion.testing import drain


@pytest.fixture(scope="module")
def sentinels() -> Iterator[LocalSentinels]:
    if binary("redis") is None and binary("valkey") is None:
        pytest.skip("no redis-server or embedded Valkey binary here")
    local = LocalSentinels(service=f"svc-{uuid.uuid4().hex[:6]}")
    local.start()
    try:
        yield local
    finally:
        local.stop()


async def test_a_sentinel_url_and_a_sentinel_managed_client(sentinels: LocalSentinels) -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    async with Queue(name, sentinels.url) as queue:
        assert queue.url.startswith("redis+sentinel://") and queue.url.endswith(f"/{sentinels.service}")
        await queue.enqueue_many(["a", "b", "c"], mids=["a", "b", "c"])
        seen: list[str] = []

        async def handle(message: Message) -> None:
            seen.append(message.mid)

        await drain(queue, handle, timeout=20)
        assert sorted(seen) == ["a", "b", "c"]

    manager = Sentinel([("127.0.0.1", s.port) for s in sentinels.sentinels])
    client = manager.master_for(sentinels.service)
    try:
        async with Queue(name, client) as queue:
            assert (await queue.enqueue("d", mid="d")).ok
            assert (await queue.status()).nqueued == 1
            assert await queue.clear() == 1
    finally:
        await client.aclose()
        for sentinel in manager.sentinels:
            await sentinel.aclose()


@pytest.mark.slow
async def test_producer_and_worker_follow_a_sentinel_failover(sentinels: LocalSentinels) -> None:
    """The master is SIGKILLed mid-drain: the Sentinels promote a replica and the same Queue and
    AsyncWorker reconnect to it by themselves (each new connection asks the Sentinels)."""
    old_master = sentinels.master_port()
    async with Queue(f"test-{uuid.uuid4().hex[:12]}", sentinels.url) as queue:
        drill = FailoverDrill(queue, messages=600)
        figures = await drill.run(sentinels.server(old_master).kill)
        report("sentinel failover", figures)
        assert sentinels.master_port() != old_master
        assert figures["lost"] <= figures["acknowledged"] // 100
        assert figures["recovery_s"] < 20
        await queue.clear()


@pytest.mark.slow
@pytest.mark.parametrize("replicas", [0, 1])
async def test_a_planned_sentinel_failover(sentinels: LocalSentinels, replicas: int) -> None:
    """`SENTINEL FAILOVER` (planned: the master is demoted, not killed) while a producer enqueues.
    The producer goes on against the new master by itself. Writes the old master acknowledged
    after its replica was promoted are lost when it resyncs as a replica, unless ``replicas=1``:
    the promoted replica no longer confirms them, so they are never acknowledged."""
    # After a failover, the Sentinels may still be moving the replicas to the new master: a
    # replica not yet attached would be promoted without the writes.
    await asyncio.to_thread(wait_until, sentinels.settled, 30, "the replicas on the current master")
    old_master = sentinels.master_port()
    errors: Counter[str] = Counter()
    acknowledged: list[str] = []
    async with Queue(f"test-{uuid.uuid4().hex[:12]}", sentinels.url, replicas=replicas) as queue:

        async def produce() -> None:
            index, after_switch = 0, 0
            deadline = time.monotonic() + 40
            while after_switch < 100 and time.monotonic() < deadline:
                switched = sentinels.master_port() != old_master
                try:
                    assert (await queue.enqueue(index, mid=f"m{index}", replica_timeout=0.2)).ok
                    acknowledged.append(f"m{index}")
                    after_switch += switched
                except VermilionError as exc:
                    errors[type(exc).__name__] += 1
                index += 1
                await asyncio.sleep(0.005)
            assert after_switch == 100, "the producer did not go on after the failover"

        producing = asyncio.create_task(produce())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(sentinels.planned_failover)
        await asyncio.wait_for(producing, 60)
        stored = {info.mid for info in await queue.content()}
        lost = set(acknowledged) - stored
        report(
            f"planned sentinel failover, replicas={replicas}",
            {"acknowledged": len(acknowledged), "lost": len(lost), **errors},
        )
        if replicas:
            assert not lost
        assert not errors["ScriptError"], errors
        await queue.clear()
