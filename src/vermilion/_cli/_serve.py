"""``vermilion worker``: import the user's handler, serve a queue until a signal, stop gracefully.

Owns loading ``MODULE:HANDLER`` (with one-line reasons for what goes wrong),
the two-signal stop (graceful, then at once), and the worker's log lines. It
must not parse options (:mod:`._parser` does) nor reach into the worker's or
the queue's insides: ``AsyncWorker`` and ``Queue`` are used through their
public API.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
import traceback
from typing import cast

from vermilion._exceptions import VermilionConnectionError
from vermilion._queue import Queue
from vermilion._queues import queue_shards
from vermilion._redis_internals import RedisClient
from vermilion._worker import AsyncWorker, Handler

from ._connect import connect
from ._exit import EXIT_FORCED, EXIT_OK, EXIT_USAGE, CommandError
from ._metrics import serve_worker_metrics

__all__ = ["LOG_LEVELS", "load_handler", "run_worker", "serve"]

log = logging.getLogger("vermilion.cli")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


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


async def _stored_shards(args: argparse.Namespace, client: RedisClient) -> int:
    """The queue's shard count in Redis; 1 if Redis cannot be asked (the worker starts anyway)."""
    try:
        return await queue_shards(client, args.queue)
    except VermilionConnectionError:
        return 1


async def serve(args: argparse.Namespace, handler: Handler) -> int:
    """Run a worker until SIGTERM or SIGINT, then stop it gracefully."""
    with _StopSignals(args.stop_timeout) as signals:
        async with connect(args) as client:
            queue = Queue(args.queue, redis=client, shards=args.shards or await _stored_shards(args, client))
            worker = AsyncWorker(
                queue,
                handler,
                concurrency=args.concurrency,
                lock_timeout=args.lock_timeout,
                handler_timeout=args.handler_timeout,
                max_attempts=args.max_attempts,
            )
            if args.metrics_port is not None:
                serve_worker_metrics(args, worker)
            await worker.start()
            log.info(
                "serving queue %r at %s with %s (concurrency %d, lock timeout %g s, handler timeout %s,"
                " max attempts %s, stop timeout %g s)",
                queue.name,
                queue.url,
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


def run_worker(args: argparse.Namespace) -> int:
    handler = load_handler(args.handler)
    return asyncio.run(serve(args, handler))
