"""Fixtures of the reliability suite: fault servers, worker processes, ground truth.

Every test here starts its own servers on free ports (never the shared 6379),
so the suite runs once per CI run, not once per server under test. Sizes:
the CI size by default, the full size with VERMILION_CHAOS=full.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import WorkerProcess
from tests.reliability.proxy import FaultProxy
from tests.reliability.servers import FaultServer, binary


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


ServerFactory = Callable[..., FaultServer]
WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def fault_server() -> Iterator[ServerFactory]:
    """Start servers: fault_server("redis" | "valkey", appendonly=..., config=...)."""
    started: list[FaultServer] = []

    def start(kind: str = "redis", **options: Any) -> FaultServer:
        if binary(kind) is None:
            pytest.skip(f"no {kind} server binary here")
        server = FaultServer(kind, **options)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def truth_log(tmp_path: Path) -> Path:
    """The ground-truth file every worker process of the test appends to."""
    return tmp_path / "truth.log"


@pytest.fixture
def worker_process(truth_log: Path) -> Iterator[WorkerFactory]:
    """Start worker processes: worker_process(url=..., queue=..., concurrency=..., ...)."""
    started: list[WorkerProcess] = []

    def start(**config: Any) -> WorkerProcess:
        worker = WorkerProcess(truth_log, **config)
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=10)


@pytest.fixture
async def fault_proxy() -> AsyncIterator[Callable[[int], Any]]:
    """Start proxies in front of a port: `proxy = await fault_proxy(server.port)`."""
    proxies: list[FaultProxy] = []

    async def start(port: int) -> FaultProxy:
        proxy = FaultProxy(port)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        await proxy.close()
