"""A write that reaches a read-only replica (a master demoted under a Sentinel-managed client)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.cluster.servers import command, server_kind, wait_until
from tests.reliability.servers import FaultServer
from vermilion import Queue, ScriptError


@pytest.fixture(scope="module")
def replica() -> Iterator[FaultServer]:
    master, replica = FaultServer(server_kind()), FaultServer(server_kind())
    with master, replica:
        command(replica.port, "REPLICAOF", "127.0.0.1", master.port)
        wait_until(
            lambda: command(replica.port, "INFO", "replication").get("master_link_status") == "up",
            20,
            "the replica to sync",
        )
        yield replica


def connections_received(server: FaultServer) -> int:
    # redis-py parses INFO into a dict
    return int(command(server.port, "INFO", "stats")["total_connections_received"])


async def test_readonly_drops_the_connection_and_is_sent_once_more_on_a_new_one(
    replica: FaultServer,
) -> None:
    """READONLY proves the script did not run: the connection is dropped (a Sentinel-managed one
    would ask the Sentinels again on reconnecting) and the call sent once more on a new one;
    refused again, it raises ScriptError naming READONLY, and nothing was written."""
    async with Queue(f"test-{uuid.uuid4().hex[:12]}", f"redis://127.0.0.1:{replica.port}/0") as queue:
        assert await queue.size() == 0  # connected, checked; reads work on a replica
        before = connections_received(replica)
        with pytest.raises(ScriptError, match="READONLY"):
            await queue.enqueue("x", mid="a")
        # Two connections for the enqueue (the second after READONLY) and the INFO's own.
        assert connections_received(replica) - before == 3
        assert await queue.message_status("a") is None
