"""Per-key concurrency: enqueue(..., key=...) with configure(max_per_key=...): at most that many
messages of one key leased at once across all workers, the others of the key waiting without
holding up other keys, and a slot freed by every end of a lease (ack, or a lapsed lease)."""

from __future__ import annotations

import asyncio
import collections

import pytest

from tests.helpers import T0, Clocked, ack, dequeue
from vermilion import AsyncWorker, Message, MessageStatus, Queue, QueueSettings
from vermilion._wire import EnqueueOptions

META = -1  # meta is the last of the queue's keys


async def held(queue: Queue, key: str) -> int:
    return int(await queue.redis.hget(queue._keys.keys[META], f"held:{key}") or 0)


async def mids(queue: Queue, n: int = 10) -> list[str]:
    return [leased.mid for leased in (await dequeue(queue, n)).messages]


async def test_one_key_at_most_max_per_key_and_no_head_of_line_blocking(queue: Queue) -> None:
    assert await queue.configure(max_per_key=1) == QueueSettings(max_per_key=1)
    for mid, key in [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B")]:
        await queue.enqueue(mid, mid=mid, key=key)
    await queue.enqueue("free", mid="free")
    assert await mids(queue, 2) == ["a1", "b1"]  # a2 and a3 wait; b1 is not held up by them
    assert await mids(queue) == ["free"]  # a second worker: A's slot is taken
    assert (await held(queue, "A"), await held(queue, "B")) == (1, 1)
    assert (await queue.status()).nqueued == 2


@pytest.mark.parametrize("outcome", ["s", "r", "f"])
async def test_every_end_of_a_lease_frees_its_slot(queue: Queue, outcome: str) -> None:
    await queue.configure(max_per_key=1)
    await queue.enqueue("1", mid="a1", key="A")
    await queue.enqueue("2", mid="a2", key="A")
    [first] = (await dequeue(queue, 5)).messages
    assert await ack(queue, first, outcome)  # type: ignore[arg-type]
    assert await held(queue, "A") == 0
    assert await mids(queue, 1) == ["a2"]
    assert await held(queue, "A") == 1


async def test_a_lapsed_lease_frees_its_slot(queue: Queue) -> None:
    clocked = Clocked(queue)
    await clocked.at(T0)
    await queue.configure(max_per_key=1)
    await clocked.enqueue("a1")  # no key: a plain message, for contrast
    conn, keys = clocked.conn, clocked.keys
    for mid in ("k1", "k2"):
        await conn.enqueue(keys, EnqueueOptions(key="K"), [(mid, b"\x01")])
    assert [m.mid for m in await clocked.dequeue(3, lock_ms=1_000)] == ["a1", "k1"]
    assert await held(queue, "K") == 1
    await clocked.at(T0 + 2_000)  # k1's lease lapsed: the worker holding it died
    reply = await conn.dequeue(keys, 3, 60_000, 100, max_suspects=0)
    assert [m.mid for m in reply.messages] == ["k2"]  # k1 is held back as a suspect
    assert await held(queue, "K") == 1


async def test_keys_are_counted_without_a_limit_and_a_later_limit_applies(queue: Queue) -> None:
    for n in range(3):
        await queue.enqueue(n, mid=f"a{n}", key="A")
    assert len(await mids(queue, 2)) == 2
    assert await held(queue, "A") == 2
    await queue.configure(max_per_key=2)
    assert await mids(queue) == []
    await queue.configure(max_per_key=None)
    assert await mids(queue) == ["a2"]


async def test_a_key_survives_retries_and_updates_and_is_no_part_of_the_content(queue: Queue) -> None:
    await queue.configure(max_per_key=1)
    await queue.enqueue("v1", mid="a1", key="A")
    assert (await queue.enqueue("v2", mid="a1", can_update=True)).action == "updated"
    [info] = await queue.content()
    assert (info.mid, info.status, info.content) == ("a1", MessageStatus.QUEUED, "v2")
    [leased] = (await dequeue(queue, 1)).messages
    assert queue.serializer.loads(leased.payload) == "v2"
    await queue.enqueue("other", mid="a2", key="A")
    assert await ack(queue, leased, "r")  # back at the tail, behind a2, still of key A
    assert await mids(queue) == ["a2"]  # a1 waits: A's one slot is a2's
    assert await held(queue, "A") == 1
    assert await keyed_mids(queue, "A") == {"a1", "a2"}


async def test_a_failed_keyed_message_keeps_its_payload_without_the_key(queue: Queue) -> None:
    await queue.enqueue({"n": 1}, mid="a1", key="A")
    [leased] = (await dequeue(queue, 1)).messages
    assert await ack(queue, leased, "f", reason="no")
    [failed] = await queue.failed()
    assert (failed.mid, failed.content) == ("a1", {"n": 1})


async def test_clear_resets_the_counts(queue: Queue) -> None:
    await queue.configure(max_per_key=1)
    await queue.enqueue_many(["1", "2"], mids=["a1", "a2"], key="A")
    assert await mids(queue) == ["a1"]
    await queue.clear()
    assert await held(queue, "A") == 0
    await queue.enqueue("3", mid="a3", key="A")
    assert await mids(queue) == ["a3"]


@pytest.mark.parametrize(("value", "error"), [("", ValueError), ("x" * 1025, ValueError), (42, TypeError)])
async def test_bad_keys_are_refused_before_sending(queue: Queue, value: object, error: type) -> None:
    with pytest.raises(error, match="key"):
        await queue.enqueue("x", key=value)  # type: ignore[arg-type]
    with pytest.raises(error, match="max_per_key"):
        await queue.configure(max_per_key=0 if error is ValueError else "1")  # type: ignore[arg-type]


async def test_workers_never_run_two_messages_of_a_key_at_once(queue: Queue) -> None:
    """Through the public API: two workers of four slots each, max_per_key 1, two keys."""
    await queue.configure(max_per_key=1)
    for n in range(6):
        await queue.enqueue(n, key="A")
        await queue.enqueue(n, key="B")
    running: collections.Counter[str] = collections.Counter()
    most: collections.Counter[str] = collections.Counter()
    handled = 0
    done = asyncio.Event()

    async def handler(message: Message) -> None:
        nonlocal handled
        key = "A" if message.mid in a_mids else "B"
        running[key] += 1
        most[key] = max(most[key], running[key])
        await asyncio.sleep(0.01)
        running[key] -= 1
        handled += 1
        if handled == 12:
            done.set()

    a_mids = await keyed_mids(queue, "A")
    async with (
        AsyncWorker(queue, handler, concurrency=4, monitor=None),
        AsyncWorker(queue, handler, concurrency=4, monitor=None),
    ):
        await asyncio.wait_for(done.wait(), 20)
    assert most == {"A": 1, "B": 1}


async def keyed_mids(queue: Queue, key: str) -> set[str]:
    """The mids whose record holds `key` (read from Redis: the key is not part of the content)."""
    records = await queue.redis.hgetall(queue._keys.keys[2])
    prefix = len(key).to_bytes(2, "big") + key.encode()
    found = {mid: raw for mid, raw in records.items() if isinstance(mid, bytes) and isinstance(raw, bytes)}
    return {mid.decode() for mid, raw in found.items() if raw[30:].startswith(prefix)}
