"""The key layout of a queue in Redis: ``vermilion:{<queue>}:<part>``.

Owns the key names and their order, which is the ``KEYS`` order every Lua
script reads (see ``lua/_common.lua``), and recognising a queue's name in a
key found by ``SCAN``. It builds names only: it sends nothing to Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._logs import logger
from ._validation import check_queue_name

__all__ = ["KEY_PARTS", "KEY_PREFIX", "QueueKeys", "queue_name_in", "queue_name_of", "scan_pattern"]

KEY_PREFIX = "vermilion"
# Order matters: it is the KEYS order documented in lua/_common.lua.
KEY_PARTS = (
    "messages",
    "requeue",
    "attempts",
    "enqueued",
    "due",
    "lock_ms",
    "requeue_lock_ms",
    "ready",
    "delayed",
    "locks",
    "leases",
    "done",
    "failed",
    "errors",
    "notify",
    "seq",
    "suspects",
)


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Every Redis key of one queue: ``vermilion:{<queue>}:<part>``.

    The braces are a Redis Cluster hash tag: every key of a queue lives in
    one slot, so every script touches one slot.
    """

    name: str
    keys: tuple[bytes, ...]

    @classmethod
    def for_queue(cls, name: str) -> QueueKeys:
        prefix = f"{KEY_PREFIX}:{{{name}}}:"
        return cls(name, tuple(f"{prefix}{part}".encode() for part in KEY_PARTS))

    def key(self, part: str) -> bytes:
        return self.keys[KEY_PARTS.index(part)]


def scan_pattern(pattern: str) -> str:
    """The ``SCAN MATCH`` pattern for the keys of queues whose names match a glob ``pattern``."""
    return f"{KEY_PREFIX}:{{{pattern}}}:*"


def queue_name_of(key: bytes) -> bytes | None:
    """The raw queue name inside a key ``SCAN`` found, or None for a key no live queue keeps."""
    if key.endswith(b"}:seq"):  # kept by clear(): not a sign of a live queue
        return None
    return key[len(KEY_PREFIX) + 2 :].partition(b"}")[0]


def queue_name_in(key: bytes, raw: bytes) -> str | None:
    """The queue name ``raw`` found in ``key``, or None, with a warning, if it is none.

    Keys that look like vermilion's but were not written by it (by hand, by
    another tool) must not stop the listing of every real queue.
    """
    try:
        return check_queue_name(raw.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        reason = "it is not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
        logger.warning("skipped Redis key %r, not of a vermilion queue: %s", key, reason)
        return None
