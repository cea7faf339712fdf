"""`replicas=K` on a cluster whose masters have one replica each: WAIT goes to the queue's master."""

from __future__ import annotations

import pytest

from tests.cluster.conftest import names_on_every_master
from tests.cluster.servers import LocalCluster
from vermilion import Message, Queue, ReplicationError
from vermilion.testing import drain


async def test_one_replica_confirms_and_two_are_more_than_there_are(
    cluster: LocalCluster, cluster_queues: list[Queue]
) -> None:
    for queue in cluster_queues:  # one per master: each waits on its own master's replica
        assert (await queue.enqueue("x", mid="a", replicas=1, replica_timeout=2)).ok
        results = await queue.enqueue_many(["y", "z"], mids=["b", "c"], replicas=1)
        assert all(result.ok for result in results)
        with pytest.raises(ReplicationError, match="only 1 of the 2 replicas") as raised:
            await queue.enqueue("w", mid="d", replicas=2, replica_timeout=0.1)
        assert raised.value.acknowledged == 1 and raised.value.results[0].ok


async def test_a_replicated_queue_drains_with_replicated_acks(cluster: LocalCluster) -> None:
    async with Queue(names_on_every_master(cluster)[1], cluster.url, replicas=1) as queue:
        await queue.enqueue_many(list(range(20)))
        handled: list[int] = []

        async def handle(message: Message) -> None:
            handled.append(message.content)

        await drain(queue, handle, timeout=20)
        assert sorted(handled) == list(range(20))
