"""Fixtures of the scale-out tests: a real Redis Cluster (3 masters, 3 replicas) for the session.

The cluster runs on free loopback ports (each with its bus port free too),
started from redis-server or, where there is none, the embedded Valkey's
binary; it is stopped at the end by the handles that started it. A test that
damages a cluster (kills a master) starts one of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.crc import key_slot

from tests.cluster.servers import LocalCluster
from tests.reliability.servers import binary
from vermilion import Queue


def _needs_a_server() -> None:
    if binary("redis") is None and binary("valkey") is None:
        pytest.skip("no redis-server or embedded Valkey binary here")


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    _needs_a_server()
    local = LocalCluster(masters=3, replicas=1)
    local.start()
    try:
        yield local
    finally:
        local.stop()


def slot_of(name: str) -> int:
    return key_slot(f"vermilion:{{{name}}}:v2:mids".encode())


def names_on_every_master(cluster: LocalCluster, prefix: str = "test") -> list[str]:
    """One fresh queue name per master, each hashing to a slot that master serves."""
    wanted = cluster.master_ports()
    found: dict[int, str] = {}
    while len(found) < len(wanted):
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        found.setdefault(cluster.master_of(slot_of(name)), name)
    return [found[port] for port in wanted]


@pytest.fixture
async def cluster_queues(cluster: LocalCluster) -> AsyncIterator[list[Queue]]:
    """One queue per master, from one ``redis+cluster://`` URL each; cleared and closed after."""
    queues = [Queue(name, cluster.url) for name in names_on_every_master(cluster)]
    yield queues
    for queue in queues:
        try:
            await queue.clear()
        finally:
            await queue.aclose()
