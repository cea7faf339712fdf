"""The CLI's way to Redis: the server a command uses, its client, its queues, and JSON output.

Owns ``--url`` and ``$VERMILION_URL`` resolution and the timeouts of the CLI's
client; the commands get their ``Queue`` objects here. It must not run a
command or format text, nor read redis-py's connection internals (those stay
in ``vermilion._redis_internals``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import AsyncIterator, Sequence

from vermilion._clients import client_from_url
from vermilion._queue import DEFAULT_URL, Queue
from vermilion._queues import queue_shards
from vermilion._redis_internals import RedisClient
from vermilion._validation import check_queue_name

from ._exit import EXIT_USAGE, CommandError

__all__ = ["connect", "named_queues", "open_queue", "print_json", "redis_url"]

_CONNECT_TIMEOUT = 5.0
_SOCKET_TIMEOUT = 30.0


def redis_url(args: argparse.Namespace) -> str:
    url: str | None = args.url
    return url or os.environ.get("VERMILION_URL") or DEFAULT_URL


@contextlib.asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[RedisClient]:
    """A Redis client for ``--url`` (one server, a cluster, Sentinel); a malformed URL is a usage error."""
    try:
        client = client_from_url(
            redis_url(args), connect_timeout=_CONNECT_TIMEOUT, socket_timeout=_SOCKET_TIMEOUT
        )
    except ValueError as exc:  # redis-py's message names the accepted schemes
        raise CommandError(f"bad --url: {exc}", EXIT_USAGE) from None
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


async def named_queues(names: Sequence[str], client: RedisClient) -> list[Queue]:
    """One ``Queue`` per distinct name, every name checked before any is used."""
    checked = [check_queue_name(name) for name in dict.fromkeys(names)]
    return [await open_queue(name, client) for name in checked]


async def open_queue(name: str, client: RedisClient) -> Queue:
    """The ``Queue`` of a name, with the shard count the queue keeps (a bad name raises ``ValueError``)."""
    check_queue_name(name)  # before anything is sent
    return Queue(name, redis=client, shards=await queue_shards(client, name))


def print_json(value: object) -> None:
    print(json.dumps(value))
