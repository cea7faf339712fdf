"""``vermilion demo``: 10,000 messages enqueued and handled, with live progress and the worker's stats.

Owns the demo's handler (some retries, some failures), its data (duplicates and
delayed batches included) and its progress line; it runs on the embedded Valkey
server when no Redis is given. No other command may depend on it, and it uses
``Queue`` and ``AsyncWorker`` through their public API only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
from collections.abc import Iterator
from typing import TextIO

from vermilion._embedded import EmbeddedServer
from vermilion._messages import Failure, Message, Retry, Success
from vermilion._queue import Queue
from vermilion._worker import AsyncWorker, WorkerStatus

from ._format import format_worker_status

__all__ = ["run_demo", "run_demo_command"]


class _DemoHandler:
    """A handler that works a little, sometimes asks for a retry, sometimes fails."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self.finished = 0  # outcomes that end a message: success or failure
        self.all_finished = asyncio.Event()
        self.expected = 0

    async def __call__(self, message: Message) -> Success | Retry | Failure:
        await asyncio.sleep(self._random.random() * 0.004)
        roll = self._random.random()
        if roll < 0.05 and message.attempt < 3:
            return Retry(backoff=0.1 * message.attempt)
        outcome: Success | Failure = (
            Failure(reason="the demo fails 2% of messages") if roll > 0.98 else Success()
        )
        self.finished += 1
        if self.finished >= self.expected:
            self.all_finished.set()
        return outcome


@contextlib.contextmanager
def _server_url(url: str | None, out: TextIO) -> Iterator[str]:
    if url:
        yield url
        return
    print("no --url given: starting an embedded Valkey server ...", file=out)
    with EmbeddedServer() as server:
        print(f"embedded Valkey at {server.url}", file=out)
        yield server.url


async def _progress_text(queue: Queue, worker: AsyncWorker, handler: _DemoHandler, elapsed: float) -> str:
    counts = worker.stats().counts
    status = await queue.status()
    return (
        f"finished {handler.finished:,}/{handler.expected:,}"
        f" | success {counts.get('handler/success', 0):,}"
        f" retry {counts.get('handler/retry', 0):,}"
        f" failed {counts.get('handler/error', 0):,}"
        f" | queued {status.nqueued:,} delayed {status.nbackoff:,} locked {status.nlocked:,}"
        f" | {handler.finished / max(elapsed, 1e-9):,.0f} msg/s"
    )


async def _progress(queue: Queue, worker: AsyncWorker, handler: _DemoHandler, out: TextIO) -> None:
    """Show a live progress line: rewritten in place on a terminal, a line a second otherwise."""
    started = time.perf_counter()
    interactive = out.isatty()
    while not handler.all_finished.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(handler.all_finished.wait(), 0.2 if interactive else 1.0)
        text = await _progress_text(queue, worker, handler, time.perf_counter() - started)
        print(
            f"\r{text}\033[K" if interactive else text, end="" if interactive else "\n", file=out, flush=True
        )
    if interactive:
        print(file=out)


async def run_demo(
    url: str, *, messages: int, concurrency: int, queue_name: str, out: TextIO
) -> WorkerStatus:
    rng = random.Random(7)
    async with Queue(queue_name, url) as queue:
        handler = _DemoHandler(seed=11)
        worker = AsyncWorker(queue, handler, concurrency=concurrency, monitor=None)  # checks the options
        await queue.clear()
        unique = messages - messages // 20
        contents = [{"order": i, "amount": rng.randint(1, 500)} for i in range(messages)]
        # One message in twenty reuses an earlier mid: de-duplication refuses it.
        mids = [f"order-{i}" if i < unique else f"order-{rng.randrange(unique)}" for i in range(messages)]
        added = refused = delayed = 0
        for start in range(0, messages, 100):
            chunk = slice(start, start + 100)
            # Every tenth batch is delayed by up to two seconds.
            delay = rng.uniform(0.2, 2.0) if start % 1000 == 500 else 0.0
            results = await queue.enqueue_many(contents[chunk], mids=mids[chunk], delay=delay)
            ok = sum(r.ok for r in results)
            added += ok
            refused += len(results) - ok
            delayed += ok if delay else 0
        print(
            f"enqueued {added:,} messages ({delayed:,} delayed);"
            f" {refused:,} refused as duplicates of a queued mid",
            file=out,
        )
        handler.expected = added
        async with worker:
            await _progress(queue, worker, handler, out)
        status = await worker.status()
        print(file=out)
        print(format_worker_status(status), file=out)
        await queue.clear()
        return status


def run_demo_command(args: argparse.Namespace) -> int:
    out = sys.stdout
    with _server_url(args.url or os.environ.get("VERMILION_URL"), out) as url:
        asyncio.run(
            run_demo(
                url, messages=args.messages, concurrency=args.concurrency, queue_name=args.queue, out=out
            )
        )
    return 0
