"""The failure history's part of ``Queue``: reading, replaying and purging it.

A mixin, so that ``_queue.py`` keeps to producing and inspecting: it checks
the caller's arguments and decodes what :mod:`._history` reads from Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone

from ._history import (
    MAX_PAGE,
    StoredFailure,
    failed_page,
    purge_all,
    purge_mids,
    replay_all,
    replay_mids,
)
from ._inspection import each_shard
from ._keys import QueueKeys
from ._messages import FailedMessage, ReplayResult
from ._protocol import ScriptClient
from ._serialization import Serializer, decode_or_raw
from ._shards import by_shard
from ._validation import check_mid, non_negative_int

__all__ = ["FailureHistory"]


class FailureHistory:
    """Methods of :class:`~vermilion.Queue` over its failure history."""

    serializer: Serializer
    max_payload_bytes: int
    _connection: ScriptClient
    _keys: QueueKeys
    _shard_keys: tuple[QueueKeys, ...]

    async def failed(self, limit: int = 100, offset: int = 0) -> list[FailedMessage]:
        """A page of the failure history, newest first.

        Args:
            limit: at most this many entries (0 to 10,000).
            offset: how many of the newest entries to skip (on a sharded
                queue, ``offset + limit`` is at most 10,000).

        Each entry keeps the payload of the message that failed (``content``,
        decoded with this queue's serializer; the raw bytes if it cannot be
        decoded), its reason, its attempts and when it failed.
        """
        non_negative_int(limit, "limit", maximum=MAX_PAGE)
        non_negative_int(offset, "offset")
        if len(self._shard_keys) == 1:
            _, stored = await failed_page(self._connection, self._keys, offset, limit)
            return [self._failed_message(entry) for entry in stored]
        if offset + limit > MAX_PAGE:
            raise ValueError(f"on a sharded queue, offset + limit must be at most {MAX_PAGE}")
        # Each shard's newest offset + limit, merged newest first.
        pages = await each_shard(
            self._shard_keys, lambda keys: failed_page(self._connection, keys, 0, offset + limit)
        )
        merged = sorted((entry for _, page in pages for entry in page), key=_when, reverse=True)
        return [self._failed_message(entry) for entry in merged[offset : offset + limit]]

    def _failed_message(self, entry: StoredFailure) -> FailedMessage:
        return FailedMessage(
            mid=entry.mid,
            content=decode_or_raw(self.serializer, entry.payload, self.max_payload_bytes),
            reason=entry.reason,
            attempts=entry.attempts,
            failed_at=datetime.fromtimestamp(entry.failed_ms / 1000, tz=timezone.utc),
        )

    async def replay(self, *mids: str) -> list[ReplayResult]:
        """Put failed messages back in the queue, each as a new life (attempt 1).

        Atomic per mid: a mid in the failure history leaves it and is ready
        again with the payload (and own lease) it failed with, waking an idle
        worker as an enqueue does. A mid that is not in the history is left as
        it is: ``error="live"`` if the queue knows it (enqueued again since),
        ``"unknown"`` if not; ``"no-content"`` for a failure migrated from
        protocol version 1, which kept no payload.

        Returns one :class:`~vermilion.ReplayResult` per mid, in order.

        Raises:
            TypeError, ValueError: a bad mid; nothing was sent.
            OutcomeUnknownError: the connection failed after sending (a replay
                is not repeated: a second one would answer ``live``); check
                with ``message_status``.
        """
        checked = _check_mids(mids)
        answers = await self._by_shard(checked, replay_mids)
        return [
            ReplayResult(mid, True) if answer == "ok" else ReplayResult(mid, False, answer)  # type: ignore[arg-type]
            for mid, answer in zip(checked, answers, strict=True)
        ]

    async def replay_failed(self) -> int:
        """Replay every message of the failure history (of every shard); returns how many.

        Takes the history as it is when called: a message that fails again
        while this runs stays failed. Failures migrated from protocol version 1
        (no payload) stay in the history.
        """
        replayed = await each_shard(self._shard_keys, lambda keys: replay_all(self._connection, keys))
        return sum(replayed)

    async def purge_failed(self, *mids: str) -> int:
        """Remove entries from the failure history; with no mids, every entry.

        The queue forgets a purged mid (it can be enqueued as new). A mid not
        in the history is left as it is. Returns how many entries were removed.
        """
        if not mids:
            purged = await each_shard(self._shard_keys, lambda keys: purge_all(self._connection, keys))
            return sum(purged)
        checked = _check_mids(mids)
        if len(self._shard_keys) == 1:
            return await purge_mids(self._connection, self._keys, checked)
        groups = by_shard(checked, len(self._shard_keys))
        counts = await asyncio.gather(
            *(
                purge_mids(self._connection, self._shard_keys[index], [checked[p] for p in positions])
                for index, positions in groups.items()
            )
        )
        return sum(counts)

    async def _by_shard(
        self,
        mids: list[str],
        call: Callable[[ScriptClient, QueueKeys, Sequence[str]], Awaitable[list[str]]],
    ) -> list[str]:
        """``call`` for each shard's mids, at once; the answers in the order of ``mids``."""
        if len(self._shard_keys) == 1:
            return await call(self._connection, self._keys, mids)
        groups = by_shard(mids, len(self._shard_keys))
        replies = await asyncio.gather(
            *(
                call(self._connection, self._shard_keys[index], [mids[p] for p in positions])
                for index, positions in groups.items()
            )
        )
        answers = [""] * len(mids)
        for positions, reply in zip(groups.values(), replies, strict=True):
            for position, answer in zip(positions, reply, strict=True):
                answers[position] = answer
        return answers


def _when(entry: StoredFailure) -> tuple[int, str]:
    # As on one shard: entries failed in the same ms in reverse order of their mids.
    return entry.failed_ms, entry.mid


def _check_mids(mids: tuple[object, ...]) -> list[str]:
    return [check_mid(mid, f"mids[{index}]") for index, mid in enumerate(mids)]
