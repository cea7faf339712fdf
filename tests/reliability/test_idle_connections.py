"""Idle connections the server closes: its `timeout`, CLIENT KILL TYPE normal.

Proxies, load balancers and Redis's own `timeout` close connections that sit idle.
vermilion keeps connections idle between calls, so the next call must notice, before
it sends anything, and go out on a fresh connection: never an error, never a "maybe".
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from tests.helpers import eventually
from tests.reliability.conftest import ServerFactory
from tests.reliability.servers import KINDS, FaultServer
from vermilion import AsyncWorker, Message, MessageStatus, Queue, Success

ROUNDS = 3


def named(url: str, client_name: str) -> str:
    return f"{url}?client_name={client_name}"


async def connection_count(admin: aioredis.Redis, client_name: str) -> int:
    clients = await admin.client_list()
    return sum(1 for client in clients if client["name"] == client_name)


@pytest.fixture(params=KINDS)
def idle_timeout_server(request: pytest.FixtureRequest, fault_server: ServerFactory) -> FaultServer:
    """A server that closes client connections idle for 1 s."""
    return fault_server(request.param, config={"timeout": "1"})


@pytest.mark.timeout(60)
async def test_calls_after_the_server_timed_out_idle_connections_succeed(
    idle_timeout_server: FaultServer,
) -> None:
    """With `timeout 1`, each round idles until the server has closed every connection of the
    queue, then enqueues and reads the status: every call succeeds, on a fresh connection."""
    client_name = f"vm-{uuid.uuid4().hex[:8]}"
    admin = idle_timeout_server.client()
    try:
        async with Queue("idle", named(idle_timeout_server.url, client_name)) as queue:
            assert (await queue.enqueue(0, mid="m0")).ok
            for round_ in range(1, ROUNDS + 1):

                async def all_closed() -> bool:
                    return await connection_count(admin, client_name) == 0

                await eventually(all_closed, timeout=10, interval=0.05, what="the server's idle timeout")
                assert (await queue.enqueue(round_, mid=f"m{round_}")).ok
                assert (await queue.status()).nqueued == round_ + 1
    finally:
        await admin.aclose()


async def blocked_in_blpop(admin: aioredis.Redis, client_name: str) -> bool:
    clients = await admin.client_list()
    return any(client["name"] == client_name and client["cmd"] == "blpop" for client in clients)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
async def test_a_worker_serves_on_through_client_kill_type_normal(
    kind: str, fault_server: ServerFactory
) -> None:
    """CLIENT KILL TYPE normal, between messages, closes every connection of a producer and of an
    idle worker (its blocking wait, its idle ack connection): each message enqueued after a kill
    is enqueued ok and handled, and the worker counts no failed call of any kind."""
    server = fault_server(kind)
    admin = server.client()
    client_name = f"vm-{uuid.uuid4().hex[:8]}"
    handled: asyncio.Queue[object] = asyncio.Queue()

    async def handler(message: Message) -> Success:
        await handled.put(message.content)
        return Success()

    try:
        async with (
            Queue("killed", named(server.url, client_name)) as queue,
            AsyncWorker(queue, handler, concurrency=2) as worker,
        ):
            for i in range(ROUNDS):
                assert (await queue.enqueue(i, mid=f"m{i}")).ok
                assert await asyncio.wait_for(handled.get(), timeout=10) == i

                async def idle(mid: str = f"m{i}") -> bool:  # acknowledged; the worker waits for work
                    return await queue.message_status(mid) != MessageStatus.LOCKED and (
                        await blocked_in_blpop(admin, client_name)
                    )

                await eventually(idle, timeout=10, interval=0.01, what="the worker idle")
                await admin.client_kill_filter(_type="normal", skipme=True)
            assert (await queue.enqueue("last")).ok
            assert await asyncio.wait_for(handled.get(), timeout=10) == "last"
            failed = {name: n for name, n in worker.stats().counts.items() if name.endswith("error")}
            assert failed == {}
    finally:
        await admin.aclose()
