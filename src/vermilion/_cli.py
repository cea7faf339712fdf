"""The ``vermilion`` command line (console script and ``python -m vermilion``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TextIO

from ._embedded import EmbeddedServer
from ._exceptions import VermilionError
from ._messages import Failure, Message, Retry, Success
from ._queue import Queue
from ._stats import Summary
from ._worker import AsyncWorker, WorkerStatus

__all__ = ["main"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: left-aligned text, right-aligned numbers."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(widths[i]) if numeric[i] else value.ljust(widths[i]) for i, value in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in cells)])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.2f}"
    return str(value)


def format_worker_status(status: WorkerStatus) -> str:
    """The worker's status as readable tables."""
    state = "running" if status.running else "stopped"
    out = [
        f"worker on queue {status.queue!r}: {state},"
        f" concurrency {status.concurrency}, in flight {status.in_flight}"
    ]
    if status.queue_status is not None:
        qs = status.queue_status
        out += [
            "",
            format_table(
                ["queued", "locked", "backoff", "done", "failed", "total", "lag (s)"],
                [[qs.nqueued, qs.nlocked, qs.nbackoff, qs.ndone, qs.nfailed, qs.ntotal, qs.lag]],
            ),
        ]
    summaries: list[tuple[str, Summary | None]] = [
        ("queue size", status.stats.queue_size),
        ("queueing time (ms)", status.stats.queueing_time_ms),
        ("handling time (ms)", status.stats.handling_time_ms),
    ]
    out += [
        "",
        format_table(
            ["measure", "n", "min", "mean", "p50", "p90", "p95", "p99", "max", "last"],
            [
                [name]
                + (
                    [None] * 9
                    if s is None
                    else [
                        s.n,
                        float(s.min),
                        s.mean,
                        float(s.p50),
                        float(s.p90),
                        float(s.p95),
                        float(s.p99),
                        float(s.max),
                        float(s.last),
                    ]
                )
                for name, s in summaries
            ],
        ),
        "",
        format_table(["count", "value"], sorted(status.stats.counts.items())),
    ]
    return "\n".join(out)


# -- demo ----------------------------------------------------------------------


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


def _demo(args: argparse.Namespace) -> int:
    out = sys.stdout
    with _server_url(args.url, out) as url:
        asyncio.run(
            run_demo(
                url, messages=args.messages, concurrency=args.concurrency, queue_name=args.queue, out=out
            )
        )
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vermilion", description="A durable Redis message queue for asyncio."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="enqueue and handle 10,000 messages, then show the worker's status"
    )
    demo.add_argument(
        "--url",
        default=os.environ.get("VERMILION_URL"),
        help="Redis URL (default: $VERMILION_URL, else an embedded Valkey server)",
    )
    demo.add_argument(
        "--messages", type=_positive_int, default=10_000, help="messages to enqueue (default 10,000)"
    )
    demo.add_argument("--concurrency", type=_positive_int, default=50, help="handlers at once (default 50)")
    demo.add_argument(
        "--queue", default="vermilion-demo", help="queue name (default vermilion-demo); cleared first"
    )
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return int(args.run(args))
    except (VermilionError, ValueError, TypeError) as exc:  # bad input or an unusable server
        print(f"vermilion: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`vermilion demo | head`)
        sys.stderr.close()
        return 141
