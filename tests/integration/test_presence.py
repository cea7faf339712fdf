"""Live workers: each worker's presence record in Redis, ``Queue.workers()`` and ``vermilion workers``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from tests.conftest import QueueFactory
from tests.helpers import eventually
from tests.integration.test_cli import table_rows, vermilion
from tests.integration.test_worker_process import CRASH_WORKER, read_line
from vermilion import (
    AsyncWorker,
    Message,
    Queue,
    ScriptError,
    WorkerPresence,
    _presence_calls as presence_calls,
    clear_queues,
    queue_names,
)
from vermilion._keys import worker_key, workers_key
from vermilion._scripts import SCRIPTS

INTERVAL = 0.2


async def nothing(message: Message) -> None:
    return None


async def listed(queue: Queue, worker_id: str) -> WorkerPresence | None:
    return next((w for w in await queue.workers() if w.id == worker_id), None)


async def wait_for_workers(queue: Queue, *ids: str) -> list[WorkerPresence]:
    """The queue's workers once exactly ``ids`` are listed (the first beat runs right after start)."""

    async def all_listed() -> bool:
        return sorted(w.id for w in await queue.workers()) == sorted(ids)

    await eventually(all_listed, 10, interval=0.02, what=f"workers {ids} listed")
    return await queue.workers()


async def test_a_running_worker_is_listed_with_its_fields(make_queue: QueueFactory) -> None:
    """A worker's record: who it is, its load while a handler runs, its stats, server times."""
    queue = await make_queue()
    release = asyncio.Event()

    async def handler(message: Message) -> None:
        if message.content == "hold":
            await release.wait()

    await queue.enqueue_many(["a", "b", "c"])
    before = time.time()
    async with AsyncWorker(queue, handler, concurrency=3, presence_interval=INTERVAL, monitor=None) as worker:

        async def handled_three() -> bool:
            found = await listed(queue, worker.id)
            return found is not None and found.counts.get("handler/success") == 3

        await eventually(handled_three, 10, interval=0.05, what="three successes announced")
        await queue.enqueue("hold")

        async def holding() -> bool:
            found = await listed(queue, worker.id)
            return found is not None and found.in_flight == 1

        await eventually(holding, 10, interval=0.05, what="one message in flight announced")
        presence = await listed(queue, worker.id)
        release.set()
    assert presence is not None
    assert presence.host == socket.gethostname()
    assert presence.pid == os.getpid()
    assert presence.queue == queue.name
    assert presence.concurrency == 3
    assert presence.in_flight == 1
    assert presence.counts["handler/success"] == 3
    assert presence.handling_time_ms is not None and presence.handling_time_ms.n == 3
    assert presence.queueing_time_ms is not None and presence.queueing_time_ms.n == 4
    # Server times, timezone-aware: the start before the latest beat, that beat 3 intervals before expiry.
    assert presence.started_at.tzinfo is not None
    assert before - 5 < presence.started_at.timestamp() < presence.last_seen.timestamp() < time.time() + 5
    assert presence.expires_at - presence.last_seen == timedelta(seconds=3 * INTERVAL)


async def test_stop_removes_the_presence(make_queue: QueueFactory, redis: aioredis.Redis) -> None:
    """A stopped worker is gone at once, and so are its keys."""
    queue = await make_queue()
    worker = AsyncWorker(queue, nothing, presence_interval=60, monitor=None)
    async with worker:
        await wait_for_workers(queue, worker.id)  # the beat at start
        assert await redis.exists(worker_key(queue.name, worker.id)) == 1
    assert await queue.workers() == []
    assert await redis.exists(worker_key(queue.name, worker.id), workers_key(queue.name)) == 0


async def test_by_default_a_worker_announces_every_minute(
    make_queue: QueueFactory, redis: aioredis.Redis
) -> None:
    """The default interval is 60 s: the record lives three intervals, so about 180 s.

    Pinned because the interval is what an idle worker costs the server (issue #14's
    0.5 commands/s): at 30 s an idle worker measured 0.53.
    """
    queue = await make_queue()
    async with AsyncWorker(queue, nothing, monitor=None) as worker:
        await wait_for_workers(queue, worker.id)
        ttl_ms = await redis.pttl(worker_key(queue.name, worker.id))
    assert 170_000 < ttl_ms <= 180_000


async def test_two_workers_are_both_listed(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    async with (
        AsyncWorker(queue, nothing, concurrency=2, presence_interval=60, monitor=None) as first,
        AsyncWorker(queue, nothing, concurrency=5, presence_interval=60, monitor=None) as second,
    ):
        workers = await wait_for_workers(queue, first.id, second.id)
        assert first.id != second.id
        assert {w.id: w.concurrency for w in workers} == {first.id: 2, second.id: 5}
        assert workers == sorted(workers, key=lambda w: w.started_at)
    assert await queue.workers() == []


async def test_a_killed_worker_disappears_after_its_ttl(make_queue: QueueFactory, redis_url: str) -> None:
    """A SIGKILLed worker process cannot remove its record: it lapses after three intervals."""
    queue = await make_queue()
    interval = 0.5
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, str(CRASH_WORKER), redis_url, queue.name, "30", str(interval)],
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        worker_id = (await read_line(process.stdout)).removeprefix("ready ")

        async def announced() -> bool:
            return await listed(queue, worker_id) is not None

        await eventually(announced, 10, interval=0.05, what="the subprocess's presence")
        presence = await listed(queue, worker_id)
        assert presence is not None and presence.pid == process.pid
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    killed_at = time.monotonic()

    async def gone() -> bool:
        return await listed(queue, worker_id) is None

    await eventually(gone, 10, interval=0.05, what="the killed worker's presence lapsing")
    assert time.monotonic() - killed_at <= 3 * interval + 1.0


async def test_presence_can_be_turned_off(make_queue: QueueFactory, redis: aioredis.Redis) -> None:
    queue = await make_queue()
    async with AsyncWorker(queue, nothing, presence_interval=None, monitor=None):
        await queue.enqueue("x")

        async def empty() -> bool:
            return (await queue.status()).ntotal == 0

        await eventually(empty, 10, what="the message handled")
        assert await queue.workers() == []
        assert await redis.exists(workers_key(queue.name)) == 0


@pytest.mark.parametrize(
    ("interval", "error"),
    [(0, ValueError), (-1, ValueError), (float("nan"), ValueError), ("30", TypeError)],
)
async def test_bad_presence_interval(make_queue: QueueFactory, interval: object, error: type) -> None:
    queue = await make_queue()
    with pytest.raises(error, match="presence_interval"):
        AsyncWorker(queue, nothing, presence_interval=interval)  # type: ignore[arg-type]


async def test_presence_keys_make_no_queue_and_clear_keeps_them(
    make_queue: QueueFactory, redis: aioredis.Redis
) -> None:
    """``queue_names`` ignores a queue with only presence keys; ``clear`` leaves live workers listed."""
    queue = await make_queue()
    async with AsyncWorker(queue, nothing, presence_interval=60, monitor=None) as worker:
        await wait_for_workers(queue, worker.id)
        assert queue.name not in await queue_names(redis, queue.name)
        await queue.enqueue("x", delay=60)
        assert queue.name in await queue_names(redis, queue.name)
        assert await queue.clear() == 1
        assert await clear_queues(redis, queue.name) == 0
        assert [w.id for w in await queue.workers()] == [worker.id]
        assert queue.name not in await queue_names(redis, queue.name)


async def test_queue_names_with_workers_lists_a_queue_whose_only_keys_are_live_workers(
    make_queue: QueueFactory, redis: aioredis.Redis, redis_url: str
) -> None:
    """A worker that keeps up leaves its queue empty: ``with_workers=True`` (``vermilion queues
    --with-workers``, and ``vermilion status`` of every queue) still lists it while a worker is
    live, and not after it stopped."""
    queue = await make_queue()
    async with AsyncWorker(queue, nothing, presence_interval=60, monitor=None) as worker:
        await wait_for_workers(queue, worker.id)
        assert queue.name not in await queue_names(redis, queue.name)
        assert await queue_names(redis, queue.name, with_workers=True) == [queue.name]
        run = await vermilion("queues", "--pattern", queue.name, "--with-workers", "--json", url=redis_url)
        assert run.returncode == 0, run
        assert json.loads(run.stdout) == [queue.name]
        run = await vermilion("queues", "--pattern", queue.name, "--json", url=redis_url)
        assert json.loads(run.stdout) == []
        run = await vermilion("status", "--json", url=redis_url)  # every queue in use
        assert run.returncode == 0, run
        assert [row["nqueued"] for row in json.loads(run.stdout) if row["queue"] == queue.name] == [0]
        await queue.enqueue("x", delay=60)  # data too: listed once, either way
        assert await queue_names(redis, queue.name, with_workers=True) == [queue.name]
        await queue.clear()
    assert await queue_names(redis, queue.name, with_workers=True) == []


async def test_queue_names_with_workers_skips_an_index_whose_workers_all_expired(
    make_queue: QueueFactory, redis: aioredis.Redis
) -> None:
    """A worker that died without withdrawing leaves its index entry until the index is read:
    ``with_workers`` reads it, so the queue is not listed, and the expired entry is pruned."""
    queue = await make_queue()
    await redis.zadd(workers_key(queue.name), {"dead-worker": 1})  # expired in 1970
    assert await queue_names(redis, queue.name, with_workers=True) == []
    assert await redis.exists(workers_key(queue.name)) == 0
    await redis.zadd(workers_key(queue.name), {"dead-worker": 1})
    await queue.enqueue("x", delay=60)  # a queue with data is listed without reading its workers
    assert await queue_names(redis, queue.name, with_workers=True) == [queue.name]
    assert await redis.exists(workers_key(queue.name)) == 1


async def test_queue_names_refuses_a_with_workers_that_is_no_bool(redis: aioredis.Redis) -> None:
    with pytest.raises(TypeError, match="with_workers must be a bool, not int"):
        await queue_names(redis, with_workers=1)  # type: ignore[arg-type]


async def test_a_failing_beat_is_retried_and_the_worker_goes_on(
    make_queue: QueueFactory, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A beat Redis refuses (the index overwritten with a string) is logged and counted; the worker
    handles messages all the while, and announces itself again once the key is repaired."""
    queue = await make_queue()
    await redis.set(workers_key(queue.name), "not a sorted set")
    caplog.set_level(logging.WARNING, logger="vermilion")
    async with AsyncWorker(queue, nothing, presence_interval=INTERVAL, monitor=None) as worker:

        async def failed_twice() -> bool:
            return worker.stats().counts.get("presence/error", 0) >= 2

        await eventually(failed_twice, 10, interval=0.05, what="two failed beats")
        await queue.enqueue("still handled")

        async def handled() -> bool:
            return worker.stats().counts.get("handler/success", 0) == 1

        await eventually(handled, 10, interval=0.05, what="a message handled")
        await redis.delete(workers_key(queue.name))

        async def announced() -> bool:
            return await listed(queue, worker.id) is not None

        await eventually(announced, 10, interval=0.05, what="the worker announced after the repair")
        assert worker.running
    assert f"announcing worker {worker.id} of queue {queue.name!r} failed" in caplog.text


async def test_a_record_no_worker_wrote_is_skipped(
    make_queue: QueueFactory, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await make_queue()
    await redis.zadd(workers_key(queue.name), {"forged": int(time.time() * 1000) + 60_000})
    await redis.set(worker_key(queue.name, "forged"), b"{not json", px=60_000)
    async with AsyncWorker(queue, nothing, presence_interval=60, monitor=None) as worker:
        await wait_for_workers(queue, worker.id)
    assert "skipped a worker presence record" in caplog.text
    await redis.delete(workers_key(queue.name), worker_key(queue.name, "forged"))


async def test_cli_workers_text_and_json(make_queue: QueueFactory, redis_url: str) -> None:
    queue = await make_queue()
    empty = await vermilion("workers", queue.name, url=redis_url)
    assert empty.returncode == 0 and empty.stdout.strip() == f"no live workers on queue {queue.name!r}"
    await queue.enqueue_many(["a", "b"])
    async with AsyncWorker(queue, nothing, concurrency=4, presence_interval=INTERVAL, monitor=None) as worker:

        async def announced_both() -> bool:
            found = await listed(queue, worker.id)
            return found is not None and found.counts.get("handler/success") == 2

        await eventually(announced_both, 10, interval=0.05, what="two successes announced")
        text = await vermilion("workers", queue.name, url=redis_url)
        as_json = await vermilion("workers", queue.name, "--json", url=redis_url)
    assert text.returncode == 0, text
    rows = table_rows(text.stdout)
    assert rows["id"][:7] == ["host", "pid", "concurrency", "in", "flight", "success", "retry"]
    host, pid, concurrency, in_flight, success, retry, failure = rows[worker.id][:7]
    assert (host, pid, concurrency, in_flight) == (socket.gethostname(), str(os.getpid()), "4", "0")
    assert (success, retry, failure) == ("2", "0", "0")
    assert as_json.returncode == 0, as_json
    (entry,) = json.loads(as_json.stdout)
    assert entry["id"] == worker.id and entry["queue"] == queue.name and entry["pid"] == os.getpid()
    assert entry["concurrency"] == 4 and entry["counts"]["handler/success"] == 2
    assert entry["handling_time_ms"]["n"] == 2 and entry["queueing_time_ms"]["n"] == 2
    assert entry["started_at"].endswith("+00:00") and entry["last_seen"] >= entry["started_at"]


# -- presence.lua, called directly ---------------------------------------------------------


async def test_script_branches(make_queue: QueueFactory, redis: aioredis.Redis) -> None:
    """beat, stop and list, and every refusal, on the real script."""
    queue = await make_queue()
    client, index = queue._protocol[0], workers_key(queue.name)
    record = b'{"not": "checked by the script"}'
    now_ms = await presence_calls.beat(client, queue.name, "w1", 5_000, record, prune=False)
    assert await redis.get(worker_key(queue.name, "w1")) == record
    assert 0 < await redis.pttl(worker_key(queue.name, "w1")) <= 5_000
    assert await redis.zscore(index, "w1") == now_ms + 5_000
    # An entry whose record lapsed stays in the index until a prune: by list, or a beat with prune.
    await redis.zadd(index, {"gone": now_ms - 1})
    await presence_calls.beat(client, queue.name, "w2", 5_000, record, prune=False)
    assert await redis.zscore(index, "gone") is not None
    await presence_calls.beat(client, queue.name, "w2", 5_000, record, prune=True)
    assert await redis.zscore(index, "gone") is None
    await redis.zadd(index, {"gone-too": now_ms - 1})
    reply = await client.call_unversioned(
        SCRIPTS["presence"], presence_calls._keys(queue.name), (b"list",), replayable=True
    )
    assert reply[1::2] == [b"w1", b"w2"] and await redis.zscore(index, "gone-too") is None
    assert await presence_calls.withdraw(client, queue.name, "w1") is True
    assert await presence_calls.withdraw(client, queue.name, "w1") is False
    assert await redis.zscore(index, "w1") is None
    for argv, message in [
        ((b"beat", "w3", 0, b"0", record), "ttl_ms must be a whole number"),
        ((b"beat", "w3", "1.5", b"0", record), "ttl_ms must be a whole number"),
        ((b"beat", "w3", 1000, b"0"), "the record is missing"),
        ((b"beat", "", 1000, b"0", record), "the worker id is missing"),
        ((b"dance", "w3"), "unknown op"),
    ]:
        with pytest.raises(ScriptError, match=message):
            await client.call_unversioned(
                SCRIPTS["presence"],
                presence_calls._keys(queue.name, "w3"),
                argv,
                replayable=True,
                cache_head=False,
            )
    assert await redis.exists(worker_key(queue.name, "w3")) == 0
    # An index of the wrong type: refused before the record is written.
    await redis.delete(index)
    await redis.set(index, "a string")
    with pytest.raises(ScriptError):
        await presence_calls.beat(client, queue.name, "w3", 5_000, record, prune=False)
    assert await redis.exists(worker_key(queue.name, "w3")) == 0
    await redis.delete(index, worker_key(queue.name, "w2"))


async def test_beat_after_the_script_cache_was_flushed(
    make_queue: QueueFactory, redis: aioredis.Redis
) -> None:
    """NOSCRIPT: the beat, whose keys change per worker, is sent again as EVAL with the same keys."""
    queue = await make_queue()
    client = queue._protocol[0]
    await presence_calls.beat(client, queue.name, "w1", 5_000, b"{}", prune=False)
    await redis.script_flush()
    await presence_calls.beat(client, queue.name, "w1", 5_000, b"{}", prune=False)
    assert await redis.get(worker_key(queue.name, "w1")) == b"{}"
    await presence_calls.withdraw(client, queue.name, "w1")
