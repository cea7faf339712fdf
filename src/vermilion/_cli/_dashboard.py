"""``vermilion dashboard``: serve the web dashboard with uvicorn until Ctrl-C or SIGTERM.

Owns the token of the command line (``$VERMILION_DASHBOARD_TOKEN``, else a
fresh one printed to stderr) and the message when the extra is missing. The
app itself is :func:`vermilion.dashboard.app`; this module only serves it.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import secrets
import signal
import sys
from collections.abc import Iterator

from ._connect import redis_url
from ._exit import EXIT_OK, EXIT_USAGE, CommandError

__all__ = ["TOKEN_ENV", "allowed_hosts", "run_dashboard"]

TOKEN_ENV = "VERMILION_DASHBOARD_TOKEN"
_MISSING = "the dashboard needs its extra: pip install 'vermilion[dashboard]' (missing: {})"


def _token(args: argparse.Namespace) -> str | None:
    if not args.actions:
        return None
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    token = secrets.token_urlsafe(24)
    print(f"vermilion dashboard: actions enabled; the page asks for this token: {token}", file=sys.stderr)
    return token


_LOOPBACK = ["127.0.0.1", "localhost", "::1", "[::1]"]


def allowed_hosts(args: argparse.Namespace) -> list[str] | None:
    """The Host names to answer: given ones, else this machine's when bound to it, else any."""
    if args.allowed_hosts:
        return list(args.allowed_hosts)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    return [*_LOOPBACK, args.host] if loopback else None


def run_dashboard(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from vermilion import dashboard
    except ImportError as exc:
        raise CommandError(_MISSING.format(exc.name or exc), EXIT_USAGE) from None
    token = _token(args)
    try:
        app = dashboard.app(
            redis_url(args),
            actions=args.actions,
            token=token,
            interval=args.interval,
            history=args.history,
            allowed_hosts=allowed_hosts(args),
        )
    except ValueError as exc:  # a token from the environment that is too short, a bad host name
        where = f"${TOKEN_ENV}: " if str(exc).startswith("token") else ""
        raise CommandError(f"{where}{exc}", EXIT_USAGE) from None
    with _graceful_stop():
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return EXIT_OK


class _Stopped(Exception):
    """The signal uvicorn stopped for, raised again once it has shut down."""


def _stopped(signum: int, frame: object) -> None:
    raise _Stopped(signum)


@contextlib.contextmanager
def _graceful_stop() -> Iterator[None]:
    """A stop by SIGTERM or SIGINT is the normal end of the command: exit code 0.

    uvicorn shuts down gracefully on either, then raises the signal again for
    the handler it found, which would kill the process (SIGTERM) or raise
    KeyboardInterrupt (SIGINT); this handler ends the command instead.
    """
    signals = [signal.SIGTERM, signal.SIGINT]
    previous = {sig: signal.signal(sig, _stopped) for sig in signals}
    try:
        yield
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
