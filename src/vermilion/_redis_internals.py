"""The one module that reaches into redis-py: its connection objects and private attributes.

Why reach in at all: redis-py's ``execute_command`` re-sends a command after a
connection error (its retry policy belongs to the user's pool), and a re-sent
``dequeue`` or ``enqueue`` is a wrong answer, not a retry. So vermilion sends
each command itself, on a redis-py connection, through the small interface
below (:class:`Wire`). Its fast path writes to the connection's stream writer
and reads with its reply parser (``_writer``, ``_parser``): redis-py's public
send/read methods wrap those in health checks and timeouts that vermilion's
own clients do not use, at about a quarter of a round trip's client CPU.

Every private attribute is read with a fallback to a public method, and the
tests run on the lowest and the newest redis-py that pyproject allows, so an
upgrade that removes one fails a test rather than a user. Nothing else in the
package may touch a redis-py connection or a pool.
"""

from __future__ import annotations

import select
from collections.abc import Mapping
from typing import Any, TypeAlias

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from ._error_mapping import CONNECTION_ERRORS

RedisClient: TypeAlias = "aioredis.Redis | aioredis.RedisCluster"
"""A client vermilion accepts: one server's (plain or Sentinel-managed), or a cluster's."""

# Settings of a cluster's connections that belong to its own node pools, not to
# a connection to one node.
_CLUSTER_ONLY_SETTINGS = ("connection_class", "max_connections", "response_callbacks")

__all__ = [
    "RedisClient",
    "Wire",
    "close_client",
    "cluster_seeds",
    "connection_settings",
    "describe_client",
    "new_wire",
    "node_client",
    "pool_of",
    "pooled_wire",
    "release_pooled",
]


class Wire:
    """One redis-py connection, seen through the few operations vermilion's transport needs."""

    __slots__ = ("connection",)

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    @property
    def is_connected(self) -> bool:
        return bool(self.connection.is_connected)

    async def connect(self) -> None:
        await self.connection.connect()

    async def disconnect(self) -> None:
        await self.connection.disconnect()

    async def is_stale(self) -> bool:
        """Whether this connected, idle connection must be opened afresh before anything is sent.

        Like redis-py's pool, a connection with unread bytes or the server's
        EOF is not sent on: a dead connection would turn a call that never left
        into a "maybe ran". redis-py 8.2 reports an EOF it reads here as an error.
        """
        if self._socket_readable():
            return True
        try:
            return await self._has_unread_data_or_eof()
        except CONNECTION_ERRORS:
            return True

    def _socket_readable(self) -> bool:
        """Whether the socket holds bytes or an EOF that the event loop has not read yet.

        An idle connection should have nothing to read: anything there is the
        server closing it (its ``timeout``, CLIENT KILL, a proxy) or a stray
        reply. While the loop is busy, that EOF waits in the kernel, where only
        the socket itself shows it. A zero-timeout poll costs one system call.
        """
        writer = getattr(self.connection, "_writer", None)
        if writer is None:
            return False
        transport = writer.transport
        if transport.is_closing():
            return True
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        fd = sock.fileno()
        if fd < 0:
            return True
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([fd], [], [], 0)
        return bool(readable)

    async def _has_unread_data_or_eof(self) -> bool:
        # redis-py 8 renamed can_read_destructive (still there, deprecated) to can_read.
        conn = self.connection
        check = conn.can_read if hasattr(conn, "can_read") else conn.can_read_destructive
        return bool(await check())

    async def exchange(self, command: bytes) -> Any:
        """Write one packed command; read its reply (undecoded), raising an error reply.

        Straight to the stream writer and the reply parser where redis-py has
        them; its public methods are the fallback for a redis-py without them.
        """
        writer = getattr(self.connection, "_writer", None)
        parser = getattr(self.connection, "_parser", None)
        if writer is None or parser is None:
            await self.connection.send_packed_command(command)
            return await self.connection.read_response(disable_decoding=True)
        writer.write(command)
        await writer.drain()
        reply = await parser.read_response(disable_decoding=True)
        if isinstance(reply, redis_errors.ResponseError):
            raise reply
        return reply

    async def exchange_with_settings(self, command: bytes, read_timeout: float | None = None) -> Any:
        """Like :meth:`exchange`, through redis-py's public methods: for a client the user made,
        whose every setting (socket timeout, health checks) applies."""
        await self.connection.send_packed_command(command)
        if read_timeout is None:
            return await self.connection.read_response(disable_decoding=True)
        return await self.connection.read_response(disable_decoding=True, timeout=read_timeout)

    async def exchange_pair(self, first: bytes, second: bytes, *, with_settings: bool) -> tuple[Any, Any]:
        """Write two packed commands in one packet and read both replies (undecoded).

        An error reply to either is raised only once both are read, so that
        the connection stays in step. ``with_settings`` as for :meth:`exchange_with_settings`.
        """
        writer = getattr(self.connection, "_writer", None)
        parser = getattr(self.connection, "_parser", None)
        if with_settings or writer is None or parser is None:
            await self.connection.send_packed_command(first + second)
            replies = [await self._read_any() for _ in range(2)]
        else:
            writer.write(first + second)
            await writer.drain()
            replies = [await parser.read_response(disable_decoding=True) for _ in range(2)]
        for reply in replies:
            if isinstance(reply, redis_errors.ResponseError):
                raise reply
        return replies[0], replies[1]

    async def _read_any(self) -> Any:
        """One reply through redis-py's public read, an error reply returned rather than raised."""
        try:
            return await self.connection.read_response(disable_decoding=True)
        except redis_errors.ResponseError as error:
            return error

    def abort(self) -> bool:
        """Close the socket at once; False while there is none (still connecting)."""
        writer = getattr(self.connection, "_writer", None)
        if writer is None:
            return False
        writer.transport.abort()
        return True


def new_wire(client: aioredis.Redis) -> Wire:
    """A new connection with the client's settings, outside its pool (vermilion keeps it)."""
    return Wire(client.connection_pool.make_connection())  # type: ignore[no-untyped-call]


async def pooled_wire(client: aioredis.Redis) -> Wire:
    """A connection checked out of the client's pool, within the pool's limits."""
    return Wire(await client.connection_pool.get_connection())  # type: ignore[no-untyped-call]


async def release_pooled(client: aioredis.Redis, wire: Wire) -> None:
    await client.connection_pool.release(wire.connection)


def pool_of(client: RedisClient) -> object:
    """What clients that share connections have in common (their pool; a cluster client itself)."""
    if isinstance(client, aioredis.RedisCluster):
        return client
    return client.connection_pool


def connection_settings(client: RedisClient) -> Mapping[str, Any]:
    """The keyword arguments each of the client's connections is made with."""
    if isinstance(client, aioredis.RedisCluster):
        return client.get_connection_kwargs()
    return client.connection_pool.connection_kwargs


async def cluster_seeds(cluster: aioredis.RedisCluster) -> list[tuple[str, int]]:
    """The address of every node the cluster client knows (it connects first if it has not)."""
    await cluster.initialize()
    return [(node.host, int(node.port)) for node in cluster.get_nodes()]


def node_client(cluster: aioredis.RedisCluster, host: str, port: int) -> aioredis.Redis:
    """A client of one cluster node with the cluster client's connection settings
    (credentials, TLS, timeouts), whose connections vermilion keeps itself."""
    settings = dict(cluster.get_connection_kwargs())
    connection_class = settings.get("connection_class") or aioredis.Connection
    for name in _CLUSTER_ONLY_SETTINGS:
        settings.pop(name, None)
    settings.update(host=host, port=port)
    pool = aioredis.ConnectionPool(connection_class=connection_class, **settings)
    return aioredis.Redis(connection_pool=pool)


def describe_client(client: RedisClient) -> str:
    """Where a client connects, without its password."""
    kwargs = connection_settings(client)
    if isinstance(client, aioredis.RedisCluster):
        tls = isinstance(kwargs.get("connection_class"), type) and issubclass(
            kwargs["connection_class"], aioredis.SSLConnection
        )
        scheme = "rediss+cluster" if tls else "redis+cluster"
        nodes = ",".join(f"{node.host}:{node.port}" for node in client.get_nodes()) or "?"
        return f"{scheme}://{_masked_auth(kwargs)}{nodes}"
    sentinels = _sentinel_addresses(client)
    if sentinels is not None:
        return f"redis+sentinel://{_masked_auth(kwargs)}{sentinels}"
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    scheme = "rediss" if kwargs.get("ssl") or "ssl_context" in kwargs else "redis"
    host = kwargs.get("host", "localhost")
    return f"{scheme}://{_masked_auth(kwargs)}{host}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


async def close_client(client: aioredis.Redis) -> None:
    """Close a client vermilion made, and the clients of the Sentinels it asks, if any."""
    await client.aclose()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


def _sentinel_addresses(client: aioredis.Redis) -> str | None:
    """``host:port,.../service`` of a Sentinel-managed client; None for any other."""
    pool = client.connection_pool
    service = getattr(pool, "service_name", None)
    manager = getattr(pool, "sentinel_manager", None)
    if service is None or manager is None:
        return None
    hosts = []
    for sentinel in manager.sentinels:
        settings = sentinel.connection_pool.connection_kwargs
        hosts.append(f"{settings.get('host', '?')}:{settings.get('port', '?')}")
    return f"{','.join(hosts)}/{service}"


def _masked_auth(kwargs: Mapping[str, Any]) -> str:
    user = kwargs.get("username")
    if kwargs.get("password") is not None:
        return f"{user or ''}:***@"
    return f"{user}@" if user else ""
