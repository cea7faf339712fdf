"""``vermilion migrate``: a queue written by protocol version 1 moved to version 2 in place.

The version-1 queue is written by the version-1 scripts themselves
(``protocol_v1/``, built as the old ``_scripts.py`` built them), so the test
migrates exactly what an older vermilion left in Redis.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from tests.layout import history_bytes
from vermilion import AsyncWorker, ConfigurationError, Message, MessageStatus, Queue, ReplayResult
from vermilion._keys import QueueKeys
from vermilion._wire import OutcomeRequest

from .test_worker import Recorder, wait_until

V1_DIR = Path(__file__).parent / "protocol_v1"
_INCLUDE_STATE = re.compile(r"^--#include _state$", re.MULTILINE)
LEASE_MS = 60_000

CONTENTS: dict[str, Any] = {
    "a": {"n": "a"},
    "b": {"n": "b"},
    "c": {"n": "c"},
    "delayed": {"n": "delayed"},
    "locked": {"n": "locked"},
    "requeued": {"n": "requeued"},
    "retried": {"n": "retried"},
    "done": {"n": "done"},
    "failed": {"n": "failed"},
    "own-lock": {"n": "own-lock"},
}
READY_MIDS = ("retried", "own-lock", "a", "b", "c")  # the v1 `ready` list, head first


def v1_source(name: str) -> str:
    """Script ``name`` of protocol version 1, exactly as version 1's ``_scripts.py`` built it."""
    body = (V1_DIR / f"{name}.lua").read_text(encoding="utf-8")
    state = (V1_DIR / "_state.lua").read_text(encoding="utf-8")
    body = _INCLUDE_STATE.sub(lambda _: state, body)
    shebang = ""
    if body.startswith("#!"):
        shebang, _, body = body.partition("\n")
        shebang += "\n"
    common = (V1_DIR / "_common.lua").read_text(encoding="utf-8")
    return f"{shebang}{common}\n{body}"


_V1_SOURCES = {name: v1_source(name) for name in ("enqueue", "dequeue", "ack", "status")}


class V1:
    """Calls of the version-1 scripts on one queue's seventeen version-1 keys."""

    def __init__(self, redis: aioredis.Redis, name: str) -> None:
        self.redis = redis
        self.keys = QueueKeys.for_queue(name)

    async def call(self, script: str, *args: Any) -> Any:
        return await self.redis.eval(_V1_SOURCES[script], len(self.keys.v1), *self.keys.v1, *args)

    async def enqueue(
        self, mid: str, *, delay_ms: int = 0, lock_ms: int | None = None, flags: int = 0
    ) -> str:
        payload = msgpack.packb(CONTENTS[mid] if flags != 2 else {"n": mid, "requeue": True})
        reply = await self.call("enqueue", delay_ms, "" if lock_ms is None else lock_ms, flags, mid, payload)
        return str(reply[0].decode())

    async def dequeue_one(self) -> tuple[str, int]:
        """Lease the head of `ready` for LEASE_MS: (mid, token)."""
        reply = await self.call("dequeue", 1, LEASE_MS, 100, 1)
        assert len(reply) == 5 + 7, reply
        return reply[5].decode(), int(reply[10])

    async def ack(self, mid: str, token: int, outcome: str, reason: str | None = None) -> None:
        reasons = [] if reason is None else [reason]
        assert await self.call("ack", 100, 1, mid, token, outcome, *reasons) == [1]

    async def status(self, mid: str) -> str | None:
        reply = await self.call("status", mid)
        return reply[0].decode() if reply else None


async def build_v1_queue(v1: V1) -> dict[str, int]:
    """Every kind of state protocol version 1 keeps; returns the tokens still leased."""
    tokens: dict[str, int] = {}
    assert await v1.enqueue("locked") == "added"
    mid, tokens["locked"] = await v1.dequeue_one()
    assert mid == "locked"
    await v1.enqueue("requeued")
    mid, tokens["requeued"] = await v1.dequeue_one()
    assert mid == "requeued"
    assert await v1.enqueue("requeued", flags=2) == "added"  # a pending requeue while locked
    for mid, outcome, reason in (("done", "s3600000", None), ("failed", "f", "boom"), ("retried", "r", None)):
        await v1.enqueue(mid)
        leased, token = await v1.dequeue_one()
        assert leased == mid
        await v1.ack(mid, token, outcome, reason)
    await v1.enqueue("delayed", delay_ms=3_600_000)
    await v1.enqueue("own-lock", lock_ms=5000)
    payloads = [x for mid in ("a", "b", "c") for x in (mid, msgpack.packb(CONTENTS[mid]))]
    assert await v1.call("enqueue", 0, "", 0, *payloads) == [b"added"] * 3
    ready: list[Any] = await v1.redis.lrange(v1.keys.v1[7], 0, -1)
    assert [m.decode() for m in ready] == list(READY_MIDS)
    return tokens


EXPECTED_V1 = {
    "a": "queued",
    "b": "queued",
    "c": "queued",
    "retried": "queued",
    "own-lock": "queued",
    "delayed": "queued-with-backoff",
    "locked": "locked",
    "requeued": "locked-with-requeue",
    "done": "done-with-backoff",
    "failed": "failed",
}


@pytest.fixture
async def v1_queue(redis: aioredis.Redis) -> AsyncIterator[str]:
    """A unique queue name; every key of it, of both versions, is deleted after the test."""
    name = f"test-migrate-{uuid.uuid4().hex[:12]}"
    yield name
    keys = QueueKeys.for_queue(name)
    await redis.delete(*keys.keys, *keys.v1)


async def run_cli(url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vermilion",
        "--url",
        url,
        "migrate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def mids_by_version(redis: aioredis.Redis, name: str) -> tuple[set[str], set[str]]:
    """The mids the version-1 keys know, and those the version-2 `mids` set holds."""
    keys = QueueKeys.for_queue(name)
    found: list[Any] = list(await redis.lrange(keys.v1[7], 0, -1))
    for index in (8, 9, 11, 12):  # delayed, locks, done, failed
        found.extend(await redis.zrange(keys.v1[index], 0, -1))
    v2: set[Any] = await redis.smembers(keys.key("mids"))
    return {m.decode() for m in found}, {m.decode() for m in v2}


async def test_a_v1_queue_is_refused_naming_migrate(
    redis: aioredis.Redis, redis_url: str, v1_queue: str
) -> None:
    await build_v1_queue(V1(redis, v1_queue))
    async with Queue(v1_queue, redis_url) as queue:
        with pytest.raises(ConfigurationError, match=f"vermilion migrate {re.escape(v1_queue)}"):
            await queue.status()


async def test_migrate_keeps_every_state(redis: aioredis.Redis, redis_url: str, v1_queue: str) -> None:
    v1 = V1(redis, v1_queue)
    await build_v1_queue(v1)
    before = {mid: await v1.status(mid) for mid in CONTENTS}
    assert before == EXPECTED_V1

    code, out, err = await run_cli(redis_url, v1_queue)
    assert code == 0, (out, err)
    assert f"migrated {v1_queue}: moved {len(CONTENTS)} messages" in out
    assert await redis.exists(*QueueKeys.for_queue(v1_queue).v1) == 0

    async with Queue(v1_queue, redis_url) as queue:
        after = {mid: await queue.message_status(mid) for mid in CONTENTS}
        assert after == {mid: MessageStatus(status) for mid, status in before.items()}
        infos = {info.mid: info for info in await queue.content()}
        live = set(CONTENTS) - {"done", "failed"}
        assert {mid: infos[mid].content for mid in live} == {mid: CONTENTS[mid] for mid in live}
        assert infos["failed"].error == "boom"
        assert infos["retried"].attempts == 1

        handler = Recorder()
        async with AsyncWorker(queue, handler, concurrency=1, monitor=None):
            await wait_until(lambda: len(handler.calls) == len(READY_MIDS))
            await asyncio.sleep(0.05)
        calls: list[Message] = handler.calls
        assert [m.mid for m in calls] == list(READY_MIDS)
        assert {m.mid: m.attempt for m in calls} == {"retried": 2, "own-lock": 1, "a": 1, "b": 1, "c": 1}
        assert {m.mid: m.content for m in calls} == {mid: CONTENTS[mid] for mid in READY_MIDS}
        status = await queue.status()
        assert (status.nqueued, status.nbackoff, status.nlocked, status.ndone) == (0, 1, 2, 1), status


async def test_v1_failures_join_the_history_without_a_payload(
    redis: aioredis.Redis, redis_url: str, v1_queue: str
) -> None:
    """Version 1 kept no payload: the entry shows content=None, cannot be replayed, can be purged."""
    await build_v1_queue(V1(redis, v1_queue))
    code, _, _ = await run_cli(redis_url, v1_queue)
    assert code == 0
    keys = QueueKeys.for_queue(v1_queue)
    async with Queue(v1_queue, redis_url) as queue:
        (entry,) = await queue.failed()
        assert (entry.mid, entry.content, entry.reason, entry.attempts) == ("failed", None, "boom", 0)
        assert entry.failed_at.tzinfo is not None
        kept, actual = await history_bytes(redis, keys)
        assert kept == actual > 0
        assert await queue.replay("failed") == [ReplayResult("failed", False, "no-content")]
        assert await queue.replay_failed() == 0
        assert await queue.message_status("failed") == MessageStatus.FAILED
        assert await queue.purge_failed("failed") == 1
        assert await queue.message_status("failed") is None
        assert await history_bytes(redis, keys) == (0, 0)


async def test_own_lease_is_kept(redis: aioredis.Redis, redis_url: str, v1_queue: str) -> None:
    await build_v1_queue(V1(redis, v1_queue))
    code, _, _ = await run_cli(redis_url, v1_queue)
    assert code == 0
    async with Queue(v1_queue, redis_url) as queue:
        client, keys = queue._protocol
        reply = await client.dequeue(keys, 10, 30_000, 100)
        leases = {m.mid: m.lock_ms for m in reply.messages}
        assert [m.mid for m in reply.messages] == list(READY_MIDS)
        assert leases == {"retried": 30_000, "own-lock": 5000, "a": 30_000, "b": 30_000, "c": 30_000}


async def test_second_migrate_has_nothing_to_do(redis: aioredis.Redis, redis_url: str, v1_queue: str) -> None:
    await build_v1_queue(V1(redis, v1_queue))
    assert (await run_cli(redis_url, v1_queue))[0] == 0
    code, out, err = await run_cli(redis_url, v1_queue)
    assert code == 0, (out, err)
    assert out == f"{v1_queue}: nothing to migrate (no version-1 data)\n"
    code, out, err = await run_cli(redis_url, v1_queue, "--json")
    assert code == 0, (out, err)
    assert json.loads(out) == [{"queue": v1_queue, "migrated": False, "moved": 0}]
    async with Queue(v1_queue, redis_url) as queue:
        client, keys = queue._protocol
        assert await client.migrate(keys, 1000) == (0, 0)
        assert await queue.message_status("a") == MessageStatus.QUEUED


async def test_interrupted_migration_moves_whole_mids(
    redis: aioredis.Redis, redis_url: str, v1_queue: str
) -> None:
    v1 = V1(redis, v1_queue)
    await build_v1_queue(v1)
    async with Queue(v1_queue, redis_url) as queue:
        client, keys = queue._protocol
        steps = 0
        while True:
            _, left = await client.migrate(keys, 1)
            steps += 1
            in_v1, in_v2 = await mids_by_version(redis, v1_queue)
            assert in_v1 | in_v2 == set(CONTENTS)
            assert not in_v1 & in_v2, (steps, in_v1 & in_v2)
            if left == 0:
                break
            assert steps < 50
        assert steps > 1
        assert in_v1 == set()
        assert {mid: await queue.message_status(mid) for mid in CONTENTS} == {
            mid: MessageStatus(status) for mid, status in EXPECTED_V1.items()
        }


async def test_v1_enqueue_between_steps_is_picked_up(
    redis: aioredis.Redis, redis_url: str, v1_queue: str
) -> None:
    v1 = V1(redis, v1_queue)
    await build_v1_queue(v1)
    async with Queue(v1_queue, redis_url) as queue:
        client, keys = queue._protocol
        assert (await client.migrate(keys, 1))[1] > 0
        late = msgpack.packb({"n": "late"})
        assert await v1.call("enqueue", 0, "", 0, "late", late) == [b"added"]
        while (await client.migrate(keys, 1000))[1] > 0:
            pass
        assert await queue.message_status("late") == MessageStatus.QUEUED
        infos = {info.mid: info.content for info in await queue.content()}
        assert infos["late"] == {"n": "late"}
        assert await redis.exists(*keys.v1) == 0


async def test_new_lease_tokens_follow_migrated_ones(
    redis: aioredis.Redis, redis_url: str, v1_queue: str
) -> None:
    tokens = await build_v1_queue(V1(redis, v1_queue))
    v1_seq = int(await redis.get(QueueKeys.for_queue(v1_queue).v1[15]) or 0)
    assert max(tokens.values()) <= v1_seq
    assert (await run_cli(redis_url, v1_queue))[0] == 0
    async with Queue(v1_queue, redis_url) as queue:
        client, keys = queue._protocol
        reply = await client.dequeue(keys, 1, 30_000, 100)
        assert reply.messages[0].token > v1_seq
        # The migrated lease keeps its token: its ack is applied.
        locked = await queue.message_status("locked")
        assert locked == MessageStatus.LOCKED
        assert await client.ack(keys, [OutcomeRequest("locked", tokens["locked"], "s")], 100) == [True]
        assert await queue.message_status("locked") is None
        # The pending requeue, with its own payload, starts when its lease ends.
        assert await client.ack(keys, [OutcomeRequest("requeued", tokens["requeued"], "s")], 100) == [True]
        assert await queue.message_status("requeued") == MessageStatus.QUEUED
        infos = {info.mid: info for info in await queue.content()}
        assert infos["requeued"].content == {"n": "requeued", "requeue": True}
        assert infos["delayed"].backoff is not None and 3500 < infos["delayed"].backoff <= 3600
        assert infos["done"].backoff is not None and 3500 < infos["done"].backoff <= 3600
