"""The command line's arguments: the parser and one function per queue command.

Owns the queue commands' options and the global options ``--url`` and
``--json``, which may stand before the command or after it. A bad value is a
one-line usage error, exit code 2. The value types are in :mod:`._types`, the
queue commands' descriptions in :mod:`._help`, the shared pieces in
:mod:`._build`, and the options of the commands that run until stopped
(``worker``, ``scheduler``, ``demo``, ``dashboard``) in :mod:`._process_commands`.
It runs no command and talks to no server.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from vermilion import __version__

from . import _commands, _failures, _settings
from ._build import (
    JSON_HELP as _JSON_HELP,
    URL_HELP as _URL_HELP,
    Parser as _Parser,
    queue_command as _queue_command,
)
from ._process_commands import add_process_commands
from ._types import (
    duration as _duration,
    non_negative_int as _non_negative_int,
    positive_duration as _positive_duration,
    positive_int as _positive_int,
)

__all__ = ["parse_args"]


def _add_status(commands: Any) -> None:
    status = _queue_command(commands, "status", _commands.status)
    status.add_argument("queues", nargs="*", metavar="QUEUE", help="queue names (default: every queue)")


def _add_queues(commands: Any) -> None:
    queues = _queue_command(commands, "queues", _commands.list_queues)
    queues.add_argument(
        "--pattern", default="*", metavar="GLOB", help="only names matching this Redis glob (default *)"
    )
    queues.add_argument(
        "--with-workers",
        action="store_true",
        help="also the queues that hold no data but have a live worker",
    )


def _add_workers(commands: Any) -> None:
    workers = _queue_command(commands, "workers", _commands.list_workers)
    workers.add_argument("queue", metavar="QUEUE")


def _add_enqueue(commands: Any) -> None:
    enqueue = _queue_command(commands, "enqueue", _commands.enqueue)
    enqueue.add_argument("queue", metavar="QUEUE")
    enqueue.add_argument("content", metavar="JSON", help="the content as JSON; - reads it from stdin")
    enqueue.add_argument("--mid", help="message id for de-duplication (default: a random 12-character id)")
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


def _add_message_status(commands: Any) -> None:
    message_status = _queue_command(commands, "message-status", _commands.message_status)
    message_status.add_argument("queue", metavar="QUEUE")
    message_status.add_argument("mid", metavar="MID")


def _add_clear(commands: Any) -> None:
    clear = _queue_command(commands, "clear", _commands.clear)
    clear.add_argument("queues", nargs="+", metavar="QUEUE")
    clear.add_argument("--yes", action="store_true", help="really delete")


def _add_configure(commands: Any) -> None:
    configure = _queue_command(commands, "configure", _settings.configure)
    configure.add_argument("queue", metavar="QUEUE")
    configure.add_argument(
        "--max-size", type=_positive_int, metavar="N", help="the most live messages the queue accepts"
    )
    configure.add_argument("--no-max-size", action="store_true", help="remove the bound")
    configure.add_argument(
        "--rate-limit", type=_positive_int, metavar="N", help="the most messages handed out per interval"
    )
    configure.add_argument(
        "--rate-interval",
        type=_positive_duration,
        metavar="SECONDS",
        help="the rate limit's interval (default 1)",
    )
    configure.add_argument("--no-rate-limit", action="store_true", help="remove the rate limit")
    configure.add_argument(
        "--max-per-key", type=_positive_int, metavar="N", help="the most messages of one key leased at once"
    )
    configure.add_argument("--no-max-per-key", action="store_true", help="remove the per-key limit")


def _add_migrate(commands: Any) -> None:
    migrate = _queue_command(commands, "migrate", _commands.migrate)
    migrate.add_argument("queues", nargs="*", metavar="QUEUE", help="queue names (exact, never patterns)")
    migrate.add_argument("--all", action="store_true", help="every queue that holds version-1 keys")
    migrate.add_argument(
        "--batch",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="at most N messages of each kind moved per atomic step (default 1000)",
    )


def _add_failed(commands: Any) -> None:
    failed = _queue_command(commands, "failed", _failures.failed)
    failed.add_argument("queue", metavar="QUEUE")
    failed.add_argument(
        "--limit", type=_non_negative_int, default=20, metavar="N", help="at most N messages (default 20)"
    )
    failed.add_argument(
        "--offset", type=_non_negative_int, default=0, metavar="N", help="skip the N newest (default 0)"
    )


def _add_replay(commands: Any) -> None:
    replay = _queue_command(commands, "replay", _failures.replay)
    replay.add_argument("queue", metavar="QUEUE")
    replay.add_argument("mids", nargs="*", metavar="MID", help="mids of failed messages")
    replay.add_argument("--all", action="store_true", help="every message of the failure history")


def _add_purge_failed(commands: Any) -> None:
    purge = _queue_command(commands, "purge-failed", _failures.purge_failed)
    purge.add_argument("queue", metavar="QUEUE")
    purge.add_argument("mids", nargs="*", metavar="MID", help="mids of failed messages")
    purge.add_argument("--all", action="store_true", help="every message of the failure history")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vermilion",
        description="A durable Redis message queue for asyncio.",
        epilog="Global options go before or after the command (after wins). Exit codes: 0 ok; 1 error"
        " (Redis unreachable or refusing, or the handler's module raised); 2 bad input; 3 enqueue"
        " or replay refused; 4 worker stopped by a second signal; 130 interrupted; 141 stdout closed.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--url", help=_URL_HELP)
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"{_JSON_HELP} (status, queues, workers, enqueue, message-status, clear, configure, migrate,"
        " failed, replay, purge-failed)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_process_commands(commands)
    for add in (
        _add_status,
        _add_queues,
        _add_workers,
        _add_enqueue,
        _add_message_status,
        _add_clear,
        _add_configure,
        _add_migrate,
        _add_failed,
        _add_replay,
        _add_purge_failed,
    ):
        add(commands)
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; exits with a usage error for what no command takes."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.json and not getattr(args, "prints_json", False):
        parser.error(f"--json is not an option of {args.command}")
    return args
