"""What goes over the wire, as bytes and as typed values: pure, no I/O.

Owns the RESP packing of commands (vermilion packs its own: a batch of a
thousand messages is two thousand arguments), the arguments the scripts
take, and the parsing of their replies into typed values. It must not
import redis-py or send anything; :mod:`._transport` sends what this packs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from ._exceptions import ProtocolError

__all__ = [
    "DEFAULT_ENQUEUE_OPTIONS",
    "ENQUEUE_OPTION_FIELDS",
    "Counts",
    "DequeueReply",
    "EnqueueOptions",
    "LeaseKey",
    "Leased",
    "OutcomeKind",
    "OutcomeRequest",
    "StoredMessage",
    "ack_argv",
    "bulk",
    "mid_arg",
    "mid_text",
    "pack_command",
    "pack_messages",
    "parse_content",
    "parse_counts",
    "parse_dequeue",
    "reply_int",
    "reply_text",
]

# The enqueue script's flag bits (lua/enqueue.lua).
_CAN_UPDATE, _CAN_REQUEUE, _RESET_DELAY = 1, 2, 4


def bulk(arg: bytes | str | int) -> bytes:
    """One argument as a RESP bulk string."""
    if isinstance(arg, bytes):
        data = arg
    elif isinstance(arg, str):
        data = arg.encode()
    elif isinstance(arg, int):  # bool is refused by the type checker upstream
        data = b"%d" % arg
    else:
        raise TypeError(f"cannot send a {type(arg).__name__} to Redis")
    return b"$%d\r\n%b\r\n" % (len(data), data)


def pack_command(args: Sequence[bytes | str | int]) -> bytes:
    """One command in RESP, the way Redis reads it: an array of bulk strings.

    redis-py's own packer is written for any argument type; a batch of a
    thousand messages is two thousand arguments, and this is several times
    faster on the bytes, str and int that vermilion sends.
    """
    return b"*%d\r\n%b" % (len(args), b"".join([bulk(arg) for arg in args]))


def reply_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def reply_int(value: object) -> int:
    """An integer of a script's reply; anything else there is a protocol error, named."""
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, str)):
        try:
            return int(value)
        except ValueError:
            pass
    raise ProtocolError(f"expected an integer in a script reply, got {value!r}")


def mid_text(value: bytes) -> str:
    """A mid from a reply. One written by hand may not be UTF-8: surrogate
    escapes keep its bytes, so that its ack names the same key field."""
    return value.decode("utf-8", "surrogateescape")


def mid_arg(mid: str) -> bytes:
    """A mid as sent back to Redis: the inverse of :func:`mid_text`."""
    return mid.encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """What an enqueue call applies to every one of its messages."""

    delay_ms: int = 0
    lock_ms: int | None = None
    can_update: bool = False
    can_requeue: bool = False
    reset_delay: bool = False

    def argv(self) -> tuple[int | str, ...]:
        """The script's first arguments, in the order of ENQUEUE_OPTION_FIELDS."""
        flags = (
            (_CAN_UPDATE if self.can_update else 0)
            | (_CAN_REQUEUE if self.can_requeue else 0)
            | (_RESET_DELAY if self.reset_delay else 0)
        )
        return (self.delay_ms, "" if self.lock_ms is None else self.lock_ms, flags)

    @property
    def packed_argv(self) -> bytes:
        """``argv()`` as RESP bulk strings (made once for the shared default options)."""
        if self is DEFAULT_ENQUEUE_OPTIONS:
            return _DEFAULT_PACKED_ARGV
        return b"".join([bulk(arg) for arg in self.argv()])


ENQUEUE_OPTION_FIELDS = ("delay_ms", "lock_ms", "flags")
DEFAULT_ENQUEUE_OPTIONS = EnqueueOptions()
_DEFAULT_PACKED_ARGV = b"".join([bulk(arg) for arg in DEFAULT_ENQUEUE_OPTIONS.argv()])


def pack_messages(messages: Sequence[tuple[str, bytes]]) -> bytes:
    """``(mid, payload)`` pairs as the enqueue script's trailing arguments."""
    pairs = []
    for mid, payload in messages:
        mid_data = mid.encode()
        pairs.append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(mid_data), mid_data, len(payload), payload))
    return b"".join(pairs)


class Leased(NamedTuple):
    """A message as ``dequeue`` handed it out, before decoding (a tuple: made per message)."""

    mid: str
    payload: bytes
    attempt: int
    lock_ms: int
    enqueued_ms: int
    token: int
    suspect: bool = False


@dataclass(frozen=True, slots=True)
class DequeueReply:
    """What one ``dequeue`` call answered: the server's clock, what is left, what was leased."""

    now_ms: int
    ready: int
    next_due_ms: int | None
    reclaimed: int
    messages: list[Leased]
    suspects_held_back: int = 0


OutcomeKind = Literal["s", "r", "f"]
"""The ack script's outcome codes: success, retry, failure."""


LeaseKey = tuple[str, int]
"""A lease as the worker tracks it: (mid, fencing token)."""


class OutcomeRequest(NamedTuple):
    """One handler outcome to acknowledge (a tuple: made per message)."""

    mid: str
    token: int
    kind: OutcomeKind
    backoff_ms: int = 0
    reason: str = ""


def ack_argv(outcomes: Sequence[OutcomeRequest], max_failed: int, max_failed_bytes: int) -> list[Any]:
    """The ack script's arguments: the history's bounds, per outcome its mid, fencing
    token and code, then the reasons."""
    argv: list[Any] = [max_failed, max_failed_bytes, len(outcomes)]
    reasons: list[str] = []
    for outcome in outcomes:
        code = f"{outcome.kind}{outcome.backoff_ms}" if outcome.backoff_ms else outcome.kind
        argv += (mid_arg(outcome.mid), outcome.token, code)
        if outcome.kind == "f":
            reasons.append(outcome.reason)
    return [*argv, *reasons]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One entry of the ``content`` script's reply, before decoding."""

    mid: str
    status: str
    attempts: int
    enqueued_ms: int | None
    backoff_end_ms: int | None
    payload: bytes | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    """The ``counts`` script's reply: a queue's messages by state, and its lag."""

    nqueued: int
    nlocked: int
    nbackoff: int
    ndone: int
    nfailed: int
    lag_ms: int
    now_ms: int = 0
    nfailed_dropped: int = 0


def parse_dequeue(reply: Sequence[Any]) -> DequeueReply:
    if len(reply) < 5 or (len(reply) - 5) % 7:
        raise ProtocolError(f"dequeue answered {len(reply)} items; expected 5 + 7 per message")
    now_ms, ready, next_due, reclaimed, held_back = (reply_int(item) for item in reply[:5])
    messages = [
        Leased(
            mid=mid_text(reply[i]),
            payload=reply[i + 1],
            attempt=reply_int(reply[i + 2]),
            lock_ms=reply_int(reply[i + 3]),
            enqueued_ms=reply_int(reply[i + 4]),
            token=reply_int(reply[i + 5]),
            suspect=bool(reply_int(reply[i + 6])),
        )
        for i in range(5, len(reply), 7)
    ]
    return DequeueReply(now_ms, ready, None if next_due < 0 else next_due, reclaimed, messages, held_back)


def parse_counts(reply: Sequence[Any]) -> Counts:
    nqueued, nlocked, nbackoff, ndone, nfailed, lag_ms, dropped = (reply_int(item) for item in reply)
    return Counts(nqueued, nlocked, nbackoff, ndone, nfailed, lag_ms, nfailed_dropped=dropped)


def parse_content(reply: Sequence[Any]) -> tuple[int, list[StoredMessage]]:
    now_ms = reply_int(reply[0])
    entries = []
    for i in range(1, len(reply), 8):
        mid, status, attempts, enqueued, backoff_end, has_payload, payload, error = reply[i : i + 8]
        entries.append(
            StoredMessage(
                mid=reply_text(mid),
                status=reply_text(status),
                attempts=reply_int(attempts),
                enqueued_ms=None if reply_int(enqueued) < 0 else reply_int(enqueued),
                backoff_end_ms=None if reply_int(backoff_end) < 0 else reply_int(backoff_end),
                payload=payload if reply_int(has_payload) else None,
                error=reply_text(error) if status == b"failed" else None,
            )
        )
    return now_ms, entries
