"""A lost reply must not make the client run a script twice (DESIGN §3.3).

A loopback proxy forwards commands to the real server and, when armed, drops
the next reply and closes the connection: the script ran, the client cannot
know. The client is a plain ``redis.asyncio.Redis`` with redis-py's default
retry policy, which would re-send the command if vermilion let it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest
import redis.asyncio as aioredis

from tests.conftest import QueueFactory
from vermilion import OutcomeUnknownError, Queue


class ReplyDroppingProxy:
    """Forwards bytes both ways; once armed, swallows one reply and hangs up."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.armed = False
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        upstream = asyncio.create_task(self._pipe(client_reader, server_writer, replies=False))
        downstream = asyncio.create_task(self._pipe(server_reader, client_writer, replies=True))
        self._tasks |= {upstream, downstream}
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (upstream, downstream):
                task.cancel()
            for writer in (client_writer, server_writer):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            self._tasks -= {upstream, downstream}

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        while data := await reader.read(65536):
            if replies and self.armed:
                self.armed = False
                self.dropped += 1
                return  # the reply is lost; _serve hangs up both sides
            writer.write(data)
            await writer.drain()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[ReplyDroppingProxy]:
    parsed = urlparse(redis_url)
    proxy = ReplyDroppingProxy(parsed.hostname or "127.0.0.1", parsed.port or 6379)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def proxied_queue(proxy: ReplyDroppingProxy, make_queue: QueueFactory) -> AsyncIterator[Queue]:
    """A queue on a user-built client that keeps redis-py's default retries."""
    client = aioredis.Redis(host="127.0.0.1", port=proxy.port)
    reference = await make_queue()  # a direct client on the same queue, and its cleanup
    queue = Queue(reference.name, redis=client)
    await queue.status()  # the server check runs now, not while armed
    yield queue
    await client.aclose()


async def test_lost_dequeue_reply_is_not_replayed(
    proxied_queue: Queue, proxy: ReplyDroppingProxy, make_queue: QueueFactory
) -> None:
    """A dequeue whose reply is lost raises OutcomeUnknownError and leased exactly one batch."""
    direct = await make_queue(proxied_queue.name)
    await direct.enqueue_many(["a", "b", "c"])
    conn, keys = proxied_queue._protocol
    proxy.armed = True
    with pytest.raises(OutcomeUnknownError):
        await conn.dequeue(keys, 1, 30_000, 100)
    assert proxy.dropped == 1
    status = await direct.status()
    assert (status.nlocked, status.nqueued) == (1, 2)  # a replay would have locked 2


async def test_lost_enqueue_reply_raises_outcome_unknown(
    proxied_queue: Queue, proxy: ReplyDroppingProxy, make_queue: QueueFactory
) -> None:
    """An enqueue whose reply is lost says so, instead of answering 'already-queued' to a replay."""
    direct = await make_queue(proxied_queue.name)
    proxy.armed = True
    with pytest.raises(OutcomeUnknownError, match="may have run") as caught:
        await proxied_queue.enqueue("x", mid="m")
    assert caught.value.mids == ("m",)
    assert proxy.dropped == 1
    assert (await direct.status()).nqueued == 1  # it did run, once
    again = await proxied_queue.enqueue("x", mid="m")  # the client recovers on a new connection
    assert again.error == "already-queued"


async def test_lost_read_reply_is_retried_transparently(
    proxied_queue: Queue, proxy: ReplyDroppingProxy
) -> None:
    """Read-only calls are safe to repeat: one lost reply is retried on a new connection."""
    await proxied_queue.enqueue("x")
    proxy.armed = True
    status = await proxied_queue.status()
    assert proxy.dropped == 1
    assert status.nqueued == 1
