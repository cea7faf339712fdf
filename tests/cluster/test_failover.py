"""A Redis Cluster master SIGKILLed while a producer enqueues and a worker drains its queue.

The replica takes over (cluster-node-timeout 1 s) and the same Queue and
AsyncWorker objects go on, without a restart. Measured: enqueues acknowledged
but never handled (lost: the master acknowledged before its replica had the
write), messages handled twice (the at-least-once redelivery of leases the
dead master held), and the time until enqueues succeed again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.cluster.conftest import names_on_every_master, slot_of
from tests.cluster.servers import LocalCluster
from tests.helpers import eventually
from vermilion import AsyncWorker, Message, OutcomeUnknownError, Queue, VermilionConnectionError

pytestmark = pytest.mark.slow


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    local = LocalCluster(masters=3, replicas=1, node_timeout_ms=1000)
    local.start()
    try:
        yield local
    finally:
        local.stop()


async def test_a_master_killed_during_a_drain_and_enqueues(
    own_cluster: LocalCluster, record_property: Callable[[str, object], None]
) -> None:
    cluster = own_cluster
    name = names_on_every_master(cluster)[0]
    victim = cluster.master_of(slot_of(name))
    acknowledged: list[str] = []
    unknown: list[str] = []
    handled: Counter[str] = Counter()
    killed_at: list[float] = []
    recovered_at: list[float] = []

    async def handle(message: Message) -> None:
        handled[message.mid] += 1
        await asyncio.sleep(0.002)

    async with Queue(name, cluster.url) as queue:

        async def produce(count: int) -> None:
            for index in range(count):
                mid = f"m{index}"
                while True:
                    try:
                        result = await queue.enqueue(index, mid=mid)
                    except OutcomeUnknownError:
                        unknown.append(mid)  # may or may not be stored: not counted as acknowledged
                        break
                    except VermilionConnectionError:
                        await asyncio.sleep(0.05)  # never sent: safe to send again
                        continue
                    assert result.ok, result
                    acknowledged.append(mid)
                    if killed_at and not recovered_at:
                        recovered_at.append(time.monotonic())
                    break
                await asyncio.sleep(0.003)

        worker = AsyncWorker(queue, handle, concurrency=8, monitor=None, idle_backoff=0.05, lock_timeout=3)
        async with worker:
            producing = asyncio.create_task(produce(1500))
            await eventually(lambda: asyncio.sleep(0, len(handled) > 200), 20, what="a running drain")
            cluster.server(victim).kill()
            killed_at.append(time.monotonic())
            await asyncio.wait_for(producing, 90)

            async def drained() -> bool:
                status = await queue.status()
                return status.nqueued + status.nlocked + status.nbackoff == 0

            await eventually(drained, 60, interval=0.1, what="the queue drained on the new master")
        assert cluster.master_of(slot_of(name)) != victim  # the replica took over
        lost = set(acknowledged) - set(handled)
        duplicated = [mid for mid, times in handled.items() if times > 1]
        recovery = recovered_at[0] - killed_at[0]
        figures = {
            "acknowledged": len(acknowledged),
            "unknown": len(unknown),
            "lost": len(lost),
            "duplicated": len(duplicated),
            "recovery_s": round(recovery, 2),
        }
        record_property("failover", figures)
        # Asynchronous replication: an acknowledged write the replica had not
        # received is lost with the master (replicas=1 is what rules that out).
        assert len(lost) <= len(acknowledged) // 100
        assert recovery < 15
        await queue.clear()
