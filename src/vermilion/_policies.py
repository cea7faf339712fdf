"""The worker's timing policies: how long to wait after an empty poll, an error, a busy poll.

Pure functions and small callables, no I/O: the default idle back-off, the
default queue-size monitor, the capped and jittered back-off after errors,
and the guard that keeps a user's delay function from ever stopping a loop.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import timedelta

from ._logs import logger
from ._messages import PollInfo
from ._validation import positive_int, seconds

__all__ = [
    "DEFAULT",
    "ERROR_BACKOFF_CAP",
    "QueueSizeMonitor",
    "as_delay_function",
    "error_backoff",
    "exponential_idle_backoff",
    "user_delay",
]

# Retries after Redis errors back off up to this cap (jittered down to half):
# short enough that a worker is back within about a second of Redis, long
# enough that a fleet of idle workers does not hammer a server that is down.
ERROR_BACKOFF_CAP = 2.0


def exponential_idle_backoff(empty_polls: int) -> float:
    """Seconds an idle worker may sleep after ``empty_polls`` empty polls in a row.

    Doubles from 0.5-1 s up to 8-16 s, jittered so that idle workers spread out.
    An enqueue wakes a sleeping worker at once whatever this says.
    """
    n = min(max(empty_polls, 1) - 1, 4)
    scale = float(2**n)
    return (scale + random.random() * scale) * 0.5


class QueueSizeMonitor:
    """The default monitor: warns when the queue holds more than ``max_size``
    ready messages, at most once per ``interval`` seconds."""

    def __init__(self, max_size: int = 1000, interval: float | timedelta = 6 * 3600.0) -> None:
        self.max_size: int = positive_int(max_size, "max_size")
        self.interval: float = seconds(interval, "interval")
        self._last_warning: float | None = None

    def __call__(self, poll: PollInfo) -> None:
        if poll.queue_size <= self.max_size:
            return
        now = time.monotonic()
        if self._last_warning is not None and now - self._last_warning < self.interval:
            return
        self._last_warning = now
        logger.warning(
            "queue %r holds %s ready messages (more than %s): are the workers keeping up?",
            poll.queue,
            f"{poll.queue_size:,}",
            f"{self.max_size:,}",
        )

    def __repr__(self) -> str:
        return f"QueueSizeMonitor(max_size={self.max_size}, interval={self.interval})"


def error_backoff(errors: int, base: float) -> float:
    """Seconds before retrying after ``errors`` failures in a row: doubling from
    ``base`` up to the cap, jittered down to half so that workers spread out."""
    delay: float = min(ERROR_BACKOFF_CAP, base * 2.0 ** min(errors, 10))
    return delay * (0.5 + random.random() / 2)


def as_delay_function(value: object, argument: str) -> Callable[[int], float | None]:
    """A delay option as a function: a number (or timedelta) becomes a constant one."""
    if callable(value):
        return value
    delay = seconds(value, argument)
    return lambda _: delay


def user_delay(
    function: Callable[[int], float | None], argument: int, name: str, fallback: float, queue: str
) -> float:
    """Call a user's delay function; a bad answer is logged and replaced, never fatal."""
    try:
        value = function(argument)
        return 0.0 if value is None else seconds(value, name)
    except Exception:
        logger.exception("%s of the worker on queue %r failed; using %.2f s", name, queue, fallback)
        return fallback


class _Default:
    """Marks an option left at its default (where ``None`` means something else)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()
