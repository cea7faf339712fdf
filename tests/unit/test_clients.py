"""Many-host URLs: what redis+cluster:// and redis+sentinel:// build (nothing is sent)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from vermilion import Queue
from vermilion._clients import client_from_url
from vermilion._redis_internals import connection_settings, describe_client


def build(url: str) -> aioredis.Redis | aioredis.RedisCluster:
    return client_from_url(url, connect_timeout=1.5, socket_timeout=None)


async def test_a_cluster_url_builds_a_cluster_client_from_every_host() -> None:
    client = build("rediss+cluster://ada:p%40ss@10.0.0.1:7000,[::1]:7001/0")
    assert isinstance(client, aioredis.RedisCluster)
    settings = connection_settings(client)
    assert (settings["username"], settings["password"]) == ("ada", "p@ss")
    assert settings["socket_connect_timeout"] == 1.5
    assert issubclass(settings["connection_class"], aioredis.SSLConnection)
    assert describe_client(client).startswith("rediss+cluster://ada:***@")
    await client.aclose()


async def test_a_sentinel_url_builds_a_master_client_that_asks_the_sentinels() -> None:
    client = build("redis+sentinel://:secret@10.0.0.5:26379,10.0.0.6:26380/mymaster/2")
    assert isinstance(client, aioredis.Redis)
    settings = connection_settings(client)
    assert (settings["password"], settings["db"]) == ("secret", 2)
    assert describe_client(client) == "redis+sentinel://:***@10.0.0.5:26379,10.0.0.6:26380/mymaster"
    await client.aclose()


def test_a_plain_url_is_redis_py_s() -> None:
    client = build("redis://127.0.0.1:6390/3")
    assert isinstance(client, aioredis.Redis)
    assert describe_client(client) == "redis://127.0.0.1:6390/3"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis+cluster://127.0.0.1", "host:port pairs"),
        ("redis+cluster://127.0.0.1:0", "host:port pairs"),
        ("redis+cluster://h:1,,h:2", "host:port pairs"),
        ("redis+cluster://h:1/1", "database 0 only"),
        ("redis+sentinel://h:1", "/<service name>"),
        ("redis+sentinel://h:1/svc/x", "/<service name>"),
        ("rediss+sentinel://h:1/svc?ssl_cert_reqs=none", "no query options"),
    ],
)
def test_malformed_many_host_urls_name_what_is_wrong(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="://") as raised:
        build(url)
    assert fragment in str(raised.value)
    with pytest.raises(ValueError, match="://"):
        Queue("q", url)


def test_a_client_of_another_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="RedisCluster"):
        Queue("q", redis=object())  # type: ignore[arg-type]
