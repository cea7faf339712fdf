"""The dashboard's HTTP interface, through httpx against the ASGI app and a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import QueueFactory
from tests.integration.test_examples import EXAMPLES, asgi_client, load_example
from vermilion import (
    AsyncWorker,
    Failure,
    JsonSerializer,
    Message,
    MessageStatus,
    Queue,
    Success,
    VermilionConnectionError,
    dashboard,
    queue_names,
)
from vermilion._messages import Outcome

TOKEN = "a-test-token-of-32-characters-xx"
Client = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client_for(redis_url: str) -> Client:
    """Serve a dashboard (with its lifespan) on the test server: ``async with client_for(...) as client``."""

    @contextlib.asynccontextmanager
    async def serve(**options: Any) -> AsyncIterator[httpx.AsyncClient]:
        async with LifespanManager(dashboard.app(redis_url, interval=0.1, **options)) as manager:
            transport = httpx.ASGITransport(manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield client

    return serve


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def overview_row(client: httpx.AsyncClient, name: str) -> dict[str, Any] | None:
    answer = await client.get("/api/overview")
    assert answer.status_code == 200
    rows = [row for row in answer.json()["queues"] if row["name"] == name]
    return rows[0] if rows else None


async def test_the_overview_lists_a_queue_with_its_counts(client_for: Client, queue: Queue) -> None:
    await queue.enqueue_many(["a", "b", "c"])
    await queue.enqueue("later", delay=60)
    async with client_for() as client:

        async def listed() -> bool:
            return await overview_row(client, queue.name) is not None

        await wait_for(listed)
        row = await overview_row(client, queue.name)
        assert row is not None
        assert (row["ready"], row["locked"], row["backoff"], row["done"], row["failed"], row["dropped"]) == (
            3,
            0,
            1,
            0,
            0,
            0,
        )
        assert row["lag"] >= 0


async def test_a_sharded_queue_is_one_row_with_its_shards_summed(
    client_for: Client, make_queue: QueueFactory
) -> None:
    queue = await make_queue(shards=3)
    await queue.enqueue_many(range(12), mids=[f"m{i}" for i in range(12)])
    async with client_for() as client:

        async def listed() -> bool:
            return await overview_row(client, queue.name) is not None

        await wait_for(listed)
        row = await overview_row(client, queue.name)
        assert row is not None and row["ready"] == 12
        answer = await client.get("/api/overview")
        assert [r["name"] for r in answer.json()["queues"]].count(queue.name) == 1


async def test_a_queue_has_series_that_grow_with_each_sample(client_for: Client, queue: Queue) -> None:
    await queue.enqueue("x")
    async with client_for() as client:

        async def points() -> int:
            answer = await client.get(f"/api/queues/{queue.name}")
            return len(answer.json()["series"]["t"]) if answer.status_code == 200 else 0

        async def sampled_a_few() -> bool:
            return await points() >= 3

        await wait_for(sampled_a_few)
        detail = (await client.get(f"/api/queues/{queue.name}")).json()
        series = detail["series"]
        assert set(series) >= {
            "t",
            "enqueued",
            "handled",
            "failed",
            "ready",
            "locked",
            "backoff",
            "lag",
            "p50",
            "p99",
        }
        assert series["ready"][-1] == 1
        assert series["t"] == sorted(series["t"])
        assert detail["status"]["name"] == queue.name
        assert detail["workers"] == []


async def test_an_unknown_queue_is_404_and_a_bad_page_size_400(client_for: Client, queue: Queue) -> None:
    await queue.enqueue("x")
    async with client_for() as client:
        assert (await client.get("/api/queues/no-such-queue-here")).status_code == 404
        assert (await client.get("/api/queues/no-such-queue-here/failed")).status_code == 404

        async def listed() -> bool:
            return await overview_row(client, queue.name) is not None

        await wait_for(listed)
        for query in ("limit=0", "limit=501", "limit=x", "offset=-1"):
            answer = await client.get(f"/api/queues/{queue.name}/failed?{query}")
            assert answer.status_code == 400, query
            assert "must be" in answer.json()["error"]


async def test_the_page_escapes_what_it_renders_and_carries_a_strict_policy(
    client_for: Client, queue: Queue
) -> None:
    await queue.enqueue("x")
    async with client_for() as client:

        async def listed() -> bool:
            return await overview_row(client, queue.name) is not None

        await wait_for(listed)
        page = await client.get("/")
        assert page.status_code == 200
        assert f'data-queue="{queue.name}"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "'unsafe-inline'" not in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "actions are off" in page.text


@pytest.mark.parametrize(
    "path", ["/static/dashboard.js", "/static/uPlot.iife.min.js", "/static/uPlot.LICENSE"]
)
async def test_the_static_files_are_served_from_the_package(client_for: Client, path: str) -> None:
    async with client_for() as client:
        answer = await client.get(path)
        assert answer.status_code == 200 and answer.content


# -- actions -------------------------------------------------------------------


def action_headers(token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", **extra}
    if token is not None:
        headers[dashboard.TOKEN_HEADER] = token
    return headers


@pytest.mark.parametrize("action", ["replay", "purge-failed"])
async def test_actions_are_off_by_default(client_for: Client, queue: Queue, action: str) -> None:
    async with client_for() as client:
        answer = await client.post(
            f"/api/queues/{queue.name}/{action}", json={"all": True}, headers=action_headers()
        )
        assert answer.status_code == 403
        assert "disabled" in answer.json()["error"]


@pytest.mark.parametrize("action", ["replay", "purge-failed"])
@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        (action_headers(token=None), 401, "token"),
        (action_headers(token="x" * 32), 401, "token"),
        (action_headers(token=TOKEN[:-1]), 401, "token"),
        (action_headers(**{"Sec-Fetch-Site": "cross-site"}), 403, "cross-site"),
        (action_headers(**{"Sec-Fetch-Site": "same-site"}), 403, "cross-site"),
        (action_headers(Origin="http://evil.example"), 403, "cross-site"),
        ({dashboard.TOKEN_HEADER: TOKEN, "Content-Type": "text/plain"}, 415, "JSON"),
    ],
)
async def test_actions_are_refused_without_the_token_or_from_another_site(
    client_for: Client,
    make_queue: QueueFactory,
    action: str,
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    queue = await make_queue()
    mid = (await queue.enqueue("x")).mid
    async with client_for(actions=True, token=TOKEN) as client:
        answer = await client.post(
            f"/api/queues/{queue.name}/{action}", content=b'{"all": true}', headers=headers
        )
        assert answer.status_code == status
        assert error in answer.json()["error"]
        assert (await queue.status()).nqueued == 1
        assert await queue.message_status(mid) is not None


async def test_an_action_from_the_same_origin_passes_the_guard(client_for: Client, queue: Queue) -> None:
    await queue.enqueue("x")
    async with client_for(actions=True, token=TOKEN) as client:

        async def listed() -> bool:
            return await overview_row(client, queue.name) is not None

        await wait_for(listed)
        headers = action_headers(Origin="http://testserver", **{"Sec-Fetch-Site": "same-origin"})
        for body in (b"[1]", b"not json", b'{"mids": []}', b'{"mids": [1]}', b'{"all": "yes"}'):
            answer = await client.post(f"/api/queues/{queue.name}/replay", content=body, headers=headers)
            assert answer.status_code == 400, body
        answer = await client.post(
            "/api/queues/no-such-queue-here/replay", json={"all": True}, headers=headers
        )
        assert answer.status_code == 404


async def test_a_request_naming_another_host_is_refused(client_for: Client, redis_url: str) -> None:
    """DNS rebinding: a page of another site, its name now resolving to the dashboard's address."""
    async with client_for(allowed_hosts=["dash.example", "*.ops.example"]) as client:
        assert (await client.get("/")).status_code == 400  # Host: testserver
        for host in ("dash.example", "queues.ops.example", "dash.example:8000"):
            answer = await client.get("/api/overview", headers={"Host": host})
            assert answer.status_code == 200, host


async def test_an_unreachable_redis_is_said_on_the_page() -> None:
    app = dashboard.app("redis://127.0.0.1:1/0", interval=0.1)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            overview = (await client.get("/api/overview")).json()
            assert overview["queues"] == []
            assert "connect" in overview["error"].lower()
            page = await client.get("/")
            assert page.status_code == 200
            error = re.search(r'<p id="error"([^>]*)>([^<]*)</p>', page.text)
            assert error is not None and "hidden" not in error.group(1)  # shown
            assert "connect" in error.group(2).lower()


async def test_a_failed_redis_call_is_a_503_that_says_why(redis_url: str) -> None:
    async def fail(request: Request) -> Response:
        raise VermilionConnectionError("Redis connection failed: refused")

    served = dashboard.app(redis_url)
    served.router.routes.insert(0, Route("/api/boom", fail))
    transport = httpx.ASGITransport(served, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answer = await client.get("/api/boom")
    assert answer.status_code == 503
    assert answer.json() == {"error": "Redis: VermilionConnectionError: Redis connection failed: refused"}


# -- arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"actions": True}, TypeError, "needs a token"),
        ({"actions": True, "token": "short"}, ValueError, "at least 16"),
        ({"actions": True, "token": " " + TOKEN}, ValueError, "surrounding spaces"),
        ({"token": TOKEN}, ValueError, "actions are off"),
        ({"actions": "yes"}, TypeError, "actions must be a bool"),
        ({"interval": 0.01}, ValueError, "interval"),
        ({"interval": float("nan")}, ValueError, "interval"),
        ({"interval": "1"}, TypeError, "interval"),
        ({"interval": 2.0, "history": 1.0}, ValueError, "history"),
        ({"url": "redis://x", "redis": object()}, ValueError, "either url or redis"),
        ({"redis": object()}, TypeError, "redis must be"),
        ({"url": b"redis://x"}, TypeError, "url must be a str"),
        ({"serializer": object()}, TypeError, "serializer must have"),
        ({"allowed_hosts": "localhost"}, TypeError, "allowed_hosts"),
        ({"allowed_hosts": ["a.*.example"]}, ValueError, "allowed_hosts"),
        ({"allowed_hosts": ["*example.com"]}, ValueError, "allowed_hosts"),
        ({"allowed_hosts": [""]}, ValueError, "allowed_hosts"),
    ],
)
def test_bad_arguments_are_refused(options: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        dashboard.app(**options)


async def test_the_app_mounts_inside_another_and_samples_without_its_own_lifespan(
    redis_url: str, queue: Queue
) -> None:
    await queue.enqueue("x")
    outer = Starlette()
    outer.mount("/ops/queues", dashboard.app(redis_url, interval=0.1))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(outer), base_url="http://testserver"
    ) as client:
        page = await client.get("/ops/queues/")
        assert page.status_code == 200
        assert 'data-root="/ops/queues/"' in page.text
        assert 'src="/ops/queues/static/dashboard.js"' in page.text
        assert (await client.get("/ops/queues/static/dashboard.js")).status_code == 200

        async def listed() -> bool:
            return await overview_row_at(client, "/ops/queues/api/overview", queue.name)

        await wait_for(listed)


async def overview_row_at(client: httpx.AsyncClient, path: str, name: str) -> bool:
    rows = (await client.get(path)).json()["queues"]
    return any(row["name"] == name for row in rows)


# -- with workers and failed messages ---------------------------------------------------


async def handle_by_content(message: Message) -> Outcome:
    """Fail a message whose content is a dict with a "fail" reason; succeed on anything else."""
    if isinstance(message.content, dict) and "fail" in message.content:
        return Failure(message.content["fail"])
    return Success()


async def fail_messages(queue: Queue, count: int) -> list[str]:
    """Enqueue ``count`` messages, have a worker fail them all, and return their mids (oldest first)."""
    mids = [f"bad-{n}" for n in range(count)]
    for mid in mids:
        await queue.enqueue({"fail": f"reason of {mid}", "n": mid}, mid=mid)
    async with AsyncWorker(queue, handle_by_content, presence_interval=None):

        async def all_failed() -> bool:
            return (await queue.status()).nfailed == count

        await wait_for(all_failed)
    return mids


async def test_failed_messages_are_listed_newest_first_with_reason_and_payload(
    client_for: Client, queue: Queue
) -> None:
    mids = await fail_messages(queue, 3)
    async with client_for() as client:
        await wait_for(lambda: is_listed(client, queue.name))
        answer = await client.get(f"/api/queues/{queue.name}/failed?limit=2")
        failed = answer.json()["failed"]
        assert [entry["mid"] for entry in failed] == [mids[2], mids[1]]
        assert failed[0]["reason"] == f"reason of {mids[2]}"
        assert json.loads(failed[0]["payload"]) == {"fail": f"reason of {mids[2]}", "n": mids[2]}
        assert failed[0]["attempts"] == 1 and not failed[0]["payload_cut"]
        later = (await client.get(f"/api/queues/{queue.name}/failed?limit=2&offset=2")).json()["failed"]
        assert [entry["mid"] for entry in later] == [mids[0]]


async def test_replay_by_mid_and_all_puts_failed_messages_back(client_for: Client, queue: Queue) -> None:
    mids = await fail_messages(queue, 3)
    async with client_for(actions=True, token=TOKEN) as client:
        await wait_for(lambda: is_listed(client, queue.name))
        url = f"/api/queues/{queue.name}/replay"
        answer = await client.post(url, json={"mids": [mids[0], "never-failed"]}, headers=action_headers())
        assert answer.status_code == 200
        assert answer.json() == {
            "replayed": 1,
            "results": [
                {"mid": mids[0], "ok": True, "error": None},
                {"mid": "never-failed", "ok": False, "error": "unknown"},
            ],
        }
        assert await queue.message_status(mids[0]) == MessageStatus.QUEUED
        answer = await client.post(url, json={"all": True}, headers=action_headers())
        assert answer.json()["replayed"] == 2
        assert (await queue.status()).nqueued == 3
        assert await queue.failed() == []


async def test_purge_by_mid_and_all_empties_the_history(client_for: Client, queue: Queue) -> None:
    mids = await fail_messages(queue, 3)
    async with client_for(actions=True, token=TOKEN) as client:
        await wait_for(lambda: is_listed(client, queue.name))
        url = f"/api/queues/{queue.name}/purge-failed"
        answer = await client.post(url, json={"mids": [mids[1]]}, headers=action_headers())
        assert answer.json() == {"purged": 1}
        assert [entry.mid for entry in await queue.failed()] == [mids[2], mids[0]]
        answer = await client.post(url, json={"all": True}, headers=action_headers())
        assert answer.json() == {"purged": 2}
        assert await queue.failed() == []
        assert (await queue.status()).nqueued == 0


async def test_live_workers_and_their_rates_show_in_the_detail(client_for: Client, queue: Queue) -> None:
    async def produce() -> None:
        # Until the test ends: a rate needs messages handled between two of the worker's beats.
        for n in itertools.count():
            await queue.enqueue(n)
            await asyncio.sleep(0.01)

    async with (
        client_for() as client,
        AsyncWorker(queue, handle_by_content, presence_interval=0.2) as worker,
    ):
        producer = asyncio.create_task(produce())

        async def handled_some() -> bool:
            answer = await client.get(f"/api/queues/{queue.name}")
            if answer.status_code != 200:
                return False
            detail = answer.json()
            return bool(detail["workers"]) and any(rate for rate in detail["series"]["handled"] if rate)

        try:
            await wait_for(handled_some)
        finally:
            producer.cancel()
        detail = (await client.get(f"/api/queues/{queue.name}")).json()
        [shown] = detail["workers"]
        assert shown["id"] == worker.id
        assert shown["pid"] == os.getpid()
        assert shown["concurrency"] == worker.concurrency
        assert shown["success"] > 0


async def test_a_queue_whose_worker_keeps_up_stays_listed_while_empty(
    client_for: Client, queue: Queue, redis: aioredis.Redis
) -> None:
    """Between messages a kept-up queue holds only `meta` and its workers' presence; it must stay
    on the page with its plots, through name refreshes, until its last worker is gone."""
    async with client_for() as client:
        async with AsyncWorker(queue, handle_by_content, presence_interval=0.2) as worker:
            await queue.enqueue("one")
            await wait_for(lambda: is_listed(client, queue.name))

            async def handled() -> bool:
                return worker.stats().counts.get("handler/success", 0) == 1

            await wait_for(handled)
            assert await queue_names(redis, queue.name) == []  # no data left
            points = len((await client.get(f"/api/queues/{queue.name}")).json()["series"]["t"])

            async def plotted_on() -> bool:  # sampled past several SCANs (one per 5 samples)
                answer = await client.get(f"/api/queues/{queue.name}")
                assert answer.status_code == 200, "the queue left the page"
                return len(answer.json()["series"]["t"]) >= points + 12

            await wait_for(plotted_on)
            assert await is_listed(client, queue.name)
        await wait_for(lambda: is_not_listed(client, queue.name))


async def is_not_listed(client: httpx.AsyncClient, name: str) -> bool:
    return await overview_row(client, name) is None


async def is_listed(client: httpx.AsyncClient, name: str) -> bool:
    return await overview_row(client, name) is not None


async def test_payloads_are_decoded_with_the_given_serializer_else_shown_as_bytes(
    client_for: Client, make_queue: QueueFactory
) -> None:
    queue = await make_queue(serializer=JsonSerializer())
    [mid] = await fail_messages(queue, 1)
    for serializer, expected in (
        (JsonSerializer(), f'{{"fail": "reason of {mid}", "n": "{mid}"}}'),
        (None, repr(f'{{"fail":"reason of {mid}","n":"{mid}"}}'.encode())),  # msgpack cannot read it
    ):
        async with client_for(serializer=serializer) as client:
            await wait_for(functools.partial(is_listed, client, queue.name))
            [entry] = (await client.get(f"/api/queues/{queue.name}/failed")).json()["failed"]
            assert entry["payload"] == expected


async def test_failures_the_history_dropped_are_counted_in_the_overview(
    client_for: Client, make_queue: QueueFactory
) -> None:
    queue = await make_queue(failure_history=1)
    mids = [f"bad-{n}" for n in range(3)]
    for mid in mids:
        await queue.enqueue({"fail": "no"}, mid=mid)
    async with AsyncWorker(queue, handle_by_content, presence_interval=None):

        async def all_failed() -> bool:
            return (await queue.status()).nfailed_dropped == 2

        await wait_for(all_failed)
    async with client_for() as client:
        await wait_for(functools.partial(is_listed, client, queue.name))
        row = await overview_row(client, queue.name)
        assert row is not None and (row["failed"], row["dropped"]) == (1, 2)


async def test_the_mounting_example_serves_the_dashboard_with_actions(
    queue: Queue, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERMILION_URL", redis_url)
    monkeypatch.setenv("VERMILION_DASHBOARD_TOKEN", TOKEN)
    [mid] = await fail_messages(queue, 1)
    example = load_example("dashboard_mount", monkeypatch)
    async with asgi_client(example.app) as client:
        assert (await client.get("/")).json() == {"dashboard": "/ops/queues/"}
        page = await client.get("/ops/queues/")
        assert page.status_code == 200 and 'data-actions="true"' in page.text
        await wait_for(functools.partial(overview_row_at, client, "/ops/queues/api/overview", queue.name))
        url = f"/ops/queues/api/queues/{queue.name}/replay"
        refused = await client.post(url, json={"mids": [mid]}, headers=action_headers(token=None))
        assert refused.status_code == 401
        answer = await client.post(url, json={"mids": [mid]}, headers=action_headers())
        assert answer.json()["replayed"] == 1
    assert await queue.message_status(mid) == MessageStatus.QUEUED


def test_the_operating_page_shows_the_mounting_example_as_it_is() -> None:
    page = (EXAMPLES.parent / "operating.md").read_text(encoding="utf-8")
    source = (EXAMPLES / "dashboard_mount.py").read_text(encoding="utf-8")
    assert f"```python\n{source}```\n" in page
