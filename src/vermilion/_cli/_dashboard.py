"""``vermilion dashboard``: serve the web dashboard with uvicorn until Ctrl-C or SIGTERM.

Owns the token of the command line (``$VERMILION_DASHBOARD_TOKEN``, else a
fresh one printed to stderr) and the message when the extra is missing. The
app itself is :func:`vermilion.dashboard.app`; this module only serves it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys

from ._connect import redis_url
from ._exit import EXIT_OK, EXIT_USAGE, CommandError

__all__ = ["TOKEN_ENV", "run_dashboard"]

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


def run_dashboard(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from vermilion import dashboard
    except ImportError as exc:
        raise CommandError(_MISSING.format(exc.name or exc), EXIT_USAGE) from None
    token = _token(args)
    try:
        app = dashboard.app(
            redis_url(args), actions=args.actions, token=token, interval=args.interval, history=args.history
        )
    except ValueError as exc:  # a token from the environment that is too short
        raise CommandError(f"${TOKEN_ENV}: {exc}" if token else str(exc), EXIT_USAGE) from None
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return EXIT_OK
