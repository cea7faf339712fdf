"""How a queue built from a URL uses its connections: reused, replaced when dead, closed."""

from __future__ import annotations

import asyncio
import select
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis as sync_redis
import redis.asyncio as aioredis

import vermilion._queue
from tests.helpers import eventually
from vermilion import OutcomeUnknownError, Queue
from vermilion._redis_internals import Wire
from vermilion._transport import Transport


def named(url: str, client_name: str) -> str:
    """``url`` with a client name, so that the server's CLIENT LIST shows the queue's connections."""
    return f"{url}{'&' if '?' in url else '?'}client_name={client_name}"


async def client_ids(redis: aioredis.Redis, client_name: str) -> list[int]:
    clients: list[dict[str, Any]] = await redis.client_list()
    return sorted(int(client["id"]) for client in clients if client["name"] == client_name)


async def test_sequential_calls_share_one_connection(
    queue_name: str, redis_url: str, redis: aioredis.Redis
) -> None:
    """One call at a time needs one connection, kept open between calls."""
    client_name = f"vm-{uuid.uuid4().hex[:8]}"
    async with Queue(queue_name, named(redis_url, client_name)) as queue:
        for i in range(20):
            assert (await queue.enqueue(i)).ok
        assert await queue.size() == 20
        assert len(await client_ids(redis, client_name)) == 1
        await queue.clear()
    assert await client_ids(redis, client_name) == []


async def test_concurrent_calls_open_more_and_aclose_closes_them_all(
    queue_name: str, redis_url: str, redis: aioredis.Redis
) -> None:
    """Calls at once get a connection each; aclose() closes every one of them."""
    client_name = f"vm-{uuid.uuid4().hex[:8]}"
    async with Queue(queue_name, named(redis_url, client_name)) as queue:
        results = await asyncio.gather(*(queue.enqueue(i) for i in range(40)))
        assert all(result.ok for result in results)
        opened = await client_ids(redis, client_name)
        assert 1 < len(opened) <= 40
        await queue.clear()
    assert await client_ids(redis, client_name) == []


async def test_a_connection_the_server_closed_is_replaced_before_sending(
    queue_name: str, redis_url: str, redis: aioredis.Redis
) -> None:
    """An idle connection killed by the server is noticed and replaced: the next enqueue (never
    re-sent, so a dead connection would make it OutcomeUnknownError) simply succeeds."""
    client_name = f"vm-{uuid.uuid4().hex[:8]}"
    async with Queue(queue_name, named(redis_url, client_name)) as queue:
        assert (await queue.enqueue("before", mid="before")).ok
        [old_id] = await client_ids(redis, client_name)
        await redis.client_kill_filter(_id=str(old_id))
        connection, _ = queue._protocol
        assert isinstance(connection.transport, Transport)
        [idle] = [wire.connection for wire in connection.transport._idle]

        async def closed_seen() -> bool:  # the event loop has read the server's FIN
            return bool(idle._reader.at_eof())

        await eventually(closed_seen, what="the closed connection noticed")
        assert (await queue.enqueue("after", mid="after")).ok
        assert [await queue.message_status(mid) for mid in ("before", "after")] == ["queued", "queued"]
        [new_id] = await client_ids(redis, client_name)
        assert new_id != old_id
        await queue.clear()


def wait_readable(sock: Any, timeout: float = 5.0) -> None:
    """Block, without yielding to the event loop, until ``sock`` has something to read."""
    deadline = time.monotonic() + timeout
    while not select.select([sock.fileno()], [], [], 0.05)[0]:
        if time.monotonic() > deadline:
            raise AssertionError(f"socket still not readable after {timeout} s")


async def test_a_close_the_busy_event_loop_has_not_seen_yet_is_noticed_too(
    queue_name: str, redis_url: str
) -> None:
    """The server closes an idle connection while the event loop is busy: its EOF waits in the
    socket, unseen by asyncio. The next enqueue still goes out on a fresh connection and is ok,
    not an OutcomeUnknownError from a send on the dead one."""
    client_name = f"vm-{uuid.uuid4().hex[:8]}"
    async with Queue(queue_name, named(redis_url, client_name)) as queue:
        assert (await queue.enqueue("before", mid="before")).ok
        connection, _ = queue._protocol
        assert isinstance(connection.transport, Transport)
        [idle] = [wire.connection for wire in connection.transport._idle]
        sock = idle._writer.transport.get_extra_info("socket")
        # A blocking client, so that the loop runs no callback between the kill and the enqueue.
        with sync_redis.Redis.from_url(redis_url) as killer:
            [old] = [client for client in killer.client_list() if client["name"] == client_name]
            killer.client_kill_filter(_id=old["id"])
            wait_readable(sock)
            assert not idle._reader.at_eof(), "the event loop ran: this test needs it busy"
            assert (await queue.enqueue("after", mid="after")).ok
            names = [client["name"] for client in killer.client_list()]
        assert names.count(client_name) == 1
        assert [await queue.message_status(mid) for mid in ("before", "after")] == ["queued", "queued"]
        await queue.clear()


async def test_read_only_calls_survive_a_killed_idle_connection(
    queue_name: str, redis_url: str, redis: aioredis.Redis
) -> None:
    """status() and message_status() on a connection the server closed answer as usual."""
    client_name = f"vm-{uuid.uuid4().hex[:8]}"
    async with Queue(queue_name, named(redis_url, client_name)) as queue:
        assert (await queue.enqueue("m", mid="m")).ok
        for _ in range(3):
            [old_id] = await client_ids(redis, client_name)
            await redis.client_kill_filter(_id=str(old_id))
            await eventually(lambda: _no_client(redis, client_name), what="the kill done")
            assert (await queue.status()).nqueued == 1
            assert await queue.message_status("m") == "queued"
        await queue.clear()


async def _no_client(redis: aioredis.Redis, client_name: str) -> bool:
    return not await client_ids(redis, client_name)


class MutingProxy:
    """A loopback TCP proxy to Redis that can stop passing the server's replies on."""

    def __init__(self, redis_url: str) -> None:
        parsed = urlsplit(redis_url)
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or 6379)
        self.path = parsed.path
        self.muted = False
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self.path}"

    async def __aenter__(self) -> MutingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        for handler in self.handlers:
            handler.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self.handlers.add(handler)
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        upstream = asyncio.create_task(self._pipe(client_reader, server_writer, mutable=False))
        try:
            await self._pipe(server_reader, client_writer, mutable=True)
        finally:
            upstream.cancel()
            server_writer.close()
            client_writer.close()
            self.handlers.discard(handler)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, mutable: bool
    ) -> None:
        while data := await reader.read(65536):
            if not (mutable and self.muted):
                writer.write(data)
                await writer.drain()


def deadline_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "vermilion call deadlines"]


@pytest.mark.parametrize("bound", ["call timeout", "socket_timeout in the URL"])
async def test_a_call_with_no_reply_ends_at_its_deadline(
    bound: str, queue_name: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection gone silent fails its call after the call timeout (or the URL's shorter
    socket_timeout), as "may have run" (the command left); the next call, on a fresh
    connection, goes through."""
    async with MutingProxy(redis_url) as proxy:
        url = proxy.url
        if bound == "call timeout":
            monkeypatch.setattr(vermilion._queue, "_CALL_TIMEOUT", 0.3)
        else:
            url = f"{url}{'&' if '?' in url else '?'}socket_timeout=0.3"
        async with Queue(queue_name, url) as queue:
            await silent_call_ends(proxy, queue)


async def silent_call_ends(proxy: MutingProxy, queue: Queue) -> None:
    """One enqueue through a muted proxy fails at the deadline; the next one goes through."""
    assert (await queue.enqueue("before", mid="before")).ok
    proxy.muted = True
    started = time.monotonic()
    with pytest.raises(OutcomeUnknownError, match=r"no reply within 0\.3 s") as raised:
        await queue.enqueue("silent", mid="silent")
    waited = time.monotonic() - started
    assert 0.3 <= waited < 1.5
    assert raised.value.mids == ("silent",)
    proxy.muted = False
    assert (await queue.enqueue("after", mid="after")).ok
    statuses = [await queue.message_status(mid) for mid in ("before", "silent", "after")]
    assert statuses == ["queued", "queued", "queued"]  # the silent call had run
    await queue.clear()


async def test_no_deadline_task_outlives_the_calls(queue_name: str, redis_url: str) -> None:
    """The task that watches call deadlines runs only while calls are in flight."""
    async with Queue(queue_name, redis_url) as queue:
        await asyncio.gather(*(queue.enqueue(i) for i in range(10)))
        assert len(deadline_tasks()) <= 1

        async def no_task_left() -> bool:
            return deadline_tasks() == []

        await eventually(no_task_left, timeout=3.0, what="the deadline task ended")
        await queue.clear()


class PublicOnlyConnection:
    """A connection with redis-py's public methods only (no ``_writer`` / ``_parser``)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_packed_command(self, command: bytes) -> None:
        self.sent.append(command)

    async def read_response(self, *, disable_decoding: bool) -> Any:
        assert disable_decoding
        return [b"added"]


async def test_a_connection_without_stream_internals_uses_the_public_methods() -> None:
    """Should redis-py drop the attributes vermilion reads directly, its calls still go through
    the public send / read methods."""
    conn = PublicOnlyConnection()
    assert await Wire(conn).exchange(b"*1\r\n$4\r\nPING\r\n") == [b"added"]
    assert conn.sent == [b"*1\r\n$4\r\nPING\r\n"]
