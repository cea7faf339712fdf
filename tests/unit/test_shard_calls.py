"""The calls of a sharded queue that split by mid, when one shard's call fails."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest

from vermilion import OutcomeUnknownError, ReplicationError, VermilionConnectionError
from vermilion._keys import QueueKeys
from vermilion._protocol import ScriptClient
from vermilion._shard_calls import ShardedCalls, enqueue_sharded
from vermilion._shards import shard_index, shard_keys
from vermilion._wire import EnqueueOptions, OutcomeRequest

SHARDS = shard_keys("orders", 3)


def mid_on(shard: int, prefix: str) -> str:
    return next(f"{prefix}{n}" for n in range(1000) if shard_index(f"{prefix}{n}", 3) == shard)


class Shards:
    """Answers per shard as a ScriptClient would; ``failing`` maps a shard to what it raises."""

    def __init__(self, failing: dict[int, Exception]) -> None:
        self.failing = failing
        self.calls: list[str] = []

    def _call(self, keys: QueueKeys) -> None:
        self.calls.append(keys.name)
        error = self.failing.get(SHARDS.index(keys))
        if error is not None:
            raise error

    async def enqueue(
        self, keys: QueueKeys, options: EnqueueOptions, messages: Sequence[tuple[str, bytes]], _: Any
    ) -> list[str]:
        self._call(keys)
        return ["added"] * len(messages)

    async def ack(
        self, keys: QueueKeys, outcomes: Sequence[OutcomeRequest], *bounds: int
    ) -> list[bool | None]:
        self._call(keys)
        return [True] * len(outcomes)


def unreplicated(count: int, acknowledged: int) -> ReplicationError:
    error = ReplicationError("too few replicas", replicas=1, acknowledged=acknowledged)
    error.replies = ["added"] * count
    return error


async def test_each_message_goes_to_its_shard_once() -> None:
    shards = Shards({})
    mids = [mid_on(index, f"s{index}-") for index in (0, 1, 2, 1)]
    client = cast(ScriptClient, shards)
    replies = await enqueue_sharded(client, SHARDS, EnqueueOptions(), [(m, b"x") for m in mids], None)
    assert replies == ["added"] * 4
    assert sorted(shards.calls) == sorted(keys.name for keys in SHARDS)


async def test_an_unknown_outcome_on_one_shard_raises_it() -> None:
    mids = [mid_on(0, "a"), mid_on(1, "b")]
    client = cast(ScriptClient, Shards({1: OutcomeUnknownError("lost")}))
    with pytest.raises(OutcomeUnknownError):
        await enqueue_sharded(client, SHARDS, EnqueueOptions(), [(m, b"x") for m in mids], None)


async def test_too_few_replicas_on_shards_is_one_error_covering_every_message() -> None:
    mids = [mid_on(0, "a"), mid_on(1, "b"), mid_on(2, "c")]
    client = cast(ScriptClient, Shards({0: unreplicated(1, 0), 2: unreplicated(1, 1)}))
    with pytest.raises(ReplicationError) as raised:
        await enqueue_sharded(client, SHARDS, EnqueueOptions(), [(m, b"x") for m in mids], None)
    assert raised.value.replies == ["added"] * 3
    assert raised.value.acknowledged == 0
    assert raised.value.mids == tuple(mids)


async def test_an_ack_that_failed_on_some_shards_only_is_an_unknown_outcome() -> None:
    outcomes = [OutcomeRequest(mid_on(index, f"o{index}-"), 1, "s") for index in (0, 1)]
    partly = ShardedCalls(cast(ScriptClient, Shards({1: VermilionConnectionError("down")})), SHARDS)
    with pytest.raises(OutcomeUnknownError):  # shard 0 applied its outcome: re-sent, it reads stale
        await partly.ack(SHARDS[0], outcomes, 10)
    wholly = ShardedCalls(cast(ScriptClient, Shards({0: VermilionConnectionError("down")})), SHARDS)
    with pytest.raises(VermilionConnectionError) as raised:
        await wholly.ack(SHARDS[0], outcomes[:1], 10)
    assert not isinstance(raised.value, OutcomeUnknownError)
    fine = ShardedCalls(cast(ScriptClient, Shards({})), SHARDS)
    assert await fine.ack(SHARDS[0], outcomes, 10) == [True, True]
