"""The integration examples in docs/examples, run against a real server.

Each test loads the example from its file, points it at a unique queue through
``VERMILION_QUEUE`` and runs the app in process: FastAPI through httpx's
ASGITransport under asgi-lifespan's LifespanManager, aiohttp through its own
TestServer and TestClient.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.helpers import eventually
from vermilion import (
    AsyncWorker,
    Failure,
    Message,
    MessageStatus,
    Queue,
    Success,
    clear_queues,
    queue_names,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def load_example(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``docs/examples/<name>.py`` afresh, under a name of its own."""
    module_name = f"vermilion_example_{name}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)  # for pydantic's forward references
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example_queue(queue: Queue, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Queue:
    """The test's unique queue, which the examples' apps will use (cleared after the test)."""
    monkeypatch.setenv("VERMILION_URL", redis_url)
    monkeypatch.setenv("VERMILION_QUEUE", queue.name)
    return queue


@asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan around an httpx client that calls the app in process."""
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://app") as client,
    ):
        yield client


def unique_email() -> str:
    return f"ada-{uuid.uuid4().hex[:8]}@example.com"


async def wait_for_status(queue: Queue, mid: str, status: MessageStatus) -> None:
    """Wait until the message has that status: its outcome has been acknowledged."""

    async def reached() -> bool:
        return await queue.message_status(mid) == status

    await eventually(reached, what=f"{mid} {status}")


async def wait_for_successes(get_status: Callable[[], Awaitable[dict[str, Any]]], n: int) -> dict[str, Any]:
    """Poll a status endpoint until the worker counts ``n`` successes; return that status."""
    seen: dict[str, Any] = {}

    async def done() -> bool:
        seen.update(await get_status())
        return bool(seen["stats"]["counts"].get("handler/success", 0) >= n)

    await eventually(done, interval=0.01, what=f"{n} handler/success")
    return seen


# -- FastAPI ---------------------------------------------------------------------------------


async def test_fastapi_post_is_handled_by_the_apps_worker(
    example_queue: Queue, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """POST /welcome enqueues (202); the worker started by the lifespan handles it."""
    example = load_example("fastapi_app", monkeypatch)
    caplog.set_level(logging.INFO, logger=example.__name__)
    email = unique_email()
    mid = f"welcome:{email}"

    async def get_status(client: httpx.AsyncClient) -> dict[str, Any]:
        response = await client.get("/status")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    async with asgi_client(example.app) as client:
        response = await client.post("/welcome", json={"email": email})
        assert response.status_code == 202
        assert response.json() == {"ok": True, "mid": mid, "action": "added", "error": None}

        status = await wait_for_successes(lambda: get_status(client), 1)
        assert status["queue"] == example_queue.name
        assert status["running"] is True
        assert status["concurrency"] == 20
        await wait_for_status(example_queue, mid, MessageStatus.DONE_WITH_BACKOFF)
        status = await get_status(client)
        assert status["queue_status"]["nqueued"] == status["queue_status"]["nlocked"] == 0
        assert status["queue_status"]["ndone"] == 1
        worker: AsyncWorker = example.app.state.worker

    assert f"sending a welcome email to {email} (attempt 1)" in caplog.messages
    assert not worker.running  # the lifespan stopped it


async def test_fastapi_duplicate_mid_is_refused_with_409(
    example_queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same address again, while queued, being handled or in its window: 409."""
    example = load_example("fastapi_app", monkeypatch)
    email = unique_email()
    async with asgi_client(example.app) as client:
        first = await client.post("/welcome", json={"email": email})
        again = await client.post("/welcome", json={"email": email.upper()})  # same mid
        assert first.status_code == 202
        assert again.status_code == 409
        body = again.json()
        assert (body["ok"], body["mid"], body["action"]) == (False, f"welcome:{email}", None)
        assert body["error"] in ("already-queued", "locked", "backoff")

        await wait_for_status(example_queue, f"welcome:{email}", MessageStatus.DONE_WITH_BACKOFF)
        late = await client.post("/welcome", json={"email": email})
        assert late.status_code == 409
        assert late.json()["error"] == "backoff"

        invalid = await client.post("/welcome", json={"email": ""})
        assert invalid.status_code == 422


async def test_fastapi_shutdown_stops_the_worker_before_closing_the_queue(
    example_queue: Queue, redis_url: str, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At shutdown a running handler finishes and is acknowledged, and no connection is left open.

    Closing the queue's client while its worker still runs would not fail: redis-py
    reconnects on the next call, so the worker's ack, poll or wait would open a new
    connection that nothing closes. The connections are counted by client name.
    """
    client_name = f"example-{example_queue.name}"
    separator = "&" if "?" in redis_url else "?"
    monkeypatch.setenv("VERMILION_URL", f"{redis_url}{separator}client_name={client_name}")
    example = load_example("fastapi_app", monkeypatch)
    started = asyncio.Event()

    async def slow_send(msg: Message) -> Success:
        started.set()
        await asyncio.sleep(0.2)  # still running when shutdown begins
        return Success(backoff=60)

    async def open_connections() -> int:
        return sum(client.get("name") == client_name for client in await redis.client_list())

    monkeypatch.setattr(example, "send_welcome", slow_send)
    email = unique_email()
    async with asgi_client(example.app) as client:
        response = await client.post("/welcome", json={"email": email})
        assert response.status_code == 202
        await asyncio.wait_for(started.wait(), 5)
        assert await open_connections() >= 1

    assert await example_queue.message_status(f"welcome:{email}") == MessageStatus.DONE_WITH_BACKOFF

    async def all_closed() -> bool:
        return await open_connections() == 0

    await eventually(all_closed, timeout=2.0, interval=0.01, what="the app's connections closed")


# -- aiohttp ---------------------------------------------------------------------------------


async def test_aiohttp_post_is_handled_by_the_apps_worker(
    example_queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aiohttp app: cleanup_ctx runs the worker; 202, then 409 for the same address; 400."""
    example = load_example("aiohttp_app", monkeypatch)
    app: web.Application = example.create_app()
    email = unique_email()
    mid = f"welcome:{email}"

    async with TestClient(TestServer(app)) as client:

        async def get_status() -> dict[str, Any]:
            response = await client.get("/status")
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body

        response = await client.post("/welcome", json={"email": email})
        assert response.status == 202
        assert await response.json() == {"ok": True, "mid": mid, "action": "added", "error": None}

        status = await wait_for_successes(get_status, 1)
        assert status["queue"] == example_queue.name
        assert status["running"] is True

        await wait_for_status(example_queue, mid, MessageStatus.DONE_WITH_BACKOFF)
        again = await client.post("/welcome", json={"email": email})
        assert again.status == 409
        assert (await again.json())["error"] == "backoff"

        invalid = await client.post("/welcome", json={"to": email})
        assert invalid.status == 400
        worker: AsyncWorker = app[example.worker_key]

    assert not worker.running  # cleanup stopped it


# -- one shared pool -------------------------------------------------------------------------


@pytest.fixture
async def welcomed_key(example_queue: Queue, redis: aioredis.Redis) -> AsyncIterator[str]:
    """The shared-pool example's own hash for this queue, deleted after the test."""
    key = f"{example_queue.name}:welcomed"
    yield key
    await redis.delete(key)


async def test_shared_pool_app_uses_one_decoding_client(
    example_queue: Queue, welcomed_key: str, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's decode_responses=True client serves the app, the queue and the worker."""
    example = load_example("shared_pool", monkeypatch)
    email = unique_email()
    async with asgi_client(example.app) as client:
        shared: aioredis.Redis = example.app.state.redis
        assert shared.connection_pool.connection_kwargs["decode_responses"] is True
        assert example.app.state.queue.redis is shared

        response = await client.post("/welcome", json={"email": email})
        assert response.status_code == 202
        assert response.json()["action"] == "added"

        async def welcomed() -> bool:
            response = await client.get(f"/welcomed/{email}")
            return response.json()["sent_at"] is not None

        await eventually(welcomed, interval=0.01, what="welcome sent")
        await wait_for_status(example_queue, f"welcome:{email}", MessageStatus.DONE_WITH_BACKOFF)
        again = await client.post("/welcome", json={"email": email})
        assert again.status_code == 409
        assert again.json()["error"] == "backoff"

    assert await redis.hexists(welcomed_key, email)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_a_decoding_client_can_be_shared(redis_url: str, queue_name: str, protocol: int) -> None:
    """vermilion reads its replies undecoded: binary payloads survive a decode_responses client,
    and a queue given a client leaves it open."""
    content = {"raw": b"\xff\x00\xfe", "text": "Grüße ✉", "n": 2**40}
    handled: list[Any] = []

    async def handle(msg: Message) -> Failure | None:
        handled.append(msg.content)
        return Failure(reason="échec ✗") if msg.mid == "fails" else None

    async with aioredis.Redis.from_url(redis_url, decode_responses=True, protocol=protocol) as client:
        try:
            async with Queue(queue_name, redis=client) as queue:
                assert (await queue.enqueue(content, mid="m")).action == "added"
                assert (await queue.enqueue(content, mid="m")).error == "already-queued"
                assert await queue.message_status("m") == MessageStatus.QUEUED
                assert await queue_names(client, queue_name) == [queue_name]
                [info] = await queue.content()
                assert (info.mid, info.content) == ("m", content)

                async with AsyncWorker(queue, handle, monitor=None) as worker:
                    await queue.enqueue("x", mid="fails")
                    await eventually(lambda: _failed(queue, "fails"), what="failure recorded")
                    await eventually(lambda: _gone(queue, "m"), what="m acknowledged")
                    assert worker.stats().counts["handler/success"] == 1
                assert handled == [content, "x"] or handled == ["x", content]
                [failed] = [info for info in await queue.content() if info.mid == "fails"]
                assert failed.error == "échec ✗"
                assert (await queue.status()).nfailed == 1
            # Leaving the queue did not close the client it was given, nor changed it.
            assert await client.echo("é") == "é"
        finally:
            await clear_queues(client, queue_name)


async def _failed(queue: Queue, mid: str) -> bool:
    return await queue.message_status(mid) == MessageStatus.FAILED


async def _gone(queue: Queue, mid: str) -> bool:
    return await queue.message_status(mid) is None


@pytest.mark.parametrize("name", ["fastapi_app", "aiohttp_app", "shared_pool"])
def test_the_integrations_page_shows_each_example_as_it_is(name: str) -> None:
    """docs/integrations.md includes the examples verbatim: the code read is the code tested."""
    page = (EXAMPLES.parent / "integrations.md").read_text(encoding="utf-8")
    source = (EXAMPLES / f"{name}.py").read_text(encoding="utf-8")
    assert f"```python\n{source}```\n" in page
