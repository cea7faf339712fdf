"""Values that cross the public API: statuses, results, outcomes, messages.

Pure module: no Redis, no event loop. Every class is immutable.
"""

# No `from __future__ import annotations` here: these classes are re-exported
# as `vermilion.X`, and typing.get_type_hints (which pydantic and FastAPI use)
# resolves string annotations in that module's namespace, where names such as
# `Any` do not exist. Real annotations need no resolving.
import enum
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ._stats import Summary
from ._validation import seconds

__all__ = [
    "EnqueueAction",
    "EnqueueError",
    "EnqueueResult",
    "FailedMessage",
    "Failure",
    "Message",
    "MessageInfo",
    "MessageStatus",
    "Outcome",
    "PollInfo",
    "QueueStatus",
    "ReplayError",
    "ReplayResult",
    "Retry",
    "Success",
    "WorkerStats",
    "WorkerStatus",
]

EnqueueAction = Literal["added", "updated"]
EnqueueError = Literal["already-queued", "locked", "backoff"]
ReplayError = Literal["live", "unknown", "no-content"]


class MessageStatus(str, enum.Enum):
    """Where a message stands. ``message_status`` returns ``None`` for an unknown mid."""

    QUEUED = "queued"
    """Waiting to be handed out."""
    QUEUED_WITH_BACKOFF = "queued-with-backoff"
    """Waiting for its delay or retry backoff to end."""
    LOCKED = "locked"
    """Being handled under a lease."""
    LOCKED_WITH_REQUEUE = "locked-with-requeue"
    """Being handled; new content waits to be handled after this handling ends."""
    DONE_AWAITING_GC = "done-awaiting-gc"
    """Handled; its de-dup window ended and it is about to be forgotten."""
    DONE_WITH_BACKOFF = "done-with-backoff"
    """Handled; enqueuing the mid again is refused until its de-dup window ends."""
    DONE_WITH_REQUEUE = "done-with-requeue"
    """Handled; new content will be handled when its de-dup window ends."""
    FAILED = "failed"
    """Its handler failed (or it ran out of attempts); kept in the failure history."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What ``Queue.enqueue`` did with one message.

    ``ok`` is true when the message was added or updated (``action``), false when
    it was refused because its mid is busy (``error``).
    """

    ok: bool
    mid: str
    action: EnqueueAction | None = None
    error: EnqueueError | None = None


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """Counts of a queue's messages, read in one atomic step.

    ``nqueued + nlocked + nbackoff`` are the live messages; ``ntotal`` adds the
    finished ones still inside their de-dup window (``ndone``). ``nfailed`` is
    the size of the bounded failure history, ``nfailed_dropped`` how many
    entries its bounds (``failure_history``, ``failure_history_bytes``) have
    dropped since the queue began. ``lag`` is how long, in seconds, the
    longest-waiting ready message has been ready: the number to alert on.
    """

    nqueued: int
    nlocked: int
    nbackoff: int
    ntotal: int
    ndone: int
    nfailed: int
    lag: float
    nfailed_dropped: int = 0


@dataclass(frozen=True, slots=True)
class FailedMessage:
    """One entry of the failure history (``Queue.failed()``).

    ``content`` is the payload decoded with the queue's serializer, its raw
    bytes if it cannot be decoded, or ``None`` for a failure migrated from
    protocol version 1 (which kept no payload). ``attempts`` counts the
    hand-outs of the life that failed (0 for a migrated failure);
    ``failed_at`` is when it failed, by the Redis server's clock (UTC).
    """

    mid: str
    content: Any
    reason: str
    attempts: int
    failed_at: datetime


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What ``Queue.replay`` did with one mid.

    ``ok``: the message is back in the queue, ready, as a new life. Else
    ``error`` says why not: ``"live"`` (the mid is not in the failure history
    but the queue knows it: it was enqueued again, or replayed already),
    ``"unknown"`` (the queue does not know the mid), ``"no-content"`` (a
    failure migrated from protocol version 1, which kept no payload to replay).
    """

    mid: str
    ok: bool
    error: ReplayError | None = None


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One entry of ``Queue.content()``.

    ``content`` is the payload of a live message, of the pending requeue of a
    finished one, or the payload a failed message's history entry keeps;
    ``None`` when there is none. ``age`` is seconds since the
    current life began (enqueue or requeue); ``backoff`` the seconds left of a
    delay, retry backoff or de-dup window; ``error`` the reason a failed
    message failed.
    """

    mid: str
    status: MessageStatus
    attempts: int
    age: float | None
    backoff: float | None
    content: Any
    error: str | None = None


def _optional_seconds(value: float | timedelta | None, argument: str) -> float | None:
    if value is None:
        return None
    return seconds(value, argument) or None


# init=False: the constructors take a timedelta too, but the attribute is
# always seconds (or None), so readers never have to convert.
@dataclass(frozen=True, slots=True, init=False)
class Success:
    """The handler finished. With ``backoff`` (seconds), the mid stays de-duplicated
    for that long: enqueuing it again is refused (or requeued, if asked)."""

    backoff: float | None

    def __init__(self, backoff: float | timedelta | None = None) -> None:
        object.__setattr__(self, "backoff", _optional_seconds(backoff, "backoff"))


@dataclass(frozen=True, slots=True, init=False)
class Retry:
    """Handle the message again, after ``backoff`` seconds if given."""

    backoff: float | None

    def __init__(self, backoff: float | timedelta | None = None) -> None:
        object.__setattr__(self, "backoff", _optional_seconds(backoff, "backoff"))


@dataclass(frozen=True, slots=True)
class Failure:
    """Give up on the message: it is not retried and is recorded as failed."""

    reason: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str):
            raise TypeError(f"reason must be a str, not {type(self.reason).__name__}")


Outcome = Success | Retry | Failure


@dataclass(frozen=True, slots=True)
class Message:
    """A message handed to a handler.

    ``attempt`` counts hand-outs in this life of the mid (1 on the first);
    ``lock_timeout`` is the lease in seconds, which the worker renews while the
    handler runs; ``age`` is seconds since the message was enqueued (or
    requeued) when it was handed out. ``lease_token`` grows with every lease
    handed out by the queue: with ``mid`` it makes a fencing token for the
    handler's own side effects.
    """

    content: Any
    mid: str
    queue: str
    attempt: int
    lock_timeout: float
    age: float
    lease_token: int = field(default=0, repr=False)


@dataclass(frozen=True, slots=True)
class PollInfo:
    """What one poll saw; passed to the monitor after every poll."""

    queue: str
    queue_size: int
    handed_out: int
    reclaimed: int
    empty_polls: int


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """Statistics of one worker since it was created."""

    queue_size: Summary | None
    queueing_time_ms: Summary | None
    handling_time_ms: Summary | None
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """A snapshot of a worker, like dereferencing a Carmine worker.

    ``queue_status`` holds live counts from Redis, or ``None`` if Redis could
    not be reached for them.
    """

    queue: str
    running: bool
    concurrency: int
    in_flight: int
    options: dict[str, Any]
    stats: WorkerStats
    queue_status: QueueStatus | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, numbers, strings), ready for JSON."""
        return asdict(self)
