"""The arguments of ``Queue.enqueue`` and ``enqueue_many``, checked and built.

Random mids, the ``EnqueueOptions`` of one call (with a fast path for the
common call without options), the mid list of a batch, and the script's reply
turned into an ``EnqueueResult``. Sends nothing: ``_queue`` does.
"""

from __future__ import annotations

import base64
import os
from datetime import timedelta

from ._exceptions import ProtocolError
from ._flow import check_key, check_priority
from ._messages import EnqueueResult
from ._validation import check_mid, seconds, to_ms
from ._wire import DEFAULT_ENQUEUE_OPTIONS, EnqueueOptions

__all__ = ["MAX_BATCH", "enqueue_options", "mids_for", "random_mids", "result_of"]

MAX_BATCH = 10_000
_REFUSALS = {"already-queued", "locked", "backoff", "full"}
_MID_RANDOM_BYTES = 9  # 72 bits, 12 base64url characters


def random_mids(count: int) -> list[str]:
    """``count`` random mids of 12 URL-safe characters (72 random bits each, less a
    trace: none starts with ``-``).

    Short on purpose: Redis keeps a mid in each of two places per queued
    message, and a mid of up to 12 characters fits its smallest string
    allocation (a UUID string took 36). One read of the OS's random source
    serves the whole batch. A leading ``-`` becomes ``_``: a command line would
    read such a mid as an option (``vermilion replay emails -x...``).
    """
    text = base64.urlsafe_b64encode(os.urandom(_MID_RANDOM_BYTES * count)).decode()
    mids = [text[i : i + 12] for i in range(0, 12 * count, 12)]
    return [mid if mid[0] != "-" else f"_{mid[1:]}" for mid in mids]


def enqueue_options(
    *,
    delay: float | timedelta,
    lock_timeout: float | timedelta | None,
    can_update: bool,
    can_requeue: bool,
    reset_delay: bool,
    priority: int,
    key: str | None,
) -> EnqueueOptions:
    """The options of one enqueue call, checked; the shared default for a call without any."""
    if (
        delay.__class__ is float
        and delay == 0.0
        and lock_timeout is None
        and can_update is False
        and can_requeue is False
        and reset_delay is False
        and priority == 0
        and key is None
    ):
        return DEFAULT_ENQUEUE_OPTIONS  # the common case, without the checks below
    for flag, value in (
        ("can_update", can_update),
        ("can_requeue", can_requeue),
        ("reset_delay", reset_delay),
    ):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, not {type(value).__name__}")
    return EnqueueOptions(
        delay_ms=to_ms(seconds(delay, "delay")),
        lock_ms=None
        if lock_timeout is None
        else to_ms(seconds(lock_timeout, "lock_timeout", allow_zero=False)),
        can_update=can_update,
        can_requeue=can_requeue,
        reset_delay=reset_delay,
        priority=check_priority(priority),
        key=check_key(key),
    )


def mids_for(given: list[str | None] | None, count: int) -> list[str]:
    """The mids of a batch of ``count``: each given one checked, a random one for each ``None``."""
    if given is None:
        return random_mids(count)
    fresh = iter(random_mids(given.count(None)))
    return [
        next(fresh) if mid is None else check_mid(mid, f"mids[{index}]") for index, mid in enumerate(given)
    ]


def result_of(mid: str, reply: str) -> EnqueueResult:
    """The result of one message from the script's reply for it."""
    # Positional arguments: a frozen dataclass takes keywords markedly slower,
    # and enqueue_many builds one result per message.
    if reply in ("added", "updated"):
        return EnqueueResult(True, mid, reply)  # type: ignore[arg-type]
    if reply in _REFUSALS:
        return EnqueueResult(False, mid, None, reply)  # type: ignore[arg-type]
    raise ProtocolError(f"enqueue answered {reply!r}")
