"""The ``vermilion`` command line (console script and ``python -m vermilion``).

``main`` parses the arguments (:mod:`._parser`), runs the command, and turns
what went wrong into one ``vermilion: ...`` line on stderr and an exit code
(:mod:`._exit`). The commands live in :mod:`._commands` (queues), :mod:`._failures`
(the failure history),
:mod:`._serve` (``worker``) and :mod:`._demo`. It must not grow options or
commands of its own: those belong to the modules named here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from vermilion._exceptions import VermilionError

from ._exit import EXIT_BROKEN_PIPE, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, CommandError
from ._parser import parse_args

__all__ = ["main"]


def _configure_logging(args: argparse.Namespace) -> None:
    if args.command == "worker":
        level = args.log_level.upper()
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    else:
        level, fmt = "WARNING", "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = parse_args(argv)
    _configure_logging(args)
    try:
        return int(args.run(args))
    except CommandError as exc:
        message, code = str(exc), exc.exit_code
    except (ValueError, TypeError) as exc:  # bad input, refused before anything was sent
        message, code = str(exc), EXIT_USAGE
    except VermilionError as exc:  # an unusable server
        message, code = str(exc), EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`vermilion queues | head`)
        sys.stderr.close()
        return EXIT_BROKEN_PIPE
    print(f"vermilion: {message}", file=sys.stderr)
    return code
