"""Queues on a real Redis Cluster: routing by slot, every master covered, slots that move."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode

from tests.cluster.conftest import names_on_every_master, slot_of
from tests.cluster.servers import LocalCluster, command
from tests.helpers import eventually
from tests.integration.test_cli import vermilion
from vermilion import (
    AsyncWorker,
    Message,
    MessageStatus,
    Queue,
    ScriptError,
    clear_queues,
    queue_names,
)
from vermilion._cluster import ClusterTransport
from vermilion.testing import drain


def router(queue: Queue) -> ClusterTransport:
    transport = queue._protocol[0].transport
    assert isinstance(transport, ClusterTransport)
    return transport


def cluster_client(cluster: LocalCluster) -> aioredis.RedisCluster:
    return aioredis.RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", cluster.servers[0].port)])


async def test_every_operation_on_queues_whose_slots_live_on_different_masters(
    cluster: LocalCluster, cluster_queues: list[Queue]
) -> None:
    """Each queue's keys live on the master of its slot, and every public operation works there."""
    assert len({cluster.master_of(slot_of(queue.name)) for queue in cluster_queues}) == 3
    for queue in cluster_queues:
        assert (await queue.enqueue({"n": 0}, mid="first")).action == "added"
        assert (await queue.enqueue({"n": 0}, mid="first")).error == "already-queued"
        assert (await queue.enqueue({"n": 1}, mid="first", can_update=True)).action == "updated"
        results = await queue.enqueue_many([{"n": 2}, {"n": 3}], mids=["a", "b"])
        assert [result.ok for result in results] == [True, True]
        await queue.enqueue({"n": 4}, mid="later", delay=60)
        assert await queue.message_status("first") is MessageStatus.QUEUED
        status = await queue.status()
        assert (status.nqueued, status.nbackoff, status.ntotal) == (3, 1, 4)
        assert await queue.size() == 3
        assert {info.mid: info.content for info in await queue.content()} == {
            "first": {"n": 1},
            "a": {"n": 2},
            "b": {"n": 3},
            "later": {"n": 4},
        }
        # The keys are on that master, not merely reachable from it.
        owner = cluster.master_of(slot_of(queue.name))
        assert command(owner, "EXISTS", f"vermilion:{{{queue.name}}}:v2:mids".encode()) == 1
        assert await queue.clear() == 4
        assert (await queue.status()).ntotal == 0
        await queue.enqueue_many([{"n": 1}, {"n": 2}, {"n": 3}], mids=["first", "a", "b"])

    for queue in cluster_queues:
        seen: list[str] = []

        async def handle(message: Message, seen: list[str] = seen) -> None:
            seen.append(message.mid)

        await drain(queue, handle, concurrency=4, timeout=20)
        assert sorted(seen) == ["a", "b", "first"]
        assert await queue.message_status("first") is None  # handled, no de-dup window: forgotten
        assert (await queue.status()).ntotal == 0


async def test_a_cluster_client_is_taken_in_place_of_a_url(cluster: LocalCluster) -> None:
    """`Queue(name, RedisCluster(...))` and `redis=` both work; the user's client stays open."""
    client = cluster_client(cluster)
    name = names_on_every_master(cluster)[2]
    try:
        positional, keyword = Queue(name, client), Queue(name, redis=client)
        assert positional.client is client and keyword.client is client
        assert positional.url.startswith("redis+cluster://")
        with pytest.raises(TypeError, match=r"Redis Cluster: use Queue\.client"):
            _ = positional.redis
        assert (await positional.enqueue("x", mid="m")).ok
        assert await keyword.message_status("m") is MessageStatus.QUEUED
        await positional.aclose()
        assert await client.ping()  # not closed by a queue that did not make it
        assert await keyword.clear() == 1
        await keyword.aclose()
    finally:
        await client.aclose()


async def test_queue_names_and_clear_queues_cover_every_master(cluster: LocalCluster) -> None:
    client = cluster_client(cluster)
    prefix = f"cover-{uuid.uuid4().hex[:6]}"
    names = names_on_every_master(cluster, prefix)
    try:
        for name in names:
            async with Queue(name, client) as queue:
                await queue.enqueue_many(["x", "y"])
        assert await queue_names(client, f"{prefix}-*") == sorted(names)
        assert await clear_queues(client, *names) == 6
        assert await queue_names(client, f"{prefix}-*") == []
    finally:
        await client.aclose()


async def test_queue_names_with_workers_covers_every_master(cluster: LocalCluster) -> None:
    """A queue that holds nothing but has a live worker is listed on whichever master its slot is."""
    client = cluster_client(cluster)
    prefix = f"idle-{uuid.uuid4().hex[:6]}"
    names = names_on_every_master(cluster, prefix)

    async def nothing(message: Message) -> None:
        return None

    try:
        async with contextlib.AsyncExitStack() as stack:
            queues = [await stack.enter_async_context(Queue(name, client)) for name in names]
            for queue in queues:
                worker = AsyncWorker(queue, nothing, presence_interval=60, monitor=None)
                await stack.enter_async_context(worker)

            async def all_announced() -> bool:
                return all([await queue.workers() for queue in queues])

            await eventually(all_announced, 10, interval=0.02, what="every worker announced")
            assert await queue_names(client, f"{prefix}-*") == []
            assert await queue_names(client, f"{prefix}-*", with_workers=True) == sorted(names)
        assert await queue_names(client, f"{prefix}-*", with_workers=True) == []
    finally:
        await client.aclose()


async def test_the_cli_covers_every_master(cluster: LocalCluster) -> None:
    """`status`, `queues` and `clear` take a redis+cluster:// URL and see every master's queues."""
    prefix = f"cli-{uuid.uuid4().hex[:6]}"
    names = names_on_every_master(cluster, prefix)
    for name in names:
        async with Queue(name, cluster.url) as queue:
            await queue.enqueue("x")
    run = await vermilion("queues", "--pattern", f"{prefix}-*", "--json", url=cluster.url)
    assert run.returncode == 0, run
    assert sorted(json.loads(run.stdout)) == sorted(names)
    run = await vermilion("status", "--json", url=cluster.url)
    assert run.returncode == 0, run
    assert {
        row["queue"]: row["nqueued"] for row in json.loads(run.stdout) if row["queue"] in names
    } == dict.fromkeys(names, 1)
    run = await vermilion("clear", *names, "--yes", url=cluster.url)
    assert run.returncode == 0, run
    assert len(run.stdout.splitlines()) == 3
    run = await vermilion("queues", "--pattern", f"{prefix}-*", "--json", url=cluster.url)
    assert json.loads(run.stdout) == []


async def test_a_plain_url_to_one_cluster_node_says_to_use_a_cluster_url(cluster: LocalCluster) -> None:
    name = names_on_every_master(cluster)[0]
    elsewhere = cluster.master_ports()[1]
    async with Queue(name, f"redis://127.0.0.1:{elsewhere}/0") as queue:
        with pytest.raises(ScriptError, match=r"redis\+cluster://"):
            await queue.enqueue("x")


async def test_resharding_a_queue_s_slot_while_it_runs(cluster: LocalCluster) -> None:
    """The slot moves (MIGRATING/IMPORTING, MIGRATE key by key, SETSLOT NODE) while a producer
    enqueues and a worker drains: every message is handled exactly once, no call's outcome is
    unknown (TRYAGAIN, ASK and MOVED prove the script did not run, so they are followed)."""
    name = names_on_every_master(cluster)[0]
    slot = slot_of(name)
    source = cluster.master_of(slot)
    target = next(port for port in cluster.master_ports() if port != source)
    handled: Counter[str] = Counter()
    total = 300

    async def handle(message: Message) -> None:
        handled[message.mid] += 1
        await asyncio.sleep(0.005)

    async with Queue(name, cluster.url) as queue:
        worker = AsyncWorker(queue, handle, concurrency=8, monitor=None, idle_backoff=0.05)
        async with worker:

            async def produce() -> None:
                for index in range(total):
                    assert (await queue.enqueue(index, mid=f"m{index}")).ok
                    await asyncio.sleep(0.002)

            producing = asyncio.create_task(produce())
            await eventually(lambda: asyncio.sleep(0, bool(handled)), 10, what="a first message handled")
            moved = await asyncio.to_thread(cluster.move_slot, slot, target, pause=0.05)
            await producing
            await eventually(
                lambda: asyncio.sleep(0, len(handled) == total), 30, what="every message handled"
            )
        assert moved > 0 and cluster.master_of(slot) == target
        followed = router(queue).followed
        assert followed["moved"] >= 1 and followed["ask"] + followed["tryagain"] >= 1, followed
        assert set(handled) == {f"m{index}" for index in range(total)}
        assert max(handled.values()) == 1
        assert command(target, "EXISTS", f"vermilion:{{{name}}}:v2:meta".encode()) == 1
        await queue.clear()


async def test_the_worker_s_wake_up_follows_a_slot_that_moved(cluster: LocalCluster) -> None:
    """An idle worker blocked in BLPOP on the old master is redirected (MOVED) and blocks on the
    new one: a message enqueued after the move is handled at once, not after the 30 s back-off."""
    name = names_on_every_master(cluster)[1]
    slot = slot_of(name)
    target = next(port for port in cluster.master_ports() if port != cluster.master_of(slot))
    handled = asyncio.Event()

    async def handle(message: Message) -> None:
        handled.set()

    async with Queue(name, cluster.url) as queue:
        await queue.enqueue("warm-up", mid="warm-up")
        async with AsyncWorker(queue, handle, monitor=None, idle_backoff=30.0):
            await asyncio.wait_for(handled.wait(), 10)
            handled.clear()
            await asyncio.sleep(0.3)  # the worker is now blocked on the old master
            await asyncio.to_thread(cluster.move_slot, slot, target)
            await asyncio.sleep(1.5)  # the old master redirects blocked clients within a second
            await queue.enqueue("after", mid="after")
            await asyncio.wait_for(handled.wait(), 5)
        assert router(queue).followed["moved"] >= 1
        await queue.clear()
