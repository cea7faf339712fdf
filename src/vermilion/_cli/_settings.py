"""``vermilion configure``: read or change a queue's flow-control settings.

Like the other commands, it takes the parsed arguments and returns an exit
code, and reaches Redis only through the public ``Queue`` API.
"""

from __future__ import annotations

import argparse
import dataclasses

from vermilion._flow import UNSET, Unset
from vermilion._queue import Queue

from ._connect import connect, print_json
from ._exit import EXIT_OK, EXIT_USAGE, CommandError

__all__ = ["configure"]


def _max_size(args: argparse.Namespace) -> int | Unset | None:
    if args.max_size is not None and args.no_max_size:
        raise CommandError("configure takes --max-size or --no-max-size, not both", EXIT_USAGE)
    if args.no_max_size:
        return None
    return UNSET if args.max_size is None else int(args.max_size)


async def configure(args: argparse.Namespace) -> int:
    max_size = _max_size(args)
    async with connect(args) as client:
        settings = await Queue(args.queue, redis=client).configure(max_size=max_size)
    if args.json:
        print_json({"queue": args.queue, **dataclasses.asdict(settings)})
    else:
        bound = "none" if settings.max_size is None else f"{settings.max_size:,}"
        print(f"{args.queue}: max size {bound}")
    return EXIT_OK
