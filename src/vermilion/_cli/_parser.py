"""The command line's arguments: the parser and one function per command.

Owns every option, its help text and its checks (a bad value is a one-line
usage error, exit code 2; the value types are in :mod:`._types`, the queue
commands' descriptions in :mod:`._help`), and the global options ``--url`` and
``--json``, which may stand before the command or after it. It runs no command
and talks to no server.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from vermilion import __version__
from vermilion._queue import DEFAULT_URL

from . import _commands, _failures, _settings
from ._demo import run_demo_command
from ._exit import EXIT_USAGE
from ._help import ABOUT
from ._scheduler import run_scheduler
from ._serve import LOG_LEVELS, run_worker
from ._types import (
    duration as _duration,
    non_negative_int as _non_negative_int,
    port as _port,
    positive_duration as _positive_duration,
    positive_int as _positive_int,
)

__all__ = ["parse_args"]

_URL_HELP = f"Redis URL (default: $VERMILION_URL, else {DEFAULT_URL})"
_JSON_HELP = "print JSON instead of text"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("vermilion").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_USAGE, f"vermilion: {where}{message} (see '{self.prog} --help')\n")


def _run_async(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(command(args))

    return run


def _command(
    commands: Any, name: str, run: Callable[[argparse.Namespace], int], **options: Any
) -> argparse.ArgumentParser:
    """A subcommand's parser, whose parsed arguments carry the function that runs it."""
    parser: argparse.ArgumentParser = commands.add_parser(name, **options)
    parser.set_defaults(run=run)
    return parser


def _queue_command(
    commands: Any, name: str, command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
) -> argparse.ArgumentParser:
    """A command that reads or feeds queues: ``--url`` and ``--json``, its help from ``ABOUT``."""
    help_text, description = ABOUT[name]
    return _command(
        commands, name, _run_async(command), parents=_with_output(), help=help_text, description=description
    )


def _with_server() -> list[argparse.ArgumentParser]:
    """The parents of a command that talks to Redis: ``--url`` after the command too.

    SUPPRESS as the default, so that a command without it keeps the global one.
    """
    server = _Parser(add_help=False)
    server.add_argument("--url", default=argparse.SUPPRESS, help=_URL_HELP)
    return [server]


def _with_output() -> list[argparse.ArgumentParser]:
    """The parents of a command that can print JSON: ``--url`` and ``--json``."""
    output = _Parser(add_help=False)
    output.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=_JSON_HELP)
    output.set_defaults(prints_json=True)
    return [*_with_server(), output]


def _add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default="info",
        metavar="LEVEL",
        help=f"one of {', '.join(LOG_LEVELS)} (default info)",
    )


def _add_worker(commands: Any) -> None:
    worker = _command(
        commands,
        "worker",
        run_worker,
        parents=_with_server(),
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
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (needs vermilion[prometheus])",
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the address --metrics-port listens on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    _add_log_level(worker)


def _add_scheduler(commands: Any) -> None:
    scheduler = _command(
        commands,
        "scheduler",
        run_scheduler,
        parents=_with_server(),
        help="enqueue a recurring message at every slot of a cron expression, until SIGTERM or SIGINT",
        description="Enqueue JSON on QUEUE at every time slot of CRON (slot times from the Redis server's"
        " clock), with the mid NAME@<slot in UTC>. Any number of schedulers and workers may run the"
        " same schedule: each slot is enqueued once. A new schedule starts with its first slot after it"
        " first runs; after downtime, the latest --catch-up missed slots are enqueued. Needs"
        " vermilion[cron]. Logs go to stderr.",
    )
    scheduler.add_argument("queue", metavar="QUEUE")
    scheduler.add_argument("name", metavar="NAME", help="the schedule's name, unique per queue")
    scheduler.add_argument(
        "--cron", required=True, metavar="EXPR", help="five fields, or six with seconds first: '0 3 * * *'"
    )
    scheduler.add_argument(
        "--content", default="null", metavar="JSON", help="each slot's content as JSON (default null)"
    )
    scheduler.add_argument("--tz", default="UTC", metavar="ZONE", help="the cron's time zone (default UTC)")
    scheduler.add_argument(
        "--catch-up",
        type=_positive_int,
        default=1,
        metavar="N",
        help="after downtime, enqueue at most the latest N missed slots (default 1)",
    )
    _add_log_level(scheduler)


def _add_status(commands: Any) -> None:
    status = _queue_command(commands, "status", _commands.status)
    status.add_argument("queues", nargs="*", metavar="QUEUE", help="queue names (default: every queue)")


def _add_queues(commands: Any) -> None:
    queues = _queue_command(commands, "queues", _commands.list_queues)
    queues.add_argument(
        "--pattern", default="*", metavar="GLOB", help="only names matching this Redis glob (default *)"
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


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="enqueue and handle 10,000 messages, then show the worker's status"
    )
    demo.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="Redis URL (default: $VERMILION_URL, else an embedded Valkey server)",
    )
    demo.add_argument(
        "--messages", type=_positive_int, default=10_000, help="messages to enqueue (default 10,000)"
    )
    demo.add_argument("--concurrency", type=_positive_int, default=50, help="handlers at once (default 50)")
    demo.add_argument(
        "--queue", default="vermilion-demo", help="queue name (default vermilion-demo); cleared first"
    )
    demo.set_defaults(run=run_demo_command)


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
    for add in (
        _add_worker,
        _add_scheduler,
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
        _add_demo,
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
