"""The options of the commands that run until stopped: ``worker``, ``scheduler``,
``demo`` and ``dashboard``. The queue commands' options are in :mod:`._parser`.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._build import add_log_level as _add_log_level, command as _command, with_server as _with_server
from ._dashboard import TOKEN_ENV, run_dashboard
from ._demo import run_demo_command
from ._scheduler import run_scheduler
from ._serve import run_worker
from ._types import (
    duration as _duration,
    port as _port,
    positive_duration as _positive_duration,
    positive_int as _positive_int,
)

__all__ = ["add_process_commands"]


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
        "--shards",
        type=_positive_int,
        metavar="N",
        help="the queue's shard count (default: the count it keeps in Redis, read at start; 1 if"
        " Redis is unreachable then)",
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
    _add_log_level(worker, "info", "")


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
    _add_log_level(scheduler, "info", "")


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


def _add_dashboard(commands: Any) -> None:
    dashboard = _command(
        commands,
        "dashboard",
        run_dashboard,
        parents=_with_server(),
        help="serve the web dashboard: queues, plots, live workers, failed messages",
        description="Serve the web dashboard (needs the extra vermilion[dashboard]) until Ctrl-C or"
        " SIGTERM. It binds 127.0.0.1 unless --host says otherwise. Replay and purge are off unless"
        f" --actions; then the page asks for a token: ${TOKEN_ENV}, else a fresh one printed to stderr.",
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    dashboard.add_argument(
        "--allowed-host",
        action="append",
        dest="allowed_hosts",
        metavar="NAME",
        help="a host name the page may be reached by (repeatable; '*.example.com' allowed); default:"
        " 127.0.0.1 and localhost when bound to this machine, else any",
    )
    dashboard.add_argument(
        "--port", type=_port, default=8000, metavar="PORT", help="port to listen on (default 8000)"
    )
    dashboard.add_argument(
        "--actions", action="store_true", help="allow replaying and purging failed messages (needs the token)"
    )
    for flag, default, meaning in (
        ("--interval", 1.0, "seconds between two samples of Redis"),
        ("--history", 600.0, "seconds of plots kept per queue"),
    ):
        help_text = f"{meaning} (default {default:g})"
        dashboard.add_argument(flag, type=_positive_duration, default=default, metavar="S", help=help_text)
    _add_log_level(dashboard, "warning", "uvicorn's log level, ")


def add_process_commands(commands: Any) -> None:
    """Add ``worker``, ``scheduler``, ``demo`` and ``dashboard`` to the parser's commands."""
    for add in (_add_worker, _add_scheduler, _add_demo, _add_dashboard):
        add(commands)
