"""A loopback TCP fault proxy between clients and a server.

Modes, switched at any time from the test: ``pass`` (forward both ways),
``drop_next_reply`` (swallow the next server reply and hang up that client;
with ``match``, the next reply that contains those bytes or answers a request
that contained them),
``delay`` (hold each chunk ``delay`` seconds), ``blackhole`` (forward nothing,
keep connections open), ``reset`` (close every connection now and refuse
new ones until the mode changes).

``accepted_at`` holds the loop time (``time.monotonic()``) of every client
connection accepted, in any mode and whether or not the upstream answered:
with the upstream down, that counts a client's connection attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.delay = 0.0
        self.dropped = 0
        self.match: bytes | None = None
        self.accepted_at: list[float] = []
        self._server: asyncio.Server | None = None
        self._connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._serving: set[asyncio.Task[Any]] = set()  # one per client connection

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    def set_mode(self, mode: str, delay: float = 0.0, *, match: bytes | None = None) -> None:
        if mode not in ("pass", "drop_next_reply", "delay", "blackhole", "reset"):
            raise ValueError(f"unknown proxy mode {mode!r}")
        self.mode, self.delay, self.match = mode, delay, match
        if mode == "reset":
            for client_writer, server_writer in list(self._connections):
                client_writer.close()
                server_writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for client_writer, server_writer in list(self._connections):
            client_writer.close()
            server_writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Let every connection's handler finish before the loop may close.
        if self._serving:
            _, unfinished = await asyncio.wait(set(self._serving), timeout=5)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted_at.append(time.monotonic())
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        try:
            await self._relay(client_reader, client_writer)
        finally:
            self._serving.discard(task)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            client_writer.close()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        pair = (client_writer, server_writer)
        self._connections.add(pair)
        asked: list[bool] = [False]  # this connection sent a request containing `match`
        upstream = asyncio.create_task(self._pipe(client_reader, server_writer, replies=False, asked=asked))
        downstream = asyncio.create_task(self._pipe(server_reader, client_writer, replies=True, asked=asked))
        self._tasks |= {upstream, downstream}
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (upstream, downstream):
                task.cancel()
            for writer in pair:
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()
            self._connections.discard(pair)
            self._tasks -= {upstream, downstream}

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        replies: bool,
        asked: list[bool] | None = None,
    ) -> None:
        asked = [False] if asked is None else asked
        while data := await reader.read(65536):
            while self.mode == "blackhole":  # noqa: ASYNC110 - a mode flag, polled; tests flip it
                await asyncio.sleep(0.01)
            if self.mode == "delay" and self.delay:
                await asyncio.sleep(self.delay)
            if not replies and self.match is not None and self.match in data:
                asked[0] = True
            if (
                replies
                and self.mode == "drop_next_reply"
                and (self.match is None or asked[0] or self.match in data)
            ):
                self.mode, self.match = "pass", None
                self.dropped += 1
                return  # the reply is lost; _serve hangs up both sides
            if replies:
                asked[0] = False  # a reply went through: the request it answered is done
            writer.write(data)
            await writer.drain()
