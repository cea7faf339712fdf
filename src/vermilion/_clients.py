"""Building a redis-py client from a URL: one server, a Redis Cluster, or a Sentinel-watched master.

``redis://``, ``rediss://`` and ``unix://`` go to redis-py's own parser.
Two families of URLs name more than one host, which redis-py's parser does
not take, so they are read here:

- ``redis+cluster://[user:password@]host:port[,host:port...][/0]`` (and
  ``rediss+cluster://`` for TLS): a ``RedisCluster`` that starts from those
  nodes and discovers the rest;
- ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
  (``rediss+sentinel://`` for TLS to the master): the master that those
  Sentinels name for ``service``, looked up again on every new connection, so
  that a failover is followed by reconnecting.

``queue_client`` picks the client a ``Queue`` uses. It only builds clients;
it sends nothing.
"""

from __future__ import annotations

import os
from typing import Any, TypeGuard
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.sentinel import Sentinel

from ._redis_internals import RedisClient

__all__ = [
    "CLUSTER_SCHEMES",
    "DEFAULT_URL",
    "SENTINEL_SCHEMES",
    "client_from_url",
    "is_client",
    "queue_client",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
_CONNECT_TIMEOUT = 5.0

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def is_client(value: object) -> TypeGuard[RedisClient]:
    """Whether ``value`` is a redis-py asyncio client vermilion can use."""
    return isinstance(value, (aioredis.Redis, aioredis.RedisCluster))


def queue_client(url: object, redis: object) -> tuple[RedisClient, bool]:
    """The client a ``Queue`` uses, and whether the queue owns it (built it from a URL).

    ``redis`` if given; else a client for ``url``, ``$VERMILION_URL`` or
    :data:`DEFAULT_URL`.
    """
    if redis is None:
        if url is None:
            url = os.environ.get("VERMILION_URL") or DEFAULT_URL
        elif not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        # socket_timeout=None (redis-py would default to 5 s): the transport
        # bounds each call itself, more cheaply than a timeout per write.
        return client_from_url(url, connect_timeout=_CONNECT_TIMEOUT, socket_timeout=None), True
    if not is_client(redis):
        raise TypeError(
            f"redis must be a redis.asyncio.Redis or RedisCluster client, not {type(redis).__name__}"
        )
    return redis, False


def client_from_url(url: str, *, connect_timeout: float, socket_timeout: float | None) -> RedisClient:
    """A client for ``url``; a malformed URL raises ``ValueError`` naming what is wrong."""
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if separator and scheme in CLUSTER_SCHEMES:
        return _cluster(scheme, rest, connect_timeout, socket_timeout)
    if separator and scheme in SENTINEL_SCHEMES:
        return _sentinel_master(scheme, rest, connect_timeout, socket_timeout)
    return aioredis.Redis.from_url(url, socket_connect_timeout=connect_timeout, socket_timeout=socket_timeout)


def _split(scheme: str, rest: str) -> tuple[dict[str, Any], list[tuple[str, int]], list[str]]:
    """Credentials, ``(host, port)`` pairs and path segments of a many-host URL."""
    if "?" in rest or "#" in rest:
        raise ValueError(f"{scheme}:// URLs take no query options; pass a client built with them instead")
    netloc, _, path = rest.partition("/")
    credentials: dict[str, Any] = {}
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, has_password, password = userinfo.partition(":")
        if user:
            credentials["username"] = unquote(user)
        if has_password:
            credentials["password"] = unquote(password)
    hosts = [_host_port(scheme, item) for item in netloc.split(",")]
    return credentials, hosts, [segment for segment in path.split("/") if segment]


def _host_port(scheme: str, item: str) -> tuple[str, int]:
    host, colon, port = item.strip().rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{scheme}:// URLs list host:port pairs separated by commas, got {item!r}")
    return host.strip("[]"), int(port)


def _cluster(scheme: str, rest: str, connect_timeout: float, socket_timeout: float | None) -> RedisClient:
    credentials, hosts, path = _split(scheme, rest)
    if path not in ([], ["0"]):
        raise ValueError(
            f"{scheme}:// URLs name database 0 only (a Redis Cluster has no other), not /{'/'.join(path)}"
        )
    return aioredis.RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in hosts],
        ssl=scheme == "rediss+cluster",
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        **credentials,
    )


def _sentinel_master(
    scheme: str, rest: str, connect_timeout: float, socket_timeout: float | None
) -> RedisClient:
    credentials, hosts, path = _split(scheme, rest)
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"{scheme}:// URLs end in /<service name>[/<db>], got /{'/'.join(path)}")
    service = unquote(path[0])
    db = int(path[1]) if len(path) == 2 else 0
    # The Sentinels themselves are asked without the master's credentials.
    sentinel = Sentinel(
        hosts,
        sentinel_kwargs={"socket_connect_timeout": connect_timeout, "socket_timeout": connect_timeout},
    )
    master: aioredis.Redis = sentinel.master_for(
        service,
        ssl=scheme == "rediss+sentinel",
        db=db,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        **credentials,
    )
    return master
