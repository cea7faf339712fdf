"""The key layout of a queue in Redis: ``vermilion:{<queue>}:v2:<part>``.

Owns the key names and their order, which is the ``KEYS`` order every Lua
script reads (see ``lua/_common.lua``), and recognising a queue's name in a
key found by ``SCAN``. It builds names only: it sends nothing to Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._logs import logger
from ._validation import check_queue_name

__all__ = [
    "KEY_PARTS",
    "KEY_PREFIX",
    "PROTOCOL_VERSION",
    "V1_KEY_PARTS",
    "QueueKeys",
    "queue_name_in",
    "queue_name_of",
    "scan_pattern",
    "schedules_key",
    "worker_key",
    "workers_index_queue_name",
    "workers_key",
]

KEY_PREFIX = "vermilion"
PROTOCOL_VERSION = 2
# Order matters: it is the KEYS order documented in lua/_common.lua.
KEY_PARTS = (
    "mids",
    "ready",
    "records",
    "delayed",
    "locks",
    "done",
    "requeue",
    "failed",
    "errors",
    "notify",
    "meta",
)
# Protocol version 1's keys, in its KEYS order: read only to refuse or migrate them.
V1_KEY_PARTS = (
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
    """Every Redis key of one queue: ``vermilion:{<queue>}:v2:<part>``.

    The braces are a Redis Cluster hash tag: every key of a queue lives in
    one slot, so every script touches one slot. ``v1`` names the keys of
    protocol version 1, which only the version check and ``migrate`` read.
    """

    name: str
    keys: tuple[bytes, ...]
    v1: tuple[bytes, ...]
    # A shard's: the keys of the queue it is part of (whose meta keeps the
    # shard count), and that count; None for a queue's own keys.
    base: QueueKeys | None = None
    shards: int = 1

    @classmethod
    def for_queue(cls, name: str) -> QueueKeys:
        tag = f"{KEY_PREFIX}:{{{name}}}:"
        return cls(
            name,
            tuple(f"{tag}v{PROTOCOL_VERSION}:{part}".encode() for part in KEY_PARTS),
            tuple(f"{tag}{part}".encode() for part in V1_KEY_PARTS),
        )

    @classmethod
    def for_shard(cls, tag: str, base: QueueKeys, shards: int) -> QueueKeys:
        """The keys of one shard of ``base``'s queue, named by its hash tag ``<queue>/<i>.<salt>``."""
        own = cls.for_queue(tag)
        return cls(tag, own.keys, own.v1, base, shards)

    def key(self, part: str) -> bytes:
        return self.keys[KEY_PARTS.index(part)]

    def with_test_clock(self) -> QueueKeys:
        """These keys plus the test-only clock key the scripts read instead of TIME."""
        clock = f"{KEY_PREFIX}:{{{self.name}}}:test-clock".encode()
        return QueueKeys(self.name, (*self.keys, clock), self.v1, self.base, self.shards)


def workers_key(queue: str) -> bytes:
    """The index of a queue's live workers: a sorted set, worker id -> ms its presence expires."""
    return f"{KEY_PREFIX}:{{{queue}}}:v{PROTOCOL_VERSION}:workers".encode()


def worker_key(queue: str, worker_id: str) -> bytes:
    """The presence record of one worker of a queue: a string with a TTL, in the queue's slot."""
    return f"{KEY_PREFIX}:{{{queue}}}:v{PROTOCOL_VERSION}:worker:{worker_id}".encode()


def schedules_key(queue: str) -> bytes:
    """The watermarks of a queue's schedules: a hash, schedule name -> ms, in the queue's slot."""
    return f"{KEY_PREFIX}:{{{queue}}}:v{PROTOCOL_VERSION}:schedules".encode()


def scan_pattern(pattern: str) -> str:
    """The ``SCAN MATCH`` pattern for the keys of queues whose names match a glob ``pattern``
    (a sharded queue's keys are those of its tags ``<queue>/<i>.<salt>``)."""
    return f"{KEY_PREFIX}:{{{pattern}[}}/]*"


_WORKERS_INDEX = b":v2:workers"  # the part of workers_key() after the tag


def _queue_and_part(key: bytes) -> tuple[bytes, bytes]:
    """The raw queue name in a key ``SCAN`` found, and what follows its tag; a shard's
    tag (`<queue>/<i>.<salt>`) shows as its queue."""
    raw, _, part = key[len(KEY_PREFIX) + 2 :].partition(b"}")
    return raw.partition(b"/")[0], part


def queue_name_of(key: bytes) -> bytes | None:
    """The raw queue name inside a key ``SCAN`` found, or None for a key no live queue keeps."""
    # Kept by clear(): not a sign of a live queue.
    if key.endswith((b"}:v2:meta", b"}:seq", b"}:v2:schedules")):
        return None
    raw, part = _queue_and_part(key)
    # Workers announce themselves on a queue before it holds anything: their
    # presence alone does not make a queue.
    if part == _WORKERS_INDEX or part.startswith(b":v2:worker:"):
        return None
    return raw


def workers_index_queue_name(key: bytes) -> bytes | None:
    """The raw queue name of a queue's workers index (see :func:`workers_key`) that ``SCAN``
    found, or None for any other key."""
    raw, part = _queue_and_part(key)
    return raw if part == _WORKERS_INDEX else None


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
