"""The exceptions vermilion raises.

Every error of the library derives from one base class, grouped by what the
caller can do about it::

    VermilionError
    ├── ConfigurationError      bad setup: server too old, bad URL, missing extra
    ├── SerializationError      content that cannot be encoded or decoded
    ├── VermilionConnectionError  Redis unreachable, connection lost, timed out
    │   └── OutcomeUnknownError   lost while a write was in flight: it may have run
    ├── ReplicationError        a write ran, but fewer replicas than asked confirmed it
    └── ProtocolError           Redis answered something the protocol forbids
        └── ScriptError         a script failed on the server

Bad arguments raise the built-in ``TypeError`` and ``ValueError``, before
anything is sent. redis-py's exceptions never escape: ``_protocol`` translates
them at one boundary and chains the original (``raise ... from exc``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._messages import EnqueueResult

__all__ = [
    "ConfigurationError",
    "OutcomeUnknownError",
    "ProtocolError",
    "ReplicationError",
    "ScriptError",
    "SerializationError",
    "VermilionConnectionError",
    "VermilionError",
]


class VermilionError(Exception):
    """Base class of every error raised by vermilion."""


class ConfigurationError(VermilionError):
    """Raised when the setup cannot work: a server too old, a missing extra."""


class SerializationError(VermilionError, ValueError):
    """Raised when content cannot be serialized, or stored bytes cannot be decoded."""


class VermilionConnectionError(VermilionError):
    """Raised when Redis cannot be reached, or the connection fails or times out."""


class OutcomeUnknownError(VermilionConnectionError):
    """Raised when the connection failed after a write was sent.

    The server may or may not have run it. vermilion never re-sends such a
    call on its own: a replayed enqueue would answer ``already-queued`` for the
    caller's own message. Check with ``Queue.message_status`` and enqueue again
    if the message is not there. After an enqueue, ``mids`` holds the ids of
    the messages concerned (random ones included); otherwise it is empty.
    """

    mids: tuple[str, ...] = ()


class ReplicationError(VermilionError):
    """Raised when a write ran on the master but fewer replicas than asked confirmed it in time.

    The write stands on the master (``results`` holds each message's outcome
    there); it is lost if the master fails before a replica receives it.
    ``replicas`` is how many were asked for, ``acknowledged`` how many
    confirmed; ``mids`` holds the messages concerned.
    """

    def __init__(
        self,
        message: str,
        *,
        replicas: int,
        acknowledged: int,
        mids: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.replicas = replicas
        self.acknowledged = acknowledged
        self.mids = mids
        self.results: list[EnqueueResult] = []
        self.replies: list[str] = []  # the script's raw replies, which Queue turns into results


class ProtocolError(VermilionError):
    """Raised when Redis answers in a way the protocol does not allow."""


class ScriptError(ProtocolError):
    """Raised when a vermilion script fails on the server (e.g. out of memory)."""
