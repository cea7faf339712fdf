"""Queues on a Sentinel-watched master (1 master, 2 replicas, 3 Sentinels), through a failover."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from redis.asyncio.sentinel import Sentinel

from tests.cluster.drill import FailoverDrill
from tests.cluster.servers import LocalSentinels, report
from tests.reliability.servers import binary
from vermilion import Message, Queue
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


@pytest.mark.parametrize(
    "url", ["redis+sentinel://127.0.0.1:1", "redis+sentinel://127.0.0.1:1/a/b", "redis+sentinel://x/svc"]
)
def test_a_malformed_sentinel_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="redis\\+sentinel://"):
        Queue("q", url)


@pytest.mark.slow
async def test_producer_and_worker_follow_a_sentinel_failover(sentinels: LocalSentinels) -> None:
    """The master is SIGKILLed mid-drain: the Sentinels promote a replica and the same Queue and
    AsyncWorker reconnect to it by themselves (each new connection asks the Sentinels)."""
    old_master = sentinels.master_port()
    async with Queue(f"test-{uuid.uuid4().hex[:12]}", sentinels.url) as queue:
        drill = FailoverDrill(queue, messages=1000)
        figures = await drill.run(sentinels.server(old_master).kill)
        report("sentinel failover", figures)
        assert sentinels.master_port() != old_master
        assert figures["lost"] <= figures["acknowledged"] // 100
        assert figures["recovery_s"] < 20
        await queue.clear()
