"""The commands over a queue's failure history: failed, replay, purge-failed.

Each takes the parsed arguments and returns an exit code; text goes through
:mod:`._format`, JSON through :func:`._connect.print_json`. They must not reach
past the public ``Queue`` API, nor build tables themselves.
"""

from __future__ import annotations

import argparse
import dataclasses

from ._connect import connect, open_queue, print_json
from ._exit import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, CommandError
from ._format import failed_row, format_failed, format_replay_result

__all__ = ["failed", "purge_failed", "replay"]


async def failed(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        entries = await (await open_queue(args.queue, client)).failed(limit=args.limit, offset=args.offset)
    if args.json:
        print_json([failed_row(entry) for entry in entries])
    elif entries:
        print(format_failed(entries))
    else:
        print(
            f"no failed messages in {args.queue}"
            + (f" after the {args.offset:,} newest" if args.offset else "")
        )
    return EXIT_OK


def _mids_or_all(args: argparse.Namespace, command: str) -> None:
    if bool(args.mids) == args.all:
        raise CommandError(f"{command} takes mids or --all, not both nor neither", EXIT_USAGE)


def _plural(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


async def replay(args: argparse.Namespace) -> int:
    _mids_or_all(args, "replay")
    async with connect(args) as client:
        queue = await open_queue(args.queue, client)
        if args.all:
            replayed = await queue.replay_failed()
        else:
            results = await queue.replay(*args.mids)
    if args.all:
        if args.json:
            print_json({"queue": args.queue, "replayed": replayed})
        else:
            print(f"replayed {_plural(replayed, 'failed message')} of {args.queue}")
        return EXIT_OK
    if args.json:
        print_json([dataclasses.asdict(result) for result in results])
    else:
        for result in results:
            print(format_replay_result(result))
    return EXIT_OK if all(result.ok for result in results) else EXIT_REFUSED


async def purge_failed(args: argparse.Namespace) -> int:
    _mids_or_all(args, "purge-failed")
    async with connect(args) as client:
        removed = await (await open_queue(args.queue, client)).purge_failed(*args.mids)
    if args.json:
        print_json({"queue": args.queue, "purged": removed})
    else:
        print(f"purged {_plural(removed, 'failed message')} of {args.queue}")
    return EXIT_OK
