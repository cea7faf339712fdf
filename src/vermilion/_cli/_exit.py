"""The CLI's exit codes and the one error it reports: what a script calling ``vermilion`` sees.

Owns the numbers and :class:`CommandError`; it knows nothing of commands or Redis.
"""

from __future__ import annotations

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_ERROR",
    "EXIT_FORCED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "CommandError",
]

EXIT_OK = 0
EXIT_ERROR = 1
"""The command failed: Redis unreachable or refusing, or the handler's module raised on import."""
EXIT_USAGE = 2
"""Bad input, found before anything was written: arguments, JSON, names, MODULE:HANDLER."""
EXIT_REFUSED = 3
"""``enqueue`` was refused because the mid is busy (queued, locked or in its backoff window), or
``replay`` could not replay a mid (live again, unknown, or without a payload)."""
EXIT_FORCED = 4
"""``worker`` stopped at a second signal, before its running handlers finished."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C outside the worker (128 + SIGINT)."""
EXIT_BROKEN_PIPE = 141
"""The reader of stdout went away (`vermilion queues | head`): 128 + SIGPIPE, as shells report it."""


class CommandError(Exception):
    """An error the CLI reports as one line, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code
