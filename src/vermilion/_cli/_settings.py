"""``vermilion configure``: read or change a queue's flow-control settings.

Like the other commands, it takes the parsed arguments and returns an exit
code, and reaches Redis only through the public ``Queue`` API.
"""

from __future__ import annotations

import argparse
import dataclasses

from vermilion._flow import UNSET, Unset
from vermilion._messages import QueueSettings

from ._connect import connect, open_queue, print_json
from ._exit import EXIT_OK, EXIT_USAGE, CommandError

__all__ = ["configure"]


def _given_or_removed(value: int | None, remove: bool, name: str) -> int | Unset | None:
    if value is not None and remove:
        raise CommandError(f"configure takes --{name} or --no-{name}, not both", EXIT_USAGE)
    if remove:
        return None
    return UNSET if value is None else value


def _describe(queue: str, settings: QueueSettings) -> str:
    bound = "none" if settings.max_size is None else f"{settings.max_size:,}"
    rate = "none"
    if settings.rate_limit is not None:
        rate = f"{settings.rate_limit:,} per {settings.rate_interval:g} s"
    per_key = "none" if settings.max_per_key is None else f"{settings.max_per_key:,}"
    return f"{queue}: max size {bound}, rate limit {rate}, max per key {per_key}"


async def configure(args: argparse.Namespace) -> int:
    max_size = _given_or_removed(args.max_size, args.no_max_size, "max-size")
    rate_limit = _given_or_removed(args.rate_limit, args.no_rate_limit, "rate-limit")
    rate_interval = UNSET if args.rate_interval is None else args.rate_interval
    max_per_key = _given_or_removed(args.max_per_key, args.no_max_per_key, "max-per-key")
    async with connect(args) as client:
        settings = await (await open_queue(args.queue, client)).configure(
            max_size=max_size, rate_limit=rate_limit, rate_interval=rate_interval, max_per_key=max_per_key
        )
    if args.json:
        print_json({"queue": args.queue, **dataclasses.asdict(settings)})
    else:
        print(_describe(args.queue, settings))
    return EXIT_OK
