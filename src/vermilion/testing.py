"""Helpers for testing code that uses vermilion.

- :func:`make_message` builds the ``Message`` a worker would hand your
  handler, so a handler can be unit-tested without Redis.
- :func:`drain` runs a worker on a queue until no message is left to handle,
  for integration tests against a real server.
- :func:`embedded_server` starts a throw-away Valkey server (needs the
  ``vermilion[embedded]`` extra) when no Redis is at hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._embedded import EmbeddedServer
from ._enqueue_args import random_mids
from ._messages import Message
from ._queue import Queue
from ._validation import check_mid, positive_int, seconds
from ._worker import AsyncWorker, Handler, WorkerStats

__all__ = ["drain", "embedded_server", "make_message"]

_DRAIN_POLL_INTERVAL = 0.01


def make_message(
    content: Any,
    *,
    mid: str | None = None,
    queue: str = "test",
    attempt: int = 1,
    lock_timeout: float = 30.0,
    age: float = 0.0,
) -> Message:
    """A ``Message`` as a worker would hand it to a handler."""
    return Message(
        content=content,
        mid=random_mids(1)[0] if mid is None else check_mid(mid),
        queue=queue,
        attempt=positive_int(attempt, "attempt"),
        lock_timeout=seconds(lock_timeout, "lock_timeout", allow_zero=False),
        age=seconds(age, "age"),
    )


async def drain(
    queue: Queue,
    handler: Handler,
    *,
    concurrency: int = 10,
    timeout: float = 30.0,
    **worker_options: Any,
) -> WorkerStats:
    """Run a worker until the queue has no queued, delayed or locked message left.

    Messages still inside a de-duplication window do not count. Returns the
    worker's statistics. Raises ``TimeoutError`` if the queue is not drained
    within ``timeout`` seconds (the worker is stopped either way).
    """
    limit = seconds(timeout, "timeout")
    worker_options.setdefault("monitor", None)
    worker = AsyncWorker(queue, handler, concurrency=concurrency, **worker_options)
    deadline = time.monotonic() + limit
    async with worker:
        while True:
            status = await queue.status()
            if status.nqueued + status.nlocked + status.nbackoff == 0 and worker._outcomes_acknowledged():
                return worker.stats()
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue {queue.name!r} was not drained within {limit} s: {status}")
            await asyncio.sleep(_DRAIN_POLL_INTERVAL)


@contextmanager
def embedded_server() -> Iterator[str]:
    """Start a throw-away Valkey server on a free loopback port; yields its URL."""
    with EmbeddedServer() as server:
        yield server.url
