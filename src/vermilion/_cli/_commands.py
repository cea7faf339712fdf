"""The commands that read or feed queues: status, queues, workers, enqueue, message-status, clear, migrate.

Each takes the parsed arguments and returns an exit code; text goes through
:mod:`._format`, JSON through :func:`._connect.print_json`. They must not reach
past the public ``Queue`` API (but ``migrate``, which drives
``vermilion._migration``), nor build tables themselves.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from vermilion._exceptions import OutcomeUnknownError
from vermilion._migration import migrate_queue, v1_queue_names
from vermilion._protocol import ScriptClient
from vermilion._queues import queue_names
from vermilion._validation import check_queue_name

from ._connect import connect, named_queues, open_queue, print_json
from ._exit import EXIT_ERROR, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, CommandError
from ._format import (
    format_enqueue_result,
    format_migration,
    format_queue_statuses,
    format_workers,
    status_row,
    worker_row,
)

__all__ = [
    "clear",
    "enqueue",
    "list_queues",
    "list_workers",
    "message_status",
    "migrate",
    "parse_content",
    "status",
]


async def status(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        # with_workers: a queue whose workers keep up is empty most of the time, yet is in use.
        every = args.queues or await queue_names(client, with_workers=True)
        queues = await named_queues(every, client)
        rows = [status_row(queue.name, await queue.status()) for queue in queues]
    if args.json:
        print_json(rows)
    else:
        print(format_queue_statuses(rows))
    return EXIT_OK


async def list_queues(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        names = await queue_names(client, args.pattern, with_workers=args.with_workers)
    if args.json:
        print_json(names)
    else:
        for name in names:
            print(name)
    return EXIT_OK


async def list_workers(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        workers = await (await open_queue(args.queue, client)).workers()
    if args.json:
        print_json([worker_row(worker) for worker in workers])
    else:
        print(format_workers(args.queue, workers))
    return EXIT_OK


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


async def enqueue(args: argparse.Namespace) -> int:
    content = parse_content(sys.stdin.read() if args.content == "-" else args.content)
    async with connect(args) as client:
        queue = await open_queue(args.queue, client)
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
        print_json(dataclasses.asdict(result))
    else:
        print(format_enqueue_result(result))
    return EXIT_OK if result.ok else EXIT_REFUSED


async def message_status(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        status = await (await open_queue(args.queue, client)).message_status(args.mid)
    if args.json:
        print_json({"queue": args.queue, "mid": args.mid, "status": None if status is None else status.value})
    else:
        print("unknown" if status is None else status.value)
    return EXIT_OK


async def clear(args: argparse.Namespace) -> int:
    if not args.yes:
        raise CommandError(
            f"clear deletes every message of {', '.join(args.queues)}; add --yes to do it", EXIT_USAGE
        )
    async with connect(args) as client:
        queues = await named_queues(args.queues, client)
        removed = [(queue.name, await queue.clear()) for queue in queues]
    if args.json:
        print_json([{"queue": name, "removed": n} for name, n in removed])
    else:
        for name, n in removed:
            print(f"cleared {name}: removed {n:,} live message{'' if n == 1 else 's'}")
    return EXIT_OK


async def migrate(args: argparse.Namespace) -> int:
    if bool(args.queues) == args.all:
        raise CommandError("migrate takes queue names or --all, not both nor neither", EXIT_USAGE)
    names = list(dict.fromkeys(check_queue_name(name) for name in args.queues))
    async with connect(args) as client:
        scripts = ScriptClient(client)
        if args.all:
            names = await v1_queue_names(scripts)
        reports = []
        for name in names:
            report = await migrate_queue(scripts, name, batch=args.batch)
            reports.append(report)
            if not args.json:
                print(format_migration(report), flush=True)  # a long run shows each queue as it ends
    if args.json:
        print_json([{"queue": r.queue, "migrated": r.found, "moved": r.moved} for r in reports])
    elif not reports:
        print("no queue holds version-1 data: nothing to migrate")
    return EXIT_OK
