"""Acknowledged-means-replicated: the ``replicas`` option and the ``WAIT`` that enforces it.

A write Redis acknowledged lives on the master only until its replicas
receive it (asynchronously); a failover in between loses it. With
``replicas=K`` vermilion sends ``WAIT K <timeout>`` right behind the write,
on the same connection and in the same packet, and answers ok only when K
replicas confirmed every write of that connection. ``WAITAOF`` (Redis 7.2+:
written to the replicas' AOF) is not used: a replica without AOF never
confirms it. This module checks the option and builds the command; it sends
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ._validation import seconds
from ._wire import pack_command

__all__ = ["MAX_REPLICA_TIMEOUT", "Replication", "replication_for"]

MAX_REPLICA_TIMEOUT = 10.0
"""Longest ``replica_timeout``: the WAIT must end well inside a call's own deadline (30 s)."""
DEFAULT_REPLICA_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Replication:
    """Wait for ``replicas`` replicas, at most ``timeout_ms`` milliseconds."""

    replicas: int
    timeout_ms: int
    wait: bytes

    @classmethod
    def of(cls, replicas: int, timeout: float) -> Replication:
        timeout_ms = max(1, round(timeout * 1000))
        return cls(replicas, timeout_ms, pack_command((b"WAIT", replicas, timeout_ms)))

    def shortfall(self, what: str, acknowledged: int) -> str:
        """The message of an error for ``what`` that only ``acknowledged`` replicas confirmed."""
        return (
            f"{what} ran on the master, but only {acknowledged} of the {self.replicas} replicas asked"
            f" for confirmed it within {self.timeout_ms / 1000:g} s: it may be lost on failover"
        )


def replication_for(
    replicas: int | None,
    replica_timeout: float | timedelta | None,
    default: Replication | None = None,
) -> Replication | None:
    """The replication a call asks for: its own options over ``default`` (the queue's); None for none."""
    if replicas is None and replica_timeout is None:
        return default
    if replicas is None:
        replicas = default.replicas if default is not None else 0
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise TypeError(f"replicas must be an int, not {type(replicas).__name__}")
    if replicas < 0:
        raise ValueError("replicas must not be negative")
    if replica_timeout is None:
        timeout = default.timeout_ms / 1000 if default is not None else DEFAULT_REPLICA_TIMEOUT
    else:
        timeout = seconds(replica_timeout, "replica_timeout", allow_zero=False)
        if timeout > MAX_REPLICA_TIMEOUT:
            raise ValueError(f"replica_timeout must be at most {MAX_REPLICA_TIMEOUT:g} s, got {timeout:g}")
    return Replication.of(replicas, timeout) if replicas else None
