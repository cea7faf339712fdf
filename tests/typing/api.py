"""Every public signature, used as a user would. Type-checked (mypy --strict), never run.

A change that breaks a typed user of the API fails the `typecheck` session.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from vermilion import (
    AsyncWorker,
    ConfigurationError,
    EnqueueResult,
    FailedMessage,
    Failure,
    JsonSerializer,
    Message,
    MessageInfo,
    MessageStatus,
    MsgpackSerializer,
    OutcomeUnknownError,
    PollInfo,
    ProtocolError,
    Queue,
    QueueSettings,
    QueueSizeMonitor,
    QueueStatus,
    RateLimited,
    ReplayResult,
    ReplicationError,
    Retry,
    ScriptError,
    SerializationError,
    Serializer,
    Success,
    Summary,
    VermilionConnectionError,
    VermilionError,
    WorkerPresence,
    WorkerStats,
    WorkerStatus,
    clear_queues,
    exponential_idle_backoff,
    queue_names,
    queue_shards,
    set_min_log_level,
)


async def handler(message: Message) -> Success | Retry | Failure | None:
    content: Any = message.content
    mid: str = message.mid
    queue: str = message.queue
    attempt: int = message.attempt
    lock_timeout: float = message.lock_timeout
    age: float = message.age
    token: int = message.lease_token
    del content, mid, queue, lock_timeout, age, token
    if attempt == 1:
        return Retry(backoff=1.5)
    if attempt == 2:
        return Retry(backoff=timedelta(seconds=2))
    if attempt == 3:
        return Failure(reason="gave up")
    if attempt == 4:
        return RateLimited(backoff=timedelta(seconds=30))
    return Success(backoff=60) if message.mid.startswith("dedup:") else None


async def only_success(message: Message) -> None:
    return None


def on_exception(exc: BaseException, message: Message) -> Success | Retry | Failure:
    return Retry(backoff=5.0) if isinstance(exc, ConnectionError) else Failure(str(exc))


def on_poll(poll: PollInfo) -> None:
    size: int = poll.queue_size
    handed_out: int = poll.handed_out
    reclaimed: int = poll.reclaimed
    empty: int = poll.empty_polls
    name: str = poll.queue
    del size, handed_out, reclaimed, empty, name


class UpperSerializer:
    def dumps(self, content: Any, /) -> bytes:
        return str(content).upper().encode()

    def loads(self, data: bytes, /) -> Any:
        return data.decode()


async def producer(client: aioredis.Redis) -> None:
    serializer: Serializer = UpperSerializer()
    async with Queue("emails", "redis://127.0.0.1:6379/0") as queue:
        name: str = queue.name
        redis_client: aioredis.Redis = queue.redis
        result: EnqueueResult = await queue.enqueue(
            {"to": "a@b.c"},
            mid="welcome:42",
            delay=timedelta(seconds=3),
            lock_timeout=30.0,
            can_update=True,
            can_requeue=False,
            reset_delay=False,
        )
        ok: bool = result.ok
        action: str | None = result.action
        error: str | None = result.error
        results: list[EnqueueResult] = await queue.enqueue_many([1, 2, 3], mids=["a", None, "c"], delay=1)
        urgent: EnqueueResult = await queue.enqueue("page", priority=9)
        settings: QueueSettings = await queue.configure(max_size=1000, rate_limit=100, rate_interval=1.0)
        bound: int | None = settings.max_size
        per_interval: int | None = settings.rate_limit
        interval: float | None = settings.rate_interval
        await queue.configure(max_size=None, rate_limit=None)
        del urgent, bound, per_interval, interval
        status: MessageStatus | None = await queue.message_status("welcome:42")
        counts: QueueStatus = await queue.status()
        lag: float = counts.lag
        size: int = await queue.size()
        listing: list[MessageInfo] = await queue.content()
        removed: int = await queue.clear()
        dropped: int = counts.nfailed_dropped
        failures: list[FailedMessage] = await queue.failed(limit=10, offset=0)
        when: datetime = failures[0].failed_at
        replays: list[ReplayResult] = await queue.replay("a", "b")
        why: str | None = replays[0].error
        replayed: int = await queue.replay_failed()
        purged: int = await queue.purge_failed("a") + await queue.purge_failed()
        del name, redis_client, ok, action, error, results, status, lag, size, listing, removed
        del dropped, when, why, replayed, purged
    shared = Queue(
        "events",
        redis=client,
        serializer=serializer,
        max_payload_bytes=1024,
        failure_history=10,
        failure_history_bytes=1 << 20,
    )
    json_queue = Queue("json", serializer=JsonSerializer())
    msgpack_queue = Queue("msgpack", serializer=MsgpackSerializer())
    await shared.aclose()
    await json_queue.aclose()
    await msgpack_queue.aclose()
    names: list[str] = await queue_names(client, pattern="e*")
    cleared: int = await clear_queues(client, "emails", "events")
    del names, cleared


async def scaled_out(cluster: aioredis.RedisCluster) -> None:
    on_cluster = Queue("emails", cluster, replicas=1, replica_timeout=timedelta(seconds=1))
    by_url = Queue("emails", "redis+cluster://10.0.0.1:7000,10.0.0.2:7000", replicas=1)
    sharded = Queue("events", cluster, shards=await queue_shards(cluster, "events"))
    count: int = sharded.shards
    del count
    via_sentinel = Queue("emails", "redis+sentinel://10.0.0.5:26379/mymaster")
    client: aioredis.Redis | aioredis.RedisCluster = on_cluster.client
    try:
        await on_cluster.enqueue("x", replicas=2, replica_timeout=0.5)
        await on_cluster.enqueue_many(["x"], replicas=0)
    except ReplicationError as exc:
        wanted: int = exc.replicas
        confirmed: int = exc.acknowledged
        mids: tuple[str, ...] = exc.mids
        stored: list[EnqueueResult] = exc.results
        del wanted, confirmed, mids, stored
    names: list[str] = await queue_names(cluster)
    cleared: int = await clear_queues(cluster, "emails")
    for queue in (on_cluster, by_url, via_sentinel, sharded):
        await queue.aclose()
    del client, names, cleared


async def consumer(queue: Queue) -> None:
    worker = AsyncWorker(
        queue,
        handler,
        concurrency=20,
        lock_timeout=timedelta(seconds=30),
        idle_backoff=exponential_idle_backoff,
        throttle=lambda queue_size: 0.05 if queue_size > 100 else None,
        handler_timeout=60.0,
        max_attempts=5,
        monitor=QueueSizeMonitor(max_size=5000, interval=timedelta(hours=1)),
        on_exception=on_exception,
        presence_interval=timedelta(seconds=10),
    )
    worker_id: str = worker.id
    await worker.start()
    await worker.stop(timeout=10)
    async with AsyncWorker(queue, only_success, idle_backoff=2.0, monitor=on_poll) as running:
        status: WorkerStatus = await running.status()
        stats: WorkerStats = running.stats()
        handling: Summary | None = status.stats.handling_time_ms
        p99: float | None = None if handling is None else handling.p99
        plain: dict[str, Any] = status.as_dict()
        counts: dict[str, int] = stats.counts
        queue_status: QueueStatus | None = status.queue_status
        in_flight: int = status.in_flight
        del p99, plain, counts, queue_status, in_flight
        workers: list[WorkerPresence] = await queue.workers()
        for presence in workers:
            seen: datetime = presence.last_seen
            timing: Summary | None = presence.handling_time_ms
            del seen, timing
    del worker_id
    AsyncWorker(queue, handler, presence_interval=None)
    await AsyncWorker(queue, handler, monitor=None).run()


def errors() -> None:
    try:
        pass
    except OutcomeUnknownError as exc:
        mids: tuple[str, ...] = exc.mids
        del mids
    except (VermilionConnectionError, ScriptError, ProtocolError, SerializationError, ConfigurationError):
        pass
    except VermilionError:
        pass
    set_min_log_level("debug")
    set_min_log_level(logging.INFO)


def web_dashboard(client: aioredis.Redis) -> None:
    from starlette.applications import Starlette

    from vermilion import dashboard

    served: Starlette = dashboard.app()
    mounted: Starlette = dashboard.app(
        redis=client,
        actions=True,
        token="x" * 32,
        serializer=JsonSerializer(),
        interval=0.5,
        history=300.0,
        allowed_hosts=["queues.example.com", "*.ops.example.com"],
    )
    header: str = dashboard.TOKEN_HEADER
    del served, mounted, header
