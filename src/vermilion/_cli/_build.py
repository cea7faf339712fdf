"""The pieces every command's options are built from: the parser class whose
errors are one line, the shared option groups (server, output, log level), and
the wrapper that runs an async command.

Used by :mod:`._parser` (the queue commands and the whole parser) and
:mod:`._process_commands` (the commands that run until stopped).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from vermilion._queue import DEFAULT_URL

from ._exit import EXIT_USAGE
from ._help import ABOUT
from ._serve import LOG_LEVELS

__all__ = [
    "JSON_HELP",
    "URL_HELP",
    "Parser",
    "add_log_level",
    "command",
    "queue_command",
    "run_async",
    "with_output",
    "with_server",
]

URL_HELP = f"Redis URL (default: $VERMILION_URL, else {DEFAULT_URL})"
JSON_HELP = "print JSON instead of text"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("vermilion").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_USAGE, f"vermilion: {where}{message} (see '{self.prog} --help')\n")


def run_async(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(command(args))

    return run


def command(
    commands: Any, name: str, run: Callable[[argparse.Namespace], int], **options: Any
) -> argparse.ArgumentParser:
    """A subcommand's parser, whose parsed arguments carry the function that runs it."""
    parser: argparse.ArgumentParser = commands.add_parser(name, **options)
    parser.set_defaults(run=run)
    return parser


def queue_command(
    commands: Any, name: str, run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
) -> argparse.ArgumentParser:
    """A command that reads or feeds queues: ``--url`` and ``--json``, its help from ``ABOUT``."""
    help_text, description = ABOUT[name]
    return command(
        commands, name, run_async(run), parents=with_output(), help=help_text, description=description
    )


def with_server() -> list[argparse.ArgumentParser]:
    """The parents of a command that talks to Redis: ``--url`` after the command too.

    SUPPRESS as the default, so that a command without it keeps the global one.
    """
    server = Parser(add_help=False)
    server.add_argument("--url", default=argparse.SUPPRESS, help=URL_HELP)
    return [server]


def with_output() -> list[argparse.ArgumentParser]:
    """The parents of a command that can print JSON: ``--url`` and ``--json``."""
    output = Parser(add_help=False)
    output.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    output.set_defaults(prints_json=True)
    return [*with_server(), output]


def add_log_level(parser: argparse.ArgumentParser, default: str, whose: str) -> None:
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=default,
        metavar="LEVEL",
        help=f"{whose}one of {', '.join(LOG_LEVELS)} (default {default})",
    )
