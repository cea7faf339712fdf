"""``vermilion.prometheus``: queue gauges and worker metrics, scraped over real HTTP and parsed back."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import QueueFactory
from tests.helpers import eventually
from tests.integration.test_cli import WorkerProcess, app_dir, vermilion
from vermilion import AsyncWorker, Failure, Message, Retry
from vermilion.prometheus import QueueCollector, WorkerMetrics, serve_metrics

__all__ = ["app_dir"]  # the fixture, imported for the CLI test

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """GET /metrics and parse it with prometheus_client's own parser: {(sample, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scraped(port: int) -> Samples:
    return await asyncio.to_thread(scrape, port)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def registry() -> Iterator[tuple[CollectorRegistry, int]]:
    """A registry of its own (tests must not share the process-wide one) served on a free port."""
    registry = CollectorRegistry()
    server, thread = serve_metrics(0, registry=registry)
    yield registry, server.server_port
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
async def collector() -> AsyncIterator[list[QueueCollector]]:
    """Collectors a test made, closed after it."""
    made: list[QueueCollector] = []
    yield made
    for one in made:
        await asyncio.to_thread(one.close)


async def handler(message: Message) -> Retry | Failure | None:
    kind = message.content
    if kind == "fail":
        return Failure("asked to")
    if kind == "retry" and message.attempt == 1:
        return Retry()
    if kind == "slow":
        await asyncio.sleep(0.5)  # longer than a third of the 0.3 s lease: renewed
    return None


async def test_worker_and_queue_metrics_over_http(
    make_queue: QueueFactory,
    redis_url: str,
    registry: tuple[CollectorRegistry, int],
    collector: list[QueueCollector],
) -> None:
    registry_, port = registry
    queue = await make_queue()
    other = await make_queue()
    metrics = WorkerMetrics(registry_)
    queue_collector = QueueCollector(redis_url, [queue.name, other.name])
    collector.append(queue_collector)
    registry_.register(queue_collector)
    await queue.enqueue_many(["ok"] * 5 + ["fail"] * 2 + ["retry", "slow"])
    await queue.enqueue("later", delay=60)
    await other.enqueue_many(["waiting"] * 3)
    worker = AsyncWorker(queue, handler, concurrency=4, lock_timeout=0.3, monitor=None)
    metrics.instrument(worker)
    metrics.instrument(worker)  # once is enough: events are not counted twice
    async with worker:

        async def all_handled() -> bool:
            status = await queue.status()
            return status.nqueued + status.nlocked == 0 and status.nbackoff == 1 and status.nfailed == 2

        await eventually(all_handled, 15, interval=0.02, what="every message handled")
        await eventually(lambda: _acknowledged(worker), 5, what="every outcome acknowledged")
        samples = await scraped(port)

    q = queue.name
    handled = "vermilion_worker_handled_messages_total"
    assert value(samples, handled, queue=q, outcome="success") == 7  # 5 ok, the retry's 2nd run, slow
    assert value(samples, handled, queue=q, outcome="retry") == 1
    assert value(samples, handled, queue=q, outcome="failure") == 2
    assert value(samples, "vermilion_worker_handling_seconds_count", queue=q) == 10
    assert value(samples, "vermilion_worker_handling_seconds_bucket", queue=q, le="0.25") == 9  # slow: 0.5 s
    assert value(samples, "vermilion_worker_handling_seconds_sum", queue=q) >= 0.5
    assert value(samples, "vermilion_worker_queueing_seconds_count", queue=q) == 9  # first hand-outs
    assert value(samples, "vermilion_worker_lease_renewals_total", queue=q) >= 1
    assert value(samples, "vermilion_worker_stale_acks_total", queue=q) == 0
    assert value(samples, "vermilion_worker_poll_errors_total", queue=q) == 0
    # Queue gauges, read from Redis at the scrape.
    expected = {
        q: {"ready": 0, "delayed": 1, "locked": 0, "done": 0, "failed": 2},
        other.name: {"ready": 3, "delayed": 0, "locked": 0, "done": 0, "failed": 0},
    }
    for name, gauges in expected.items():
        for state, count in gauges.items():
            assert value(samples, f"vermilion_queue_{state}_messages", queue=name) == count, (name, state)
    assert value(samples, "vermilion_queue_lag_seconds", queue=q) == 0
    assert value(samples, "vermilion_queue_lag_seconds", queue=other.name) >= 0
    assert value(samples, "vermilion_redis_up") == 1


async def test_two_metrics_on_one_worker_count_alike(
    make_queue: QueueFactory, registry: tuple[CollectorRegistry, int]
) -> None:
    """Each WorkerMetrics attached to a worker sees all its events, the second as the first."""
    registry_, port = registry
    queue = await make_queue()
    first = WorkerMetrics(registry_)
    other_registry = CollectorRegistry()
    second = WorkerMetrics(other_registry)
    worker = AsyncWorker(queue, handler, idle_backoff=0.05, monitor=None)
    first.instrument(worker)
    async with worker:
        second.instrument(worker)  # attached to a running worker
        await queue.enqueue_many(["ok"] * 3 + ["fail"])

        async def all_handled() -> bool:
            return (await queue.status()).nfailed == 1 and worker.stats().counts.get("handler/success") == 3

        await eventually(all_handled, 10, interval=0.02, what="every message handled")
        await eventually(lambda: _acknowledged(worker), 5, what="every outcome acknowledged")
        samples = await scraped(port)
    handled = "vermilion_worker_handled_messages_total"
    q = queue.name
    assert value(samples, handled, queue=q, outcome="success") == 3
    assert value(samples, handled, queue=q, outcome="failure") == 1
    assert value(samples, "vermilion_worker_handling_seconds_count", queue=q) == 4
    # The second, attached later but before the first message, saw the same events.
    labels = {"queue": q, "outcome": "success"}
    assert other_registry.get_sample_value(handled, labels) == 3
    assert other_registry.get_sample_value("vermilion_worker_handling_seconds_count", {"queue": q}) == 4


async def _acknowledged(worker: AsyncWorker) -> bool:
    return worker._outcomes_acknowledged()


async def test_stale_acks_and_poll_errors_are_counted(
    make_queue: QueueFactory,
    redis: aioredis.Redis,
    registry: tuple[CollectorRegistry, int],
) -> None:
    registry_, port = registry
    queue = await make_queue()
    metrics = WorkerMetrics(registry_)
    started, release = asyncio.Event(), asyncio.Event()

    async def held(message: Message) -> None:
        started.set()
        await release.wait()

    worker = AsyncWorker(queue, held, idle_backoff=0.05, monitor=None)
    metrics.instrument(worker)
    async with worker:
        await queue.enqueue("x")
        await asyncio.wait_for(started.wait(), 10)
        await queue.clear()  # the lease is gone: its ack is stale
        release.set()

        async def stale() -> bool:
            return worker.stats().counts.get("ack/stale", 0) == 1

        await eventually(stale, 10, what="the stale ack")
        ready_key = queue._protocol[1].key("ready")
        await redis.set(ready_key, "not a list")  # dequeue refuses the queue: a poll error

        async def poll_failed() -> bool:
            return worker.stats().counts.get("poll/error", 0) >= 1

        await eventually(poll_failed, 10, what="a failed poll")
        await redis.delete(ready_key)
        samples = await scraped(port)
    assert value(samples, "vermilion_worker_stale_acks_total", queue=queue.name) == 1
    assert (
        value(samples, "vermilion_worker_poll_errors_total", queue=queue.name)
        == worker.stats().counts["poll/error"]
    )
    assert value(samples, "vermilion_worker_handled_messages_total", queue=queue.name, outcome="success") == 1


async def test_every_queue_by_default_and_redis_down(
    make_queue: QueueFactory,
    redis_url: str,
    registry: tuple[CollectorRegistry, int],
    collector: list[QueueCollector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """queues=None reports every queue with data; an unreachable Redis reports vermilion_redis_up 0."""
    registry_, port = registry
    queue = await make_queue()
    await queue.enqueue_many([1, 2])
    everything = QueueCollector(redis_url)
    collector.append(everything)
    registry_.register(everything)
    samples = await scraped(port)
    assert value(samples, "vermilion_queue_ready_messages", queue=queue.name) == 2
    assert value(samples, "vermilion_redis_up") == 1
    registry_.unregister(everything)

    down = QueueCollector("redis://127.0.0.1:1/0", [queue.name], timeout=2)
    collector.append(down)
    registry_.register(down)  # describe() reads nothing: registering needs no server
    samples = await scraped(port)
    assert value(samples, "vermilion_redis_up") == 0
    assert not any(name.startswith("vermilion_queue_") for name, _ in samples)
    assert "reading queue metrics from Redis failed" in caplog.text


async def test_a_queue_with_a_live_worker_is_reported_when_empty(
    make_queue: QueueFactory,
    redis_url: str,
    registry: tuple[CollectorRegistry, int],
    collector: list[QueueCollector],
) -> None:
    """queues=None also reports a queue whose workers keep up (it holds no key but `meta` and
    their presence between messages): its gauges read 0 instead of vanishing from the scrape."""
    registry_, port = registry
    queue = await make_queue()
    everything = QueueCollector(redis_url)
    collector.append(everything)
    registry_.register(everything)

    async def announced() -> bool:
        return bool(await queue.workers())

    async with AsyncWorker(queue, handler, presence_interval=60, monitor=None):
        await eventually(announced, 10, interval=0.02, what="the worker announced")
        samples = await scraped(port)
        assert value(samples, "vermilion_queue_ready_messages", queue=queue.name) == 0
    samples = await scraped(port)
    assert not any(dict(labels).get("queue") == queue.name for _, labels in samples)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="queue name"):
        QueueCollector(queues=["bad name"])
    with pytest.raises(ValueError, match="timeout"):
        QueueCollector(timeout=0)
    with pytest.raises(TypeError, match="AsyncWorker"):
        WorkerMetrics(CollectorRegistry()).instrument(object())  # type: ignore[arg-type]


def test_import_vermilion_does_not_import_prometheus_client() -> None:
    code = "import sys, vermilion; assert 'prometheus_client' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_cli_worker_serves_metrics(make_queue: QueueFactory, redis_url: str, app_dir: Path) -> None:
    """``vermilion worker --metrics-port`` serves the worker's counters and its queue's gauges."""
    queue = await make_queue()
    port = free_port()
    worker = await WorkerProcess.start(app_dir, redis_url, queue.name, "--metrics-port", str(port))
    try:
        await worker.wait_for_stderr(f"serving Prometheus metrics at http://127.0.0.1:{port}/metrics")
        await worker.wait_for_stderr("worker started")
        await queue.enqueue_many([{"n": i} for i in range(4)])
        await queue.enqueue({"n": 9}, delay=60)
        handled = "vermilion_worker_handled_messages_total"

        async def four_handled() -> bool:
            samples = await scraped(port)
            return value(samples, handled, queue=queue.name, outcome="success") == 4

        await eventually(four_handled, 15, interval=0.1, what="four successes scraped")
        samples = await scraped(port)
        worker.process.terminate()
        assert await worker.exit_code() == 0, worker.stderr
    finally:
        await worker.close()
    assert value(samples, "vermilion_worker_handling_seconds_count", queue=queue.name) == 4
    assert value(samples, "vermilion_queue_delayed_messages", queue=queue.name) == 1
    assert value(samples, "vermilion_queue_ready_messages", queue=queue.name) == 0
    assert value(samples, "vermilion_redis_up") == 1


async def test_cli_metrics_port_errors(make_queue: QueueFactory, redis_url: str, app_dir: Path) -> None:
    queue = await make_queue()
    bad = await vermilion(
        "worker", "jobs.tasks:handle", "--queue", queue.name, "--metrics-port", "0", url=None
    )
    assert bad.returncode == 2 and "must be a port from 1 to 65535" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = await vermilion(
            *["worker", "jobs.tasks:handle", "--queue", queue.name, "--metrics-port", str(port)],
            url=redis_url,
            cwd=app_dir,
        )
    assert run.returncode == 1, run
    assert f"vermilion: cannot serve metrics on 127.0.0.1:{port}" in run.stderr


async def test_cli_metrics_port_without_the_extra(
    make_queue: QueueFactory, redis_url: str, app_dir: Path, tmp_path: Path
) -> None:
    """Without prometheus-client (shadowed here by a package that cannot be imported): a usage error."""
    queue = await make_queue()
    shadow = tmp_path / "shadow" / "prometheus_client"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("No module named prometheus_client")\n')
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
    run = await vermilion(
        *["worker", "jobs.tasks:handle", "--queue", queue.name, "--metrics-port", str(free_port())],
        url=redis_url,
        cwd=app_dir,
        env=env,
    )
    assert run.returncode == 2, run
    assert "--metrics-port needs prometheus-client" in run.stderr
    assert "pip install 'vermilion[prometheus]'" in run.stderr
