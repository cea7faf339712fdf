"""A Redis Cluster master SIGKILLed while a producer enqueues and a worker drains its queue.

The replica takes over (cluster-node-timeout 1 s) and the same Queue and
AsyncWorker go on without a restart (see :mod:`tests.cluster.drill`). With
``replicas=1`` no acknowledged enqueue is lost; enqueues made while the new
master has no replica yet answer ReplicationError (unconfirmed, not lost).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode

from tests.cluster.conftest import names_on_every_master, slot_of
from tests.cluster.drill import FailoverDrill
from tests.cluster.servers import LocalCluster, report, wait_until
from tests.helpers import eventually
from vermilion import OutcomeUnknownError, Queue, VermilionConnectionError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def damaged_cluster() -> Iterator[LocalCluster]:
    local = LocalCluster(masters=3, replicas=1, node_timeout_ms=1000)
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def own_cluster(damaged_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The module's cluster, mended after each test: a killed node is started again (it rejoins
    as a replica of the master that replaced it) and every master has its replica back."""
    yield damaged_cluster
    for server in damaged_cluster.servers:
        if server.process is None:
            server.start()
    wait_until(damaged_cluster.healthy, 60, "the cluster mended")


@pytest.mark.parametrize("replicas", [0, 1])
async def test_a_master_killed_during_a_drain_and_enqueues(own_cluster: LocalCluster, replicas: int) -> None:
    cluster = own_cluster
    name = names_on_every_master(cluster)[0]
    victim = cluster.master_of(slot_of(name))
    async with Queue(name, cluster.url, replicas=replicas) as queue:
        drill = FailoverDrill(queue, messages=800)
        # With replicas=1 the new master needs a replica again: the killed
        # node comes back as one, as an operator would bring it back.
        server = cluster.server(victim)
        figures = await drill.run(server.kill, server.start if replicas else None)
        report(f"cluster failover, replicas={replicas}", figures)
        assert cluster.master_of(slot_of(name)) != victim  # the replica took over
        if replicas:
            # Every acknowledged enqueue was on the replica that took over.
            assert figures["lost"] == 0
        else:
            # Asynchronous replication: an acknowledged write the replica had
            # not received is lost with the master.
            assert figures["lost"] <= figures["acknowledged"] // 100
        assert figures["recovery_s"] < 15
        await queue.clear()


async def test_an_enqueue_lost_in_a_failover_is_never_sent_to_the_new_master(
    own_cluster: LocalCluster,
) -> None:
    """The master stops (SIGSTOP) with an enqueue sent to it; the call's deadline passes and the
    replica takes over. The enqueue raises OutcomeUnknownError and is not re-sent to the new
    master: the message is not there, and the same mid enqueued again is added, not refused."""
    cluster = own_cluster
    name = names_on_every_master(cluster)[0]
    victim = cluster.master_of(slot_of(name))
    client = aioredis.RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", cluster.master_ports()[1])], socket_timeout=2
    )
    try:
        async with Queue(name, client) as queue:
            assert (await queue.enqueue("before", mid="before")).ok
            cluster.server(victim).pause()
            try:
                with pytest.raises(OutcomeUnknownError):
                    await queue.enqueue("lost", mid="lost")
                await asyncio.to_thread(
                    wait_until, lambda: cluster.master_of(slot_of(name)) != victim, 30, "a failover"
                )

                async def answers() -> bool:
                    try:
                        return await queue.message_status("before") is not None
                    except VermilionConnectionError:
                        return False

                await eventually(answers, 30, interval=0.2, what="the new master answering")
                assert await queue.message_status("lost") is None
                assert (await queue.enqueue("again", mid="lost")).action == "added"
            finally:
                cluster.server(victim).resume()
            await queue.clear()
    finally:
        await client.aclose()
