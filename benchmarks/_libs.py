"""One adapter per library: the same producer and worker operations for each.

Each adapter imports its library only when built, so that a benchmark
environment needs only the library it runs. The worker's handler is a no-op
that calls ``on_message(payload)`` (a plain function: a counter or a clock
reading), so every measurement is taken in-process, with no Redis call per
message. How each library is configured, and why, is in README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import msgpack
from _common import BATCH, CONCURRENCY, POLL_INTERVAL, QUEUE

OnMessage = Callable[[dict[str, Any]], None]


def _ignore(payload: dict[str, Any]) -> None:
    pass


class Adapter:
    """Producer and worker operations of one library, against one Redis URL."""

    #: messages per call when pre-filling a queue (bulk APIs take more at once)
    fill_batch = BATCH

    def __init__(self, url: str) -> None:
        self.url = url
        self.on_message: OnMessage = _ignore

    async def open(self) -> None:
        """Connect the producer side."""

    async def close(self) -> None:
        """Close the producer side."""

    async def enqueue(self, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    async def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def start_worker(self, on_message: OnMessage) -> None:
        """Start one worker (concurrency 50) in this event loop, in the background."""
        raise NotImplementedError

    async def stop_worker(self) -> None:
        raise NotImplementedError


async def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


class Vermilion(Adapter):
    """``Queue.enqueue`` / ``enqueue_many``; ``AsyncWorker`` with its defaults but concurrency."""

    fill_batch = 1000

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from vermilion import AsyncWorker, Queue

        self._worker_class = AsyncWorker
        self.queue = Queue(QUEUE, url=url)
        self.worker: AsyncWorker | None = None

    async def close(self) -> None:
        await self.queue.aclose()

    async def enqueue(self, payload: dict[str, Any]) -> None:
        await self.queue.enqueue(payload)

    async def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        await self.queue.enqueue_many(payloads)

    async def start_worker(self, on_message: OnMessage) -> None:
        async def handle(message: Any) -> None:
            on_message(message.content)

        self.worker = self._worker_class(self.queue, handle, concurrency=CONCURRENCY)
        await self.worker.start()

    async def stop_worker(self) -> None:
        if self.worker is not None:
            await self.worker.stop(timeout=5.0)


class VermilionMetrics(Vermilion):
    """``vermilion`` with Prometheus worker metrics (``WorkerMetrics`` on a registry of its own)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from prometheus_client import CollectorRegistry

        from vermilion.prometheus import WorkerMetrics

        self.metrics = WorkerMetrics(CollectorRegistry())

    async def start_worker(self, on_message: OnMessage) -> None:
        async def handle(message: Any) -> None:
            on_message(message.content)

        self.worker = self._worker_class(self.queue, handle, concurrency=CONCURRENCY)
        self.metrics.instrument(self.worker)
        await self.worker.start()


class VermilionObserved(VermilionMetrics):
    """``vermilion`` with Prometheus worker metrics and OpenTelemetry tracing on (issue #16's
    overhead measure). SDK config: ``TracerProvider()`` with its default sampler,
    ``ParentBased(ALWAYS_ON)`` (every message sampled), one ``BatchSpanProcessor`` (its
    defaults) and an exporter that discards; the global propagator (W3C trace context and
    baggage). The filling process is traced alike, so every message carries its context."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from vermilion import otel

        otel.instrument(tracer_provider=tracer_provider(self.sampler()))

    @staticmethod
    def sampler() -> Any:
        return None  # the SDK's default


class VermilionObserved10(VermilionObserved):
    """As ``vermilion-observed`` with a typical production sampler,
    ``ParentBased(TraceIdRatioBased(0.1))``: a tenth of the producers' traces are sampled,
    and the worker follows each message's decision."""

    @staticmethod
    def sampler() -> Any:
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        return ParentBased(TraceIdRatioBased(0.1))


def tracer_provider(sampler: Any) -> Any:
    """An SDK tracer provider with ``sampler`` (``None``: the SDK's default), a
    ``BatchSpanProcessor`` with its defaults and an exporter that drops every span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider() if sampler is None else TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    return provider


class Arq(Adapter):
    """``ArqRedis.enqueue_job``; ``Worker(max_jobs=50, poll_delay=1 ms, keep_result=0)``."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from arq.connections import RedisSettings

        self.settings = RedisSettings.from_dsn(url)
        self.pool: Any = None
        self.worker: Any = None
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        from arq import create_pool

        self.pool = await create_pool(self.settings)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()

    async def enqueue(self, payload: dict[str, Any]) -> None:
        await self.pool.enqueue_job("noop", payload)

    async def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        # arq has no bulk enqueue
        await asyncio.gather(*(self.pool.enqueue_job("noop", p) for p in payloads))

    async def start_worker(self, on_message: OnMessage) -> None:
        from arq.worker import Worker, func

        async def noop(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
            on_message(payload)

        self.worker = Worker(
            functions=[func(noop, name="noop")],
            redis_settings=self.settings,
            max_jobs=CONCURRENCY,
            poll_delay=POLL_INTERVAL,
            keep_result=0,
            handle_signals=False,
        )
        self.task = asyncio.create_task(self.worker.async_run())

    async def stop_worker(self) -> None:
        await _cancel(self.task)
        if self.worker is not None:
            await self.worker.close()


class Saq(Adapter):
    """``Queue.enqueue(..., ttl=-1)`` (job deleted when done); ``Worker(concurrency=50)``."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from saq import Queue

        self.queue = Queue.from_url(url, name=QUEUE)
        self.worker: Any = None
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue(self, payload: dict[str, Any]) -> None:
        # ttl=-1 deletes the job when it completes: no result kept (0 would keep it forever)
        await self.queue.enqueue("noop", payload=payload, ttl=-1)

    async def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        # saq has no bulk enqueue (map/batch still send one call per job)
        await asyncio.gather(*(self.enqueue(p) for p in payloads))

    async def start_worker(self, on_message: OnMessage) -> None:
        from saq import Worker

        async def noop(ctx: Any, *, payload: dict[str, Any]) -> None:
            on_message(payload)

        await self.queue.connect()
        self.worker = Worker(self.queue, functions=[("noop", noop)], concurrency=CONCURRENCY)
        self.task = asyncio.create_task(self.worker.start())

    async def stop_worker(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        await _cancel(self.task)


class Taskiq(Adapter):
    """``RedisStreamBroker(xread_count=50)``, no result backend; receiver with 50 async tasks."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from taskiq_redis import RedisStreamBroker

        self.broker = RedisStreamBroker(url, queue_name=QUEUE, xread_count=CONCURRENCY)

        async def noop(payload: dict[str, Any]) -> None:
            self.on_message(payload)

        self.task = self.broker.register_task(noop, task_name="noop")
        self.receiver: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.broker.startup()

    async def close(self) -> None:
        await self.broker.shutdown()

    async def enqueue(self, payload: dict[str, Any]) -> None:
        await self.task.kiq(payload)

    async def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        # taskiq has no bulk kick
        await asyncio.gather(*(self.task.kiq(p) for p in payloads))

    async def start_worker(self, on_message: OnMessage) -> None:
        from taskiq.api import run_receiver_task

        self.on_message = on_message
        self.broker.is_worker_process = True
        await self.broker.startup()
        self.receiver = asyncio.create_task(run_receiver_task(self.broker, max_async_tasks=CONCURRENCY))

    async def stop_worker(self) -> None:
        await _cancel(self.receiver)
        await self.broker.shutdown()


class Streaq(Adapter):
    """``task.enqueue`` / ``Worker.enqueue_many``; ``Worker(concurrency=50)``, task ``ttl=0``."""

    fill_batch = 1000

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from streaq import Worker

        self.worker = Worker(redis_url=url, queue_name=QUEUE, concurrency=CONCURRENCY, handle_signals=False)

        async def noop(payload: dict[str, Any]) -> None:
            self.on_message(payload)

        self.noop: Any = self.worker.task(ttl=0)(noop)  # ttl=0: no result stored
        self.stack = contextlib.AsyncExitStack()
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.stack.enter_async_context(self.worker)  # connects, loads the Lua library

    async def close(self) -> None:
        await self.stack.aclose()

    async def enqueue(self, payload: dict[str, Any]) -> None:
        await self.noop.enqueue(payload)

    async def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        await self.worker.enqueue_many([self.noop.enqueue(p) for p in payloads])

    async def start_worker(self, on_message: OnMessage) -> None:
        self.on_message = on_message
        self.task = asyncio.create_task(self.worker.run_async())

    async def stop_worker(self) -> None:
        await _cancel(self.task)


_BULL_JOB_OPTIONS = {"removeOnComplete": True, "removeOnFail": True}


class Bullmq(Adapter):
    """``Queue.add`` / ``addBulk`` with removeOnComplete; ``Worker(concurrency=50)``."""

    fill_batch = 1000

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.queue: Any = None
        self.worker: Any = None

    async def open(self) -> None:
        from bullmq import Queue

        self.queue = Queue(QUEUE, {"connection": self.url})

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.close()

    async def enqueue(self, payload: dict[str, Any]) -> None:
        await self.queue.add("noop", payload, _BULL_JOB_OPTIONS)

    async def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        await self.queue.addBulk([{"name": "noop", "data": p, "opts": _BULL_JOB_OPTIONS} for p in payloads])

    async def start_worker(self, on_message: OnMessage) -> None:
        from bullmq import Worker

        async def process(job: Any, token: str) -> None:
            on_message(job.data)

        # autorun: the constructor starts the worker's loop in the background
        self.worker = Worker(
            QUEUE,
            process,
            {"connection": self.url, "concurrency": CONCURRENCY, **_BULL_JOB_OPTIONS},
        )

    async def stop_worker(self) -> None:
        if self.worker is not None:
            await self.worker.close()


class BareList(Adapter):
    """The ceiling: LPUSH / RPOP with a count (BRPOP when empty), msgpack, no guarantees."""

    fill_batch = 1000

    def __init__(self, url: str) -> None:
        super().__init__(url)
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(url)
        self.key = f"{QUEUE}:list"
        self.task: asyncio.Task[None] | None = None
        #: BRPOP's timeout in seconds when the list is empty; 0 blocks for ever. The
        #: footprint's idle phase sets one, for an idle consumer that wakes up now and then.
        self.block_timeout = 0.0

    async def close(self) -> None:
        await self.redis.aclose()

    async def enqueue(self, payload: dict[str, Any]) -> None:
        await self.redis.lpush(self.key, msgpack.packb(payload))

    async def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        await self.redis.lpush(self.key, *[msgpack.packb(p) for p in payloads])

    async def start_worker(self, on_message: OnMessage) -> None:
        self.task = asyncio.create_task(self._work(on_message))

    async def _work(self, on_message: OnMessage) -> None:
        async def handle(raw: bytes) -> None:
            on_message(msgpack.unpackb(raw))

        while True:
            # Up to 50 at once, run concurrently; block when empty (a BRPOP loop if
            # block_timeout is set: one BRPOP per timeout while idle).
            items: Any = await self.redis.rpop(self.key, CONCURRENCY)
            while not items:
                popped: Any = await self.redis.brpop([self.key], timeout=self.block_timeout)
                if popped is not None:
                    items = [popped[1]]
            await asyncio.gather(*(handle(raw) for raw in items))

    async def stop_worker(self) -> None:
        await _cancel(self.task)


ADAPTERS: dict[str, type[Adapter]] = {
    "vermilion": Vermilion,
    "vermilion-metrics": VermilionMetrics,
    "vermilion-observed": VermilionObserved,
    "vermilion-observed-10pct": VermilionObserved10,
    "arq": Arq,
    "saq": Saq,
    "taskiq": Taskiq,
    "streaq": Streaq,
    "bullmq": Bullmq,
    "bare-list": BareList,
}


def adapter(lib: str, url: str) -> Adapter:
    return ADAPTERS[lib](url)
