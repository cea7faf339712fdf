"""The ``vermilion`` command line (console script and ``python -m vermilion``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import json
import logging
import math
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import Any, NoReturn, TextIO, cast

import redis.asyncio as aioredis

from . import __version__
from ._embedded import EmbeddedServer
from ._exceptions import OutcomeUnknownError, VermilionError
from ._messages import EnqueueResult, Failure, Message, QueueStatus, Retry, Success
from ._queue import DEFAULT_URL, Queue, queue_names
from ._redis_internals import describe_client as _describe_client
from ._stats import Summary
from ._worker import AsyncWorker, Handler, WorkerStatus

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


# -- errors and exit codes -----------------------------------------------------

EXIT_OK = 0
EXIT_ERROR = 1
"""The command failed: Redis unreachable or refusing, or the handler's module raised on import."""
EXIT_USAGE = 2
"""Bad input, found before anything was written: arguments, JSON, names, MODULE:HANDLER."""
EXIT_REFUSED = 3
"""``enqueue`` was refused because the mid is busy (queued, locked or in its backoff window)."""
EXIT_FORCED = 4
"""``worker`` stopped at a second signal, before its running handlers finished."""
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """An error the CLI reports as one line, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("vermilion").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_USAGE, f"vermilion: {where}{message} (see '{self.prog} --help')\n")


# -- argument types --------------------------------------------------------------


def _duration(text: str) -> float:
    """Seconds: a finite number, not negative."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite, non-negative number of seconds, got {text!r}")
    return value


def _positive_duration(text: str) -> float:
    """Seconds above zero."""
    value = _duration(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


# -- talking to Redis --------------------------------------------------------------

_CONNECT_TIMEOUT = 5.0
_SOCKET_TIMEOUT = 30.0


def _url(args: argparse.Namespace) -> str:
    url: str | None = args.url
    return url or os.environ.get("VERMILION_URL") or DEFAULT_URL


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace) -> AsyncIterator[aioredis.Redis]:
    """A Redis client for ``--url``; a malformed URL is a usage error."""
    try:
        client = aioredis.Redis.from_url(
            _url(args), socket_connect_timeout=_CONNECT_TIMEOUT, socket_timeout=_SOCKET_TIMEOUT
        )
    except ValueError as exc:  # redis-py's message names the accepted schemes
        raise CommandError(f"bad --url: {exc}", EXIT_USAGE) from None
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


def _queues(names: Sequence[str], client: aioredis.Redis) -> list[Queue]:
    """One ``Queue`` per distinct name, every name checked before any is used."""
    return [Queue(name, redis=client) for name in dict.fromkeys(names)]


def _print_json(value: object) -> None:
    print(json.dumps(value))


# -- status, queues --------------------------------------------------------------

_STATUS_COLUMNS = ("queued", "locked", "backoff", "done", "failed", "total", "lag")


def _status_row(name: str, status: QueueStatus) -> dict[str, object]:
    return {
        "queue": name,
        "queued": status.nqueued,
        "locked": status.nlocked,
        "backoff": status.nbackoff,
        "done": status.ndone,
        "failed": status.nfailed,
        "total": status.ntotal,
        "lag": status.lag,
    }


def format_queue_statuses(rows: Sequence[dict[str, object]]) -> str:
    """Rows of ``status --json`` as the table ``vermilion status`` prints."""
    headers = ["queue", *_STATUS_COLUMNS[:-1], "lag (s)"]
    return format_table(
        headers, [[row["queue"], *(row[column] for column in _STATUS_COLUMNS)] for row in rows]
    )


async def _status(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        queues = _queues(args.queues or await queue_names(client), client)
        rows = [_status_row(queue.name, await queue.status()) for queue in queues]
    if args.json:
        _print_json(rows)
    else:
        print(format_queue_statuses(rows))
    return EXIT_OK


async def _list_queues(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        names = await queue_names(client, args.pattern)
    if args.json:
        _print_json(names)
    else:
        for name in names:
            print(name)
    return EXIT_OK


# -- enqueue, message-status, clear -------------------------------------------------


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def parse_content(text: str) -> object:
    """Message content from JSON text (strict: no NaN or Infinity)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # json.JSONDecodeError included
        raise CommandError(f"content is not valid JSON: {exc}", EXIT_USAGE) from None
    except RecursionError:
        raise CommandError("content is not valid JSON: nested too deeply", EXIT_USAGE) from None


def format_enqueue_result(result: EnqueueResult) -> str:
    if result.ok:
        return f"{result.action} {result.mid}"
    return f"refused {result.mid}: {result.error}"


async def _enqueue(args: argparse.Namespace) -> int:
    content = parse_content(sys.stdin.read() if args.content == "-" else args.content)
    async with _client(args) as client:
        queue = Queue(args.queue, redis=client)
        try:
            result = await queue.enqueue(
                content,
                mid=args.mid,
                delay=args.delay,
                lock_timeout=args.lock_timeout,
                can_update=args.can_update,
                can_requeue=args.can_requeue,
                reset_delay=args.reset_delay,
            )
        except OutcomeUnknownError as exc:
            mids = ", ".join(exc.mids) or "?"
            raise CommandError(
                f"{exc}; check with: vermilion message-status {queue.name} {mids}", EXIT_ERROR
            ) from None
    if args.json:
        _print_json(dataclasses.asdict(result))
    else:
        print(format_enqueue_result(result))
    return EXIT_OK if result.ok else EXIT_REFUSED


async def _message_status(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        status = await Queue(args.queue, redis=client).message_status(args.mid)
    if args.json:
        _print_json(
            {"queue": args.queue, "mid": args.mid, "status": None if status is None else status.value}
        )
    else:
        print("unknown" if status is None else status.value)
    return EXIT_OK


async def _clear(args: argparse.Namespace) -> int:
    if not args.yes:
        raise CommandError(
            f"clear deletes every message of {', '.join(args.queues)}; add --yes to do it", EXIT_USAGE
        )
    async with _client(args) as client:
        queues = _queues(args.queues, client)
        removed = [(queue.name, await queue.clear()) for queue in queues]
    if args.json:
        _print_json([{"queue": name, "removed": n} for name, n in removed])
    else:
        for name, n in removed:
            print(f"cleared {name}: removed {n:,} live message{'' if n == 1 else 's'}")
    return EXIT_OK


# -- worker ------------------------------------------------------------------------

log = logging.getLogger("vermilion.cli")


def load_handler(spec: str) -> Handler:
    """Import ``package.module:attribute`` (the attribute may be dotted) and check it.

    The current directory comes first on ``sys.path``, as with ``python -m``.
    Raises ``CommandError`` with a one-line reason.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise CommandError(
            f"handler must be given as MODULE:HANDLER (for example myapp.tasks:handle), got {spec!r}",
            EXIT_USAGE,
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise CommandError(
                f"cannot import {module_name!r}: no module named {missing!r}"
                f" (looked in the current directory {cwd} and on sys.path)",
                EXIT_USAGE,
            ) from None
        raise CommandError(_import_failure(module_name, exc)) from None
    except Exception as exc:  # the module's own code failed
        raise CommandError(_import_failure(module_name, exc)) from None
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandError(
                f"{spec!r}: module {module_name!r} has no attribute {attribute!r}", EXIT_USAGE
            ) from None
    if not callable(target):
        raise CommandError(
            f"{spec!r} is not callable (it is of type {type(target).__name__}); it must be an async function"
            " taking a Message",
            EXIT_USAGE,
        )
    if inspect.isroutine(target) and not inspect.iscoroutinefunction(target):
        raise CommandError(f"{spec!r} is not an async function: define it with 'async def'", EXIT_USAGE)
    return cast("Handler", target)


def _import_failure(module_name: str, exc: BaseException) -> str:
    """One line for an exception raised while importing the user's module: where and what."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [frame for frame in frames if "importlib" not in frame.filename]
    if own and not isinstance(exc, SyntaxError):  # a SyntaxError names its line itself
        where = f" at {own[-1].filename}:{own[-1].lineno}"
    return f"importing {module_name!r} failed{where}: {type(exc).__name__}: {exc}"


class _StopSignals:
    """SIGTERM and SIGINT: the first asks for a graceful stop, the second for an immediate one."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, stop_timeout: float) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()
        self._stop_timeout = stop_timeout
        self._loop = asyncio.get_running_loop()
        self._fallback: dict[int, object] = {}

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.stop.is_set():
            log.info(
                "received %s: stopping; running handlers have %g s to finish (%s again to stop at once)",
                name,
                self._stop_timeout,
                name,
            )
            self.stop.set()
        elif not self.force.is_set():
            log.warning(
                "received %s again: stopping at once; unfinished messages are left to their leases", name
            )
            self.force.set()

    def __enter__(self) -> _StopSignals:
        for sig in self.SIGNALS:
            try:
                self._loop.add_signal_handler(sig, self._received, sig)
            except NotImplementedError:  # Windows: no loop signal handlers
                self._fallback[sig] = signal.signal(
                    sig, lambda signum, frame: self._loop.call_soon_threadsafe(self._received, signum)
                )
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig in self.SIGNALS:
            if sig in self._fallback:
                signal.signal(sig, self._fallback[sig])  # type: ignore[arg-type]
            else:
                self._loop.remove_signal_handler(sig)


async def _cancel_other_tasks() -> None:
    """Cancel every other task of this event loop (the worker's) and wait for them to end."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def serve(args: argparse.Namespace, handler: Handler) -> int:
    """Run a worker until SIGTERM or SIGINT, then stop it gracefully."""
    with _StopSignals(args.stop_timeout) as signals:
        async with _client(args) as client:
            queue = Queue(args.queue, redis=client)
            worker = AsyncWorker(
                queue,
                handler,
                concurrency=args.concurrency,
                lock_timeout=args.lock_timeout,
                handler_timeout=args.handler_timeout,
                max_attempts=args.max_attempts,
            )
            await worker.start()
            log.info(
                "serving queue %r at %s with %s (concurrency %d, lock timeout %g s, handler timeout %s,"
                " max attempts %s, stop timeout %g s)",
                queue.name,
                _describe_client(client),
                args.handler,
                worker.concurrency,
                worker.lock_timeout,
                "none" if worker.handler_timeout is None else f"{worker.handler_timeout:g} s",
                worker.max_attempts or "none",
                args.stop_timeout,
            )
            await signals.stop.wait()
            stopping = asyncio.ensure_future(worker.stop(args.stop_timeout))
            forced = asyncio.ensure_future(signals.force.wait())
            await asyncio.wait({stopping, forced}, return_when=asyncio.FIRST_COMPLETED)
            forced.cancel()
            if not stopping.done():
                await _cancel_other_tasks()
                log.warning("worker stopped before its running handlers finished")
                return EXIT_FORCED
            stopping.result()
            counts = worker.stats().counts
            log.info(
                "outcomes since start: %d success, %d retry, %d failure",
                counts.get("handler/success", 0),
                counts.get("handler/retry", 0),
                counts.get("handler/error", 0),
            )
    return EXIT_OK


def _worker(args: argparse.Namespace) -> int:
    handler = load_handler(args.handler)
    return asyncio.run(serve(args, handler))


def _run_async(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(command(args))

    return run


# -- the parser ------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vermilion",
        description="A durable Redis message queue for asyncio.",
        epilog="Exit codes: 0 ok; 1 error (Redis unreachable or refusing, or the handler's module"
        " raised); 2 bad input; 3 enqueue refused; 4 worker stopped by a second signal; 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    server = _Parser(add_help=False)
    server.add_argument(
        "--url",
        help=f"Redis URL (default: $VERMILION_URL, else {DEFAULT_URL})",
    )
    output = _Parser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON instead of text")

    worker = commands.add_parser(
        "worker",
        parents=[server],
        help="handle a queue's messages with an async function, until SIGTERM or SIGINT",
        description="Import MODULE:HANDLER (the current directory is on sys.path) and run an AsyncWorker"
        " on QUEUE. The first SIGTERM or SIGINT stops it gracefully: no new messages, running handlers"
        " get --stop-timeout seconds to finish, the rest are left to their leases; exit code 0. A second"
        " signal stops it at once (exit code 4). Logs go to stderr.",
    )
    worker.add_argument("handler", metavar="MODULE:HANDLER", help="for example myapp.tasks:handle")
    worker.add_argument("--queue", required=True, metavar="NAME", help="the queue to serve")
    worker.add_argument(
        "--concurrency", type=_positive_int, default=10, metavar="N", help="handlers at once (default 10)"
    )
    worker.add_argument(
        "--lock-timeout",
        type=_positive_duration,
        default=30.0,
        metavar="S",
        help="the lease in seconds, renewed while a handler runs (default 30)",
    )
    worker.add_argument(
        "--handler-timeout",
        type=_positive_duration,
        metavar="S",
        help="cancel a handler after S seconds and fail its message (default: no limit)",
    )
    worker.add_argument(
        "--max-attempts",
        type=_positive_int,
        metavar="N",
        help="fail a message handed out more than N times without calling the handler (default: no limit)",
    )
    worker.add_argument(
        "--stop-timeout",
        type=_duration,
        default=30.0,
        metavar="S",
        help="on SIGTERM/SIGINT, wait up to S seconds for running handlers (default 30)",
    )
    worker.add_argument(
        "--log-level",
        type=str.lower,
        choices=_LOG_LEVELS,
        default="info",
        metavar="LEVEL",
        help=f"one of {', '.join(_LOG_LEVELS)} (default info)",
    )
    worker.set_defaults(run=_worker)

    status = commands.add_parser(
        "status",
        parents=[server, output],
        help="counts and lag of every queue, or of the named ones",
        description="Counts and lag of the named queues, or of every queue with data in Redis."
        " lag is how long (s) the oldest ready message has waited.",
    )
    status.add_argument("queues", nargs="*", metavar="QUEUE", help="queue names (default: every queue)")
    status.set_defaults(run=_run_async(_status))

    queues = commands.add_parser(
        "queues",
        parents=[server, output],
        help="names of the queues that have data in Redis",
        description="Names of the queues that have data in Redis, sorted, one a line.",
    )
    queues.add_argument(
        "--pattern", default="*", metavar="GLOB", help="only names matching this Redis glob (default *)"
    )
    queues.set_defaults(run=_run_async(_list_queues))

    enqueue = commands.add_parser(
        "enqueue",
        parents=[server, output],
        help="add one message, given as JSON",
        description="Add one message. Prints 'added MID' or 'updated MID' (exit code 0), or"
        " 'refused MID: REASON' when the mid is busy (exit code 3).",
    )
    enqueue.add_argument("queue", metavar="QUEUE")
    enqueue.add_argument("content", metavar="JSON", help="the content as JSON; - reads it from stdin")
    enqueue.add_argument("--mid", help="message id for de-duplication (default: a random UUID)")
    enqueue.add_argument(
        "--delay",
        type=_duration,
        default=0.0,
        metavar="S",
        help="seconds before it may be handled (default 0)",
    )
    enqueue.add_argument(
        "--lock-timeout",
        type=_positive_duration,
        metavar="S",
        help="this message's lease in seconds (default: the worker's)",
    )
    enqueue.add_argument(
        "--can-update", action="store_true", help="if the mid is still queued, replace its content"
    )
    enqueue.add_argument(
        "--can-requeue",
        action="store_true",
        help="if the mid is being handled or in its backoff window, handle this content again after",
    )
    enqueue.add_argument(
        "--reset-delay", action="store_true", help="if the mid is still queued, restart its delay from now"
    )
    enqueue.set_defaults(run=_run_async(_enqueue))

    message_status = commands.add_parser(
        "message-status",
        parents=[server, output],
        help="the status of one message",
        description="The status of one message (queued, locked, done-with-backoff, failed, ...), or"
        " 'unknown' for a mid the queue does not know. Exit code 0 either way.",
    )
    message_status.add_argument("queue", metavar="QUEUE")
    message_status.add_argument("mid", metavar="MID")
    message_status.set_defaults(run=_run_async(_message_status))

    clear = commands.add_parser(
        "clear",
        parents=[server, output],
        help="delete every message and all state of the named queues",
        description="Delete every message and all state of the named queues (exact names, never"
        " patterns). Refuses without --yes.",
    )
    clear.add_argument("queues", nargs="+", metavar="QUEUE")
    clear.add_argument("--yes", action="store_true", help="really delete")
    clear.set_defaults(run=_run_async(_clear))

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


def _configure_logging(args: argparse.Namespace) -> None:
    if args.command == "worker":
        level = args.log_level.upper()
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    else:
        level, fmt = "WARNING", "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    _configure_logging(args)
    try:
        return int(args.run(args))
    except CommandError as exc:
        message, code = str(exc), exc.exit_code
    except (ValueError, TypeError) as exc:  # bad input, refused before anything was sent
        message, code = str(exc), EXIT_USAGE
    except VermilionError as exc:  # an unusable server
        message, code = str(exc), EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`vermilion queues | head`)
        sys.stderr.close()
        return 141
    print(f"vermilion: {message}", file=sys.stderr)
    return code
