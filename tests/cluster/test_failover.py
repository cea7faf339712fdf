"""A Redis Cluster master SIGKILLed while a producer enqueues and a worker drains its queue.

The replica takes over (cluster-node-timeout 1 s) and the same Queue and
AsyncWorker go on without a restart (see :mod:`tests.cluster.drill`). With
``replicas=1`` no acknowledged enqueue is lost; enqueues made while the new
master has no replica yet answer ReplicationError (unconfirmed, not lost).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.conftest import names_on_every_master, slot_of
from tests.cluster.drill import FailoverDrill
from tests.cluster.servers import LocalCluster, report
from vermilion import Queue

pytestmark = pytest.mark.slow


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    local = LocalCluster(masters=3, replicas=1, node_timeout_ms=1000)
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.mark.parametrize("replicas", [0, 1])
async def test_a_master_killed_during_a_drain_and_enqueues(own_cluster: LocalCluster, replicas: int) -> None:
    cluster = own_cluster
    name = names_on_every_master(cluster)[0]
    victim = cluster.master_of(slot_of(name))
    async with Queue(name, cluster.url, replicas=replicas) as queue:
        drill = FailoverDrill(queue, messages=1500)
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
