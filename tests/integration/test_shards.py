"""One queue spread over several hash tags (``Queue(..., shards=N)``), on one server."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from redis.crc import key_slot

from tests.conftest import QueueFactory
from tests.helpers import eventually, mids_on, until_idle
from tests.integration.test_cli import (
    WorkerProcess,
    app_dir as app_dir,  # a fixture
    vermilion,
)
from vermilion import (
    AsyncWorker,
    ConfigurationError,
    Failure,
    Message,
    MessageStatus,
    Queue,
    clear_queues,
    queue_names,
    queue_shards,
    schedule,
)
from vermilion._shards import shard_index, shard_tag
from vermilion.prometheus import QueueCollector
from vermilion.testing import drain


async def vermilion_keys(redis: aioredis.Redis, name: str) -> set[bytes]:
    return {key async for key in redis.scan_iter(match=f"vermilion:{{{name}*".encode())}


@pytest.mark.parametrize("shards", [2, 3, 8, 256])
def test_each_shard_s_tag_hashes_into_its_own_range_of_slots(shards: int) -> None:
    """On a cluster made with equal contiguous slot ranges, the shards spread over its masters."""
    width = 16384 / shards
    for index in range(shards):
        slot = key_slot(shard_tag("emails", index, shards).encode())
        assert index * width <= slot < (index + 1) * width


def test_a_mid_s_shard_is_stable_and_spreads() -> None:
    # The documented crc32(mid) mod N, not hash(): the same in every process.
    for mid in ("a", "b", "order-17", "é"):
        assert shard_index(mid, 4) == zlib.crc32(mid.encode()) % 4
    spread = Counter(shard_index(uuid.uuid4().hex, 8) for _ in range(8000))
    assert min(spread.values()) > 800


async def test_one_shard_is_today_s_queue(queue: Queue, redis: aioredis.Redis) -> None:
    await queue.enqueue("x", mid="a")
    assert queue.shards == 1
    assert all(b"/" not in key for key in await vermilion_keys(redis, queue.name))
    assert await redis.hget(f"vermilion:{{{queue.name}}}:v2:meta", "shards") is None
    assert repr(queue).startswith(f"<Queue {queue.name!r} at ")


async def test_messages_go_to_their_mid_s_shard_and_the_count_is_kept(
    make_queue: QueueFactory, redis: aioredis.Redis
) -> None:
    queue = await make_queue(shards=4)
    mids = [f"m{i}" for i in range(200)]
    results = await queue.enqueue_many(range(200), mids=mids)
    assert all(result.ok for result in results)
    for index in range(4):
        tag = shard_tag(queue.name, index, 4)
        members: set[Any] = await redis.smembers(f"vermilion:{{{tag}}}:v2:mids")
        stored = {bytes(mid).decode() for mid in members}
        assert stored == {mid for mid in mids if shard_index(mid, 4) == index}
        assert stored
    meta = await redis.hgetall(f"vermilion:{{{queue.name}}}:v2:meta")
    assert meta == {b"shards": b"4"}
    assert queue.shards == 4 and "shards=4" in repr(queue)
    assert await queue_shards(redis, queue.name) == 4


async def test_a_mid_keeps_its_meaning_across_shards(make_queue: QueueFactory) -> None:
    queue = await make_queue(shards=3)
    assert (await queue.enqueue(1, mid="a")).action == "added"
    assert (await queue.enqueue(2, mid="a")).error == "already-queued"
    assert (await queue.enqueue(3, mid="a", can_update=True)).action == "updated"
    assert await queue.message_status("a") is MessageStatus.QUEUED
    assert await queue.message_status("nobody") is None
    generated = await queue.enqueue("new")
    assert await queue.message_status(generated.mid) is MessageStatus.QUEUED
    batch = await queue.enqueue_many([1, 2, 3], mids=["a", "b", None])
    assert [r.error for r in batch] == ["already-queued", None, None]
    assert [info.content for info in await queue.content() if info.mid == "a"] == [3]


async def test_status_content_configure_and_clear_cover_every_shard(make_queue: QueueFactory) -> None:
    queue = await make_queue(shards=4)
    mids = [f"m{i}" for i in range(40)]
    await queue.enqueue_many(range(40), mids=mids)
    await queue.enqueue("later", mid="later", delay=60)
    status = await queue.status()
    assert (status.nqueued, status.nbackoff, status.ntotal) == (40, 1, 41)
    assert await queue.size() == 40
    assert sorted(info.mid for info in await queue.content()) == sorted([*mids, "later"])
    # A bound is per shard: 40 messages over 4 shards, each shard refuses past 12.
    settings = await queue.configure(max_size=12)
    assert settings.max_size == 12
    assert (await queue.status()).max_size == 12
    per_shard = Counter(shard_index(mid, 4) for mid in [*mids, "later"])
    fuller = max(per_shard, key=lambda index: per_shard[index])
    extra = mids_on(fuller, 4, 13 - per_shard[fuller] + 1, prefix="x")
    results = await queue.enqueue_many(range(len(extra)), mids=extra)
    accepted = sum(result.ok for result in results)
    assert accepted == 12 - per_shard[fuller]
    assert {result.error for result in results if not result.ok} == {"full"}
    assert await queue.clear() == 41 + accepted
    assert (await queue.status()).ntotal == 0


async def test_the_failure_history_covers_every_shard(make_queue: QueueFactory) -> None:
    queue = await make_queue(shards=3)
    mids = [f"f{i}" for i in range(9)]
    await queue.enqueue_many(range(9), mids=mids)

    async def fail(message: Message) -> Failure:
        return Failure(f"no {message.mid}")

    await drain(queue, fail, timeout=10, presence_interval=None)
    failed = await queue.failed()
    assert sorted(entry.mid for entry in failed) == sorted(mids)
    times = [entry.failed_at for entry in failed]
    assert times == sorted(times, reverse=True)
    assert [entry.mid for entry in await queue.failed(limit=3, offset=2)] == [e.mid for e in failed[2:5]]
    replayed = await queue.replay("f0", "f4", "nobody")
    assert [(r.mid, r.ok, r.error) for r in replayed] == [
        ("f0", True, None),
        ("f4", True, None),
        ("nobody", False, "unknown"),
    ]
    assert await queue.message_status("f4") is MessageStatus.QUEUED
    assert await queue.purge_failed("f1", "f2") == 2
    assert await queue.replay_failed() == 5
    assert (await queue.status()).nfailed == 0
    assert await queue.purge_failed() == 0
    with pytest.raises(ValueError, match="offset \\+ limit"):
        await queue.failed(limit=10_000, offset=1)


async def test_a_client_with_another_count_is_refused(make_queue: QueueFactory, redis_url: str) -> None:
    queue = await make_queue(shards=4)
    await queue.enqueue("x", mid="a")
    for other in (1, 3):
        async with Queue(queue.name, redis_url, shards=other) as wrong:
            refusal = f"stored with shards=4.*made with shards={other}"
            with pytest.raises(ConfigurationError, match=refusal):
                await wrong.status()
            with pytest.raises(ConfigurationError, match="shards=4"):
                await wrong.enqueue("y")
    plain = await make_queue()
    await plain.enqueue("x")
    async with Queue(plain.name, redis_url, shards=2) as sharded:
        with pytest.raises(ConfigurationError, match="holds messages as an unsharded queue"):
            await sharded.enqueue("y")
    with pytest.raises(ValueError, match="shards must be from 1 to 256"):
        Queue("q", redis_url, shards=0)
    with pytest.raises(TypeError):
        Queue("q", redis_url, shards=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sharded"):
        schedule(queue, "tick", cron="* * * * *")


async def test_a_worker_drains_every_shard_exactly_once(make_queue: QueueFactory) -> None:
    queue = await make_queue(shards=5)
    mids = [f"m{i}" for i in range(1000)]
    await queue.enqueue_many(range(1000), mids=mids)
    await queue.enqueue_many(range(100), mids=mids[:100])  # duplicates: refused
    seen: Counter[str] = Counter()

    async def handle(message: Message) -> None:
        seen[message.mid] += 1

    await drain(queue, handle, concurrency=16, timeout=30, presence_interval=None)
    assert seen == Counter(mids)
    assert (await queue.status()).ntotal == 0


async def test_a_failed_poll_of_one_shard_is_logged_and_the_others_go_on(
    make_queue: QueueFactory, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await make_queue(shards=3)
    broken = queue._shards[0]
    await redis.set(broken.key("ready"), "not a list")  # dequeue refuses that shard
    handled: asyncio.Queue[str] = asyncio.Queue()

    async def handle(message: Message) -> None:
        handled.put_nowait(message.mid)

    mid = mids_on(1, 3, 1)[0]
    with caplog.at_level(logging.WARNING, logger="vermilion"):
        async with AsyncWorker(queue, handle, idle_backoff=0.05, presence_interval=None) as worker:
            await queue.enqueue("x", mid=mid)
            assert await asyncio.wait_for(handled.get(), 10) == mid

            async def poll_failed() -> bool:
                return worker.stats().counts.get("poll/error", 0) >= 1

            await eventually(poll_failed, 10, what="a failed poll of the broken shard")
    await redis.delete(broken.key("ready"))
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("poll of queue")]
    assert warned and all(f"poll of queue {broken.name!r} failed" in w for w in warned), warned


async def test_a_busy_shard_does_not_starve_another(make_queue: QueueFactory) -> None:
    queue = await make_queue(shards=2)
    busy = mids_on(0, 2, 300, prefix="busy")
    await queue.enqueue_many(range(300), mids=busy)
    handled: list[str] = []
    quiet_seen = asyncio.Event()
    warmed_up = asyncio.Event()

    async def handle(message: Message) -> None:
        handled.append(message.mid)
        if len(handled) == 20:
            warmed_up.set()
        if message.mid.startswith("quiet"):
            quiet_seen.set()
        await asyncio.sleep(0)

    async with AsyncWorker(queue, handle, concurrency=2, presence_interval=None):
        await asyncio.wait_for(warmed_up.wait(), 10)
        quiet = mids_on(1, 2, 1, prefix="quiet")[0]
        await queue.enqueue("q", mid=quiet)
        before = len(handled)
        await asyncio.wait_for(quiet_seen.wait(), 10)
        # Handed out in the next round of polls: a few busy messages at most in between.
        assert handled.index(quiet) - before <= 4


async def test_an_enqueue_on_any_shard_wakes_an_idle_worker(make_queue: QueueFactory) -> None:
    queue = await make_queue(shards=3)
    handled: asyncio.Queue[str] = asyncio.Queue()

    async def handle(message: Message) -> None:
        handled.put_nowait(message.mid)

    # An idle backoff of a minute: only a wake-up can hand a message out within the test.
    async with AsyncWorker(queue, handle, idle_backoff=60, presence_interval=None) as worker:
        await asyncio.sleep(0)
        await until_idle(worker)
        for index in range(3):
            mid = mids_on(index, 3, 1, prefix=f"wake{index}-")[0]
            await queue.enqueue("x", mid=mid)
            assert await asyncio.wait_for(handled.get(), 5) == mid
            await until_idle(worker)


async def test_tools_show_a_sharded_queue_as_one(make_queue: QueueFactory, redis_url: str) -> None:
    queue = await make_queue(shards=4)
    await queue.enqueue_many(range(10), mids=[f"m{i}" for i in range(10)])
    names = await queue_names(queue.redis, f"{queue.name}*")
    assert names == [queue.name]
    run = await vermilion("status", queue.name, "--json", url=redis_url)
    assert run.returncode == 0, run
    rows: list[dict[str, Any]] = json.loads(run.stdout)
    assert [(row["queue"], row["nqueued"]) for row in rows] == [(queue.name, 10)]
    run = await vermilion("queues", "--pattern", f"{queue.name}*", "--json", url=redis_url)
    assert json.loads(run.stdout) == [queue.name]
    registry = CollectorRegistry()
    collector = QueueCollector(redis_url, [queue.name])
    registry.register(collector)
    try:
        scraped = generate_latest(registry).decode()
    finally:
        collector.close()
    assert f'vermilion_queue_ready_messages{{queue="{queue.name}"}} 10.0' in scraped
    assert await clear_queues(queue.redis, queue.name) == 10
    assert (await queue.status()).ntotal == 0


async def test_the_cli_worker_serves_a_queue_with_its_stored_count(
    make_queue: QueueFactory, redis_url: str, app_dir: Path
) -> None:
    queue = await make_queue(shards=3)
    await queue.enqueue("first", mid="first")  # the count is kept from the first call
    worker = await WorkerProcess.start(app_dir, redis_url, queue.name)
    try:
        await worker.wait_for_stderr("worker started")
        mids = [mids_on(index, 3, 1, prefix=f"cli{index}-")[0] for index in range(3)]
        await queue.enqueue_many([{"n": i} for i in range(3)], mids=mids)
        for mid in mids:
            await worker.wait_for_log(f"done {mid}")
        worker.process.send_signal(signal.SIGTERM)
        assert await worker.exit_code() == 0, worker.stderr
    finally:
        await worker.close()
    assert (await queue.status()).ntotal == 0
