"""`replicas=K`: an enqueue answers ok only when K replicas confirmed it (WAIT behind the script).

The test server has no replica, so every wait here falls short: the write
stands on the master and ReplicationError says so. The cluster tests
(tests/cluster/test_replicas.py) show the waits that succeed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from tests.conftest import QueueFactory
from vermilion import Message, MessageStatus, Queue, ReplicationError
from vermilion.testing import drain

SHORT = 0.05


async def test_too_few_replicas_is_an_error_that_keeps_the_results(queue: Queue) -> None:
    with pytest.raises(ReplicationError, match="may be lost on failover") as raised:
        await queue.enqueue("x", mid="a", replicas=1, replica_timeout=SHORT)
    error = raised.value
    assert (error.replicas, error.acknowledged, error.mids) == (1, 0, ("a",))
    assert [(result.mid, result.action) for result in error.results] == [("a", "added")]
    assert await queue.message_status("a") is MessageStatus.QUEUED  # stored on the master


async def test_the_queue_s_option_applies_to_every_enqueue_and_a_call_overrides_it(
    make_queue: QueueFactory,
) -> None:
    queue = await make_queue(replicas=1, replica_timeout=timedelta(milliseconds=50))
    with pytest.raises(ReplicationError) as raised:
        await queue.enqueue_many(["x", "y"], mids=["a", "b"])
    assert [result.ok for result in raised.value.results] == [True, True]
    assert raised.value.mids == ("a", "b")
    assert (await queue.enqueue("z", mid="c", replicas=0)).ok  # no wait at all
    with pytest.raises(ReplicationError) as raised:
        await queue.enqueue("x", mid="a")
    assert raised.value.results[0].error == "already-queued"


async def test_the_reply_pair_stays_in_step_after_noscript(queue: Queue, redis: aioredis.Redis) -> None:
    """NOSCRIPT (an error reply) comes first, the WAIT's count second: both are read, the
    script is sent with EVAL, and the next call reads its own replies."""
    await redis.script_flush()
    with pytest.raises(ReplicationError):
        await queue.enqueue("x", mid="a", replicas=1, replica_timeout=SHORT)
    assert (await queue.enqueue("y", mid="b")).ok
    assert {info.mid for info in await queue.content()} == {"a", "b"}


async def test_a_user_client_waits_through_its_own_settings(queue_name: str, redis: aioredis.Redis) -> None:
    async with Queue(queue_name, redis=redis, replicas=1, replica_timeout=SHORT) as queue:
        with pytest.raises(ReplicationError):
            await queue.enqueue("x", mid="a")
        assert await queue.message_status("a") is MessageStatus.QUEUED
        assert await queue.clear() == 1


async def test_acks_that_too_few_replicas_confirmed_are_logged(
    make_queue: QueueFactory, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await make_queue(replicas=1, replica_timeout=SHORT)
    await queue.enqueue("x", mid="a", replicas=0)
    handled: list[str] = []

    async def handle(message: Message) -> None:
        handled.append(message.mid)

    with caplog.at_level(logging.WARNING, logger="vermilion"):
        await drain(queue, handle, timeout=10)
    assert handled == ["a"]
    assert any("may be handled again after a failover" in record.message for record in caplog.records)


@pytest.mark.parametrize(
    ("options", "error", "fragment"),
    [
        ({"replicas": True}, TypeError, "replicas must be an int"),
        ({"replicas": "1"}, TypeError, "replicas must be an int"),
        ({"replicas": -1}, ValueError, "replicas must not be negative"),
        ({"replicas": 1, "replica_timeout": 0}, ValueError, "replica_timeout must be greater than zero"),
        ({"replicas": 1, "replica_timeout": 11}, ValueError, "at most 10 s"),
        ({"replicas": 1, "replica_timeout": "1"}, TypeError, "replica_timeout must be a number"),
    ],
)
async def test_bad_replica_options_are_refused_before_anything_is_sent(
    queue: Queue, options: dict[str, object], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        await queue.enqueue("x", **options)  # type: ignore[arg-type]
    with pytest.raises(error, match=fragment):
        Queue("q", "redis://127.0.0.1:1/0", **options)  # type: ignore[arg-type]
    assert await queue.size() == 0
