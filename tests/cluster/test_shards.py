"""One queue sharded over a real cluster's masters (``Queue(..., shards=N)``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from tests.cluster.servers import LocalCluster
from tests.helpers import mids_on, until_idle
from tests.integration.test_cli import vermilion
from vermilion import (
    AsyncWorker,
    ConfigurationError,
    Failure,
    Message,
    MessageStatus,
    Queue,
    queue_names,
)
from vermilion._shards import shard_tag
from vermilion.testing import drain


@pytest.fixture
async def sharded(cluster: LocalCluster) -> AsyncIterator[Queue]:
    queue = Queue(f"sharded-{uuid.uuid4().hex[:12]}", cluster.url, shards=8)
    yield queue
    try:
        await queue.clear()
    finally:
        await queue.aclose()


def test_eight_shards_spread_over_three_masters(cluster: LocalCluster) -> None:
    """The tags' slots fall in equal ranges: 3, 2 and 3 shards on the masters of a default cluster."""
    masters = Counter(cluster.master_of(key_slot(shard_tag("emails", i, 8).encode())) for i in range(8))
    assert sorted(masters.values()) == [2, 3, 3]


async def test_ten_thousand_messages_and_duplicates_drained_exactly_once(sharded: Queue) -> None:
    mids = [f"m{i}" for i in range(10_000)]
    for start in range(0, 10_000, 2_500):
        results = await sharded.enqueue_many(range(2_500), mids=mids[start : start + 2_500])
        assert all(result.ok for result in results)
    duplicates = await sharded.enqueue_many(range(1_000), mids=mids[::10])
    assert {result.error for result in duplicates} == {"already-queued"}
    assert (await sharded.status()).nqueued == 10_000
    seen: Counter[str] = Counter()

    async def handle(message: Message) -> None:
        seen[message.mid] += 1

    await drain(sharded, handle, concurrency=64, timeout=60, presence_interval=None)
    assert seen == Counter(mids)
    assert (await sharded.status()).ntotal == 0


async def test_every_aggregated_operation_on_a_cluster(sharded: Queue, cluster: LocalCluster) -> None:
    mids = [f"m{i}" for i in range(32)]
    await sharded.enqueue_many(range(32), mids=mids)
    assert (await sharded.enqueue(0, mid="m3")).error == "already-queued"
    assert await sharded.message_status("m3") is MessageStatus.QUEUED
    assert (await sharded.status()).nqueued == 32
    assert sorted(info.mid for info in await sharded.content()) == sorted(mids)
    assert (await sharded.configure(max_size=100)).max_size == 100
    assert (await sharded.status()).max_size == 100
    assert sharded.name in await queue_names(sharded.client, f"{sharded.name}*")
    run = await vermilion("status", sharded.name, "--json", url=cluster.url)
    assert run.returncode == 0, run
    assert [(row["queue"], row["nqueued"]) for row in json.loads(run.stdout)] == [(sharded.name, 32)]

    async def fail(message: Message) -> Failure:
        return Failure("no")

    await drain(sharded, fail, concurrency=8, timeout=30, presence_interval=None)
    assert sorted(entry.mid for entry in await sharded.failed(limit=100)) == sorted(mids)
    assert [r.ok for r in await sharded.replay("m1", "m2")] == [True, True]
    assert await sharded.purge_failed("m3") == 1
    assert await sharded.replay_failed() == 29
    assert (await sharded.status()).nqueued == 31
    async with Queue(sharded.name, cluster.url, shards=4) as other:
        with pytest.raises(ConfigurationError, match=r"shards=8.*shards=4"):
            await other.enqueue("x")
    assert await sharded.clear() == 31


async def test_an_enqueue_on_any_shard_wakes_an_idle_worker_on_a_cluster(sharded: Queue) -> None:
    handled: asyncio.Queue[str] = asyncio.Queue()

    async def handle(message: Message) -> None:
        handled.put_nowait(message.mid)

    # An idle backoff of a minute: only a wake-up can hand a message out within the test.
    async with AsyncWorker(sharded, handle, idle_backoff=60, presence_interval=None) as worker:
        for index in range(8):
            await until_idle(worker)
            mid = mids_on(index, 8, 1, prefix=f"wake{index}-")[0]
            await sharded.enqueue("x", mid=mid)
            assert await asyncio.wait_for(handled.get(), 5) == mid
