"""The inspecting part of ``Queue`` (a mixin, so that ``_queue.py`` keeps to
producing): status, content, workers and clear, each over every shard of a
sharded queue, and :func:`each_shard`, which runs one call per shard."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ._keys import QueueKeys
from ._messages import MessageInfo, MessageStatus, QueueStatus
from ._presence import WorkerPresence
from ._presence_calls import live_workers
from ._protocol import ScriptClient
from ._serialization import Serializer, decode_or_raw
from ._shards import shard_index
from ._validation import check_mid
from ._wire import Counts, StoredMessage

__all__ = ["QueueInspection", "each_shard"]

T = TypeVar("T")


async def each_shard(shards: tuple[QueueKeys, ...], call: Callable[[QueueKeys], Awaitable[T]]) -> list[T]:
    """``call`` on every shard, at once (a cluster's shards are on different nodes)."""
    if len(shards) == 1:
        return [await call(shards[0])]
    return list(await asyncio.gather(*(call(keys) for keys in shards)))


class QueueInspection:
    """The inspecting methods of :class:`~vermilion.Queue`."""

    _name: str
    serializer: Serializer
    max_payload_bytes: int
    _connection: ScriptClient
    _keys: QueueKeys
    _shard_keys: tuple[QueueKeys, ...]

    def _shard(self, mid: str) -> QueueKeys:
        """The keys of the shard that holds ``mid`` (the queue's own keys if unsharded)."""
        shards = self._shard_keys
        return shards[0] if len(shards) == 1 else shards[shard_index(mid, len(shards))]

    async def message_status(self, mid: str) -> MessageStatus | None:
        """The status of one message, or ``None`` if the queue does not know its mid."""
        checked = check_mid(mid)
        status = await self._connection.message_status(self._shard(checked), checked)
        return None if status is None else MessageStatus(status)

    async def status(self) -> QueueStatus:
        """Counts of the queue's messages and its lag, read atomically in O(log n).

        On a sharded queue, the sums over its shards (each read atomically,
        not all at one instant), the largest lag, and ``max_size`` per shard.
        """
        counts = await each_shard(self._shard_keys, self._connection.counts)
        total = _sum_counts(counts)
        live = total.nqueued + total.nlocked + total.nbackoff
        return QueueStatus(
            nqueued=total.nqueued,
            nlocked=total.nlocked,
            nbackoff=total.nbackoff,
            ntotal=live + total.ndone,
            ndone=total.ndone,
            nfailed=total.nfailed,
            lag=total.lag_ms / 1000,
            nfailed_dropped=total.nfailed_dropped,
            max_size=total.max_size,
        )

    async def size(self) -> int:
        """How many messages are ready to be handled now (``status().nqueued``)."""
        return (await self.status()).nqueued

    async def content(self) -> list[MessageInfo]:
        """Every message with its status. O(n) and atomic (per shard): for debugging only.

        Content that cannot be decoded is shown as its raw bytes.
        """
        replies = await each_shard(self._shard_keys, self._connection.content)
        return [self._info(now_ms, entry) for now_ms, stored in replies for entry in stored]

    def _info(self, now_ms: int, entry: StoredMessage) -> MessageInfo:
        return MessageInfo(
            mid=entry.mid,
            status=MessageStatus(entry.status),
            attempts=entry.attempts,
            age=None if entry.enqueued_ms is None else max(0, now_ms - entry.enqueued_ms) / 1000,
            backoff=None if entry.backoff_end_ms is None else max(0, entry.backoff_end_ms - now_ms) / 1000,
            content=decode_or_raw(self.serializer, entry.payload, self.max_payload_bytes),
            error=entry.error,
        )

    async def workers(self) -> list[WorkerPresence]:
        """The live workers of this queue, as they last announced themselves, oldest first.

        A worker announces itself when it starts and every ``presence_interval``
        (60 s by default); a crashed worker is listed until its record lapses.
        """
        return await live_workers(self._connection, self._name)

    async def clear(self) -> int:
        """Delete every message and all state of this queue (of every shard).

        Returns how many live messages were removed. Only the queue's lease
        counter and protocol version stay (``vermilion:{<name>}:v2:meta``), so
        that a worker still holding a lease from before can never complete a
        message from after, and the presence of its live workers. A sharded
        queue keeps its shard count.
        """
        if self._shard_keys[0].base is not None:
            # clear skips the version check: a client of another count must
            # still be refused.
            await self._connection.ensure_version(self._shard_keys[0])
        return sum(await each_shard(self._shard_keys, self._connection.clear))


def _sum_counts(counts: list[Counts]) -> Counts:
    if len(counts) == 1:
        return counts[0]
    bounds = [c.max_size for c in counts if c.max_size is not None]
    totals: dict[str, Any] = {
        name: sum(getattr(c, name) for c in counts)
        for name in ("nqueued", "nlocked", "nbackoff", "ndone", "nfailed", "nfailed_dropped")
    }
    return Counts(
        **totals,
        lag_ms=max(c.lag_ms for c in counts),
        now_ms=max(c.now_ms for c in counts),
        max_size=max(bounds) if bounds else None,
    )
