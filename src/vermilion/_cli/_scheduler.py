"""``vermilion scheduler``: enqueue one recurring message at each of its slots, until a signal.

Owns building the schedule from the command's options and the stop on
SIGTERM or SIGINT. Any number of these processes (and of workers running the
same schedule) may run at once: each slot is enqueued once. It must not parse
options (:mod:`._parser` does) nor reach into the schedule's insides.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from datetime import datetime, timezone

from vermilion._queue import Queue
from vermilion._schedules import Schedule, schedule

from ._commands import parse_content
from ._connect import connect
from ._exit import EXIT_OK, EXIT_USAGE, CommandError

__all__ = ["run_scheduler"]

log = logging.getLogger("vermilion.cli")


def _build(args: argparse.Namespace, queue: Queue) -> Schedule:
    content = parse_content(args.content)
    try:
        return schedule(queue, args.name, cron=args.cron, content=content, tz=args.tz, catch_up=args.catch_up)
    except ImportError as exc:  # the cron extra is missing: say what to install
        raise CommandError(str(exc), EXIT_USAGE) from None


async def _until_signal(item: Schedule) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises KeyboardInterrupt
            loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(item.run())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in (running, stopped):
        task.cancel()
    await asyncio.gather(stopped, return_exceptions=True)
    if not running.cancelled() and running.done():
        running.result()  # a ConfigurationError: the queue cannot be used
    with contextlib.suppress(asyncio.CancelledError):
        await running


async def _serve(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        queue = Queue(args.queue, redis=client)
        item = _build(args, queue)
        upcoming = item.next_slot(datetime.now(timezone.utc))
        log.info(
            "scheduling %r on queue %r at %s: cron %r in %s, catch-up %d; next slot %s",
            item.name,
            queue.name,
            queue.url,
            item.cron,
            item.tz,
            item.catch_up,
            "none" if upcoming is None else upcoming.isoformat(),
        )
        await _until_signal(item)
    log.info("scheduler %r stopped", item.name)
    return EXIT_OK


def run_scheduler(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))
