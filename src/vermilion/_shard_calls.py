"""The calls of a sharded queue that split by mid: ``enqueue`` and the worker's
``ack`` and ``extend``, each sent as one call per shard, all at once.

Part of the Redis boundary, beside :mod:`._protocol`, whose
:class:`ScriptClient` sends each shard's call; :mod:`._shards` says which shard
holds a mid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from ._exceptions import OutcomeUnknownError, ReplicationError
from ._keys import QueueKeys
from ._protocol import DEFAULT_MAX_FAILED_BYTES, ScriptClient
from ._replication import Replication
from ._shards import by_shard
from ._wire import EnqueueOptions, OutcomeRequest

__all__ = ["ShardedCalls", "enqueue_sharded"]


async def _per_shard(
    shards: tuple[QueueKeys, ...],
    mids: Sequence[str],
    call: Any,
) -> tuple[list[Any], list[BaseException]]:
    """``call(shard_keys, positions)`` per shard holding any of ``mids``, at once.

    Returns each position's reply (None where its shard's call failed) and the failures.
    """
    groups = by_shard(mids, len(shards))
    outcomes: list[Any]
    if len(groups) == 1:  # one message, or all on one shard: no task to gather
        ((index, positions),) = groups.items()
        try:
            outcomes = [await call(shards[index], positions)]
        except Exception as exc:
            outcomes = [exc]
    else:
        outcomes = await asyncio.gather(
            *(call(shards[index], positions) for index, positions in groups.items()), return_exceptions=True
        )
    replies: list[Any] = [None] * len(mids)
    failures: list[BaseException] = []
    for positions, outcome in zip(groups.values(), outcomes, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            failures.append(outcome)
            if isinstance(outcome, ReplicationError):
                for position, reply in zip(positions, outcome.replies, strict=True):
                    replies[position] = reply
            continue
        for position, reply in zip(positions, outcome, strict=True):
            replies[position] = reply
    return replies, failures


async def enqueue_sharded(
    client: ScriptClient,
    shards: tuple[QueueKeys, ...],
    options: EnqueueOptions,
    messages: Sequence[tuple[str, bytes]],
    replication: Replication | None,
) -> list[str]:
    """Enqueue each message on its mid's shard: atomic per shard, not across shards.

    One shard's failure raises it (an :class:`OutcomeUnknownError` first: its
    messages may or may not be stored); too few replicas on any shard raises
    one :class:`ReplicationError` with every message's reply.
    """

    async def send(keys: QueueKeys, positions: list[int]) -> list[str]:
        return await client.enqueue(keys, options, [messages[p] for p in positions], replication)

    replies, failures = await _per_shard(shards, [mid for mid, _ in messages], send)
    if not failures:
        return replies
    unreplicated = [f for f in failures if isinstance(f, ReplicationError)]
    if len(unreplicated) < len(failures):
        raise next(f for f in failures if not isinstance(f, ReplicationError))
    error = ReplicationError(
        str(unreplicated[0]),
        replicas=unreplicated[0].replicas,
        acknowledged=min(f.acknowledged for f in unreplicated),
        mids=tuple(mid for mid, _ in messages),
    )
    error.replies = replies
    raise error


class ShardedCalls:
    """What the worker's acknowledger and heartbeat call, split by the shard of each mid.

    It stands in for the :class:`ScriptClient` they are given; ``keys`` is
    ignored (they pass the queue's own keys): each mid's shard is used.
    """

    def __init__(self, client: ScriptClient, shards: tuple[QueueKeys, ...]) -> None:
        self._client = client
        self._shards = shards

    async def ack(
        self,
        keys: QueueKeys,
        outcomes: Sequence[OutcomeRequest],
        max_failed: int,
        max_failed_bytes: int = DEFAULT_MAX_FAILED_BYTES,
    ) -> list[bool | None]:
        """As :meth:`ScriptClient.ack`. Fenced, so a batch whose shards partly
        failed is sent again whole; the applied part then reads as unknown."""

        def send(shard: QueueKeys, positions: list[int]) -> Awaitable[list[bool | None]]:
            return self._client.ack(shard, [outcomes[p] for p in positions], max_failed, max_failed_bytes)

        replies, failures = await _per_shard(self._shards, [o.mid for o in outcomes], send)
        if failures:
            if len(failures) < len(by_shard([o.mid for o in outcomes], len(self._shards))):
                raise OutcomeUnknownError(f"acknowledging on one shard failed: {failures[0]}")
            raise failures[0]
        return replies

    async def extend(self, keys: QueueKeys, leases: Sequence[tuple[str, int, int]]) -> list[bool]:
        def send(shard: QueueKeys, positions: list[int]) -> Awaitable[list[bool]]:
            return self._client.extend(shard, [leases[p] for p in positions])

        replies, failures = await _per_shard(self._shards, [lease[0] for lease in leases], send)
        if failures:
            raise failures[0]
        return replies
