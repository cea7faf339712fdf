"""Recurring messages on a real server: each slot enqueued once by any number of schedulers.

Most tests move the queue's test clock (the key the scripts read instead of
TIME) by hand, so slots come when the test says; the last ones run on the
server's own clock.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.conftest import QueueFactory
from tests.helpers import dequeue, eventually, lease_one
from tests.integration.test_cli import vermilion
from tests.integration.test_worker_process import read_line
from vermilion import (
    AsyncWorker,
    ConfigurationError,
    Message,
    Queue,
    Schedule,
    ScriptError,
    _schedules,
    queue_names,
    run_schedules,
    schedule,
)
from vermilion._keys import schedules_key
from vermilion._schedule_calls import TickReply, tick
from vermilion._scripts import SCRIPTS
from vermilion._wire import OutcomeRequest

MINUTE = 60_000
START = 33_333_334 * MINUTE  # a whole minute in 2033
SCHEDULER_PROCESS = Path(__file__).with_name("schedule_process.py")


async def on_test_clock(queue: Queue, at_ms: int) -> None:
    """Make ``queue``'s scripts read the time from its test clock, set to ``at_ms``."""
    queue._keys = queue._keys.with_test_clock()
    await set_clock(queue, at_ms)


async def set_clock(queue: Queue, at_ms: int) -> None:
    await queue.redis.set(queue._keys.keys[11], str(at_ms))


async def watermark(queue: Queue, name: str) -> int | None:
    raw = await queue.redis.hget(schedules_key(queue.name), name)
    return None if raw is None else int(raw)


async def queued_mids(queue: Queue) -> list[str]:
    return sorted(info.mid for info in await queue.content())


def slot_mid(name: str, slot_ms: int) -> str:
    from datetime import datetime, timezone

    return f"{name}@{datetime.fromtimestamp(slot_ms / 1000, timezone.utc):%Y-%m-%dT%H:%M:%SZ}"


async def test_a_new_schedule_starts_with_its_first_slot_after_its_first_pass(
    make_queue: QueueFactory,
) -> None:
    """The first pass only sets the watermark; the next slot is enqueued once, as new content, ready now."""
    queue = await make_queue()
    await on_test_clock(queue, START + 30_000)
    item = schedule(queue, "report", cron="* * * * *", content={"kind": "report"})
    assert await item.tick() == []
    assert await watermark(queue, "report") == START + 30_000
    assert await queued_mids(queue) == []
    await set_clock(queue, START + MINUTE + 5)
    enqueued = await item.tick()
    assert [item.mid(slot) for slot in enqueued] == [slot_mid("report", START + MINUTE)]
    assert await item.tick() == []  # covered: the same slot is not enqueued twice
    leased = await lease_one(queue)
    assert leased.mid == slot_mid("report", START + MINUTE)
    assert queue.serializer.loads(leased.payload) == {"kind": "report"}
    assert await watermark(queue, "report") == START + MINUTE


async def test_a_full_bounded_queue_refuses_a_slot_and_skips_it(
    make_queue: QueueFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A due slot on a queue at its max_size is refused as an enqueue would be, and skipped for
    good (never sent again in a loop); once there is room, the next slot is enqueued."""
    queue = await make_queue()
    await on_test_clock(queue, START + 30_000)
    await queue.configure(max_size=1)
    assert (await queue.enqueue("filler", mid="filler")).ok
    item = schedule(queue, "report", cron="* * * * *")
    assert await item.tick() == []
    await set_clock(queue, START + MINUTE + 5)
    with caplog.at_level("WARNING", logger="vermilion"):
        assert await item.tick() == []
    assert "is full" in caplog.text
    assert await watermark(queue, "report") == START + MINUTE  # covered: not tried again
    assert await queued_mids(queue) == ["filler"]
    assert (await queue.status()).nqueued == 1  # nothing written past the bound
    await lease_and_finish(queue, "filler")
    await set_clock(queue, START + 2 * MINUTE + 5)
    enqueued = await item.tick()
    assert [item.mid(slot) for slot in enqueued] == [slot_mid("report", START + 2 * MINUTE)]


async def lease_and_finish(queue: Queue, mid: str) -> None:
    leased = await lease_one(queue)
    assert leased.mid == mid
    client, keys = queue._protocol
    await client.ack(keys, [OutcomeRequest(leased.mid, leased.token, "s")], 0)


async def test_racing_schedulers_enqueue_each_slot_once_even_after_it_was_handled(
    make_queue: QueueFactory, queue_name: str
) -> None:
    """Eight schedulers on their own connections tick together at every step of the clock.

    Every slot is enqueued by exactly one of them; a slot whose message was
    handled (its mid forgotten) is not enqueued again by a scheduler that comes late.
    """
    queues = [await make_queue(queue_name) for _ in range(8)]
    for queue in queues:
        await on_test_clock(queue, START)
    items = [schedule(queue, "race", cron="* * * * *") for queue in queues]
    await asyncio.gather(*(item.tick() for item in items))
    enqueued: Counter[str] = Counter()
    for step in range(1, 7):
        await set_clock(queues[0], START + step * MINUTE + step)
        results = await asyncio.gather(*(item.tick() for item in items))
        enqueued.update(items[0].mid(slot) for slots in results for slot in slots)
        # Handle every message at once: its mid is forgotten, only the watermark remembers it.
        reply = await dequeue(queues[0], n=10)
        client, keys = queues[0]._protocol
        await client.ack(keys, [OutcomeRequest(m.mid, m.token, "s") for m in reply.messages], 0)
    late = await asyncio.gather(*(item.tick() for item in items))
    assert late == [[]] * 8
    assert enqueued == Counter(slot_mid("race", START + step * MINUTE) for step in range(1, 7))
    assert await queued_mids(queues[0]) == []


async def test_after_downtime_only_the_latest_missed_slots_are_enqueued(make_queue: QueueFactory) -> None:
    """catch_up=1 enqueues the latest missed slot, catch_up=3 the latest three; no others ever."""
    queue = await make_queue()
    await on_test_clock(queue, START)
    latest = schedule(queue, "latest", cron="* * * * *")
    three = schedule(queue, "three", cron="* * * * *", catch_up=3)
    await asyncio.gather(latest.tick(), three.tick())
    await set_clock(queue, START + 10 * MINUTE + 7)  # ten slots missed
    assert [latest.mid(s) for s in await latest.tick()] == [slot_mid("latest", START + 10 * MINUTE)]
    assert [three.mid(s) for s in await three.tick()] == [
        slot_mid("three", START + n * MINUTE) for n in (8, 9, 10)
    ]
    await set_clock(queue, START + 11 * MINUTE)
    assert [latest.mid(s) for s in await latest.tick()] == [slot_mid("latest", START + 11 * MINUTE)]
    assert len(await queued_mids(queue)) == 5


async def test_a_slot_whose_mid_the_queue_knows_is_not_enqueued_but_covered(make_queue: QueueFactory) -> None:
    """Enqueued by hand first (the same mid): the schedule adds nothing, and moves past the slot."""
    queue = await make_queue()
    await on_test_clock(queue, START)
    item = schedule(queue, "known", cron="* * * * *", content="scheduled")
    await item.tick()
    await queue.enqueue("by hand", mid=slot_mid("known", START + MINUTE))
    await set_clock(queue, START + MINUTE)
    assert await item.tick() == []
    assert await watermark(queue, "known") == START + MINUTE
    (info,) = await queue.content()
    assert info.content == "by hand"


async def test_the_script_refuses_slots_not_due_and_covered_and_bad_arguments(
    make_queue: QueueFactory,
) -> None:
    """Per slot -1 when not due or covered; bad arguments and a wrong-typed key fail before any write."""
    queue = await make_queue()
    await on_test_clock(queue, START)
    client, keys = queue._protocol
    from vermilion._schedule_calls import tick

    first = await tick(client, keys, "s", b"p", [(START - MINUTE, "s@old"), (START + MINUTE, "s@future")])
    assert (first.now_ms, first.watermark_ms, first.results) == (START, START, (-1, -1))
    assert await queued_mids(queue) == []
    script_keys = (*keys.keys[:11], schedules_key(queue.name), keys.keys[11])
    for argv, message in [
        (["s", "p", str(START), "a", str(START), "b"], "strictly ascending"),
        (["", "p"], "empty name"),
        (["s", "p", str(START)], "expects name, payload, then"),
        (["s", "p", "-1", "a"], "slot_ms"),
        (["s", "p", str(START), ""], "a mid must have 1 to 254 bytes"),
    ]:
        with pytest.raises(Exception, match=message):
            await queue.redis.eval(SCRIPTS["schedule"].source.decode(), len(script_keys), *script_keys, *argv)
    await queue.redis.hset(schedules_key(queue.name), "s", "soon")
    with pytest.raises(Exception, match="the watermark soon is not a whole number"):
        await queue.redis.eval(SCRIPTS["schedule"].source.decode(), len(script_keys), *script_keys, "s", "p")
    await queue.redis.delete(schedules_key(queue.name))
    await queue.redis.set(schedules_key(queue.name), "not a hash")
    with pytest.raises(ScriptError):
        await tick(client, keys, "s", b"p", [])
    await queue.redis.delete(schedules_key(queue.name))
    await queue.redis.set(keys.key("ready"), "not a list")
    with pytest.raises(ScriptError, match="holds a string, not a list"):
        await tick(client, keys, "s", b"p", [])
    assert await watermark(queue, "s") is None
    await queue.redis.delete(keys.key("ready"))


async def test_the_watermark_is_no_queue_and_survives_clear(make_queue: QueueFactory, redis_url: str) -> None:
    """queue_names() ignores a queue that has only schedules; clear() keeps them (no slot comes twice)."""
    queue = await make_queue()
    item = schedule(queue, "kept", cron="0 3 * * *")
    await item.tick()
    before = await watermark(queue, "kept")
    assert before is not None
    async with aioredis.Redis.from_url(redis_url) as client:
        assert queue.name not in await queue_names(client)
    await queue.clear()
    assert await watermark(queue, "kept") == before
    await queue.redis.delete(schedules_key(queue.name))


# -- on the server's clock ------------------------------------------------------------


async def wait_for_mids(queue: Queue, count: int, timeout: float = 15.0) -> list[str]:
    async def enough() -> bool:
        return len(await queue.content()) >= count

    await eventually(enough, timeout, interval=0.05, what=f"{count} scheduled messages")
    return await queued_mids(queue)


def assert_consecutive_seconds(mids: list[str]) -> None:
    """Mids ``name@<second>``: no second twice, none missing between the first and the last."""
    from datetime import datetime

    seconds = [datetime.strptime(mid.split("@")[1], "%Y-%m-%dT%H:%M:%SZ") for mid in mids]
    assert len(set(seconds)) == len(seconds), mids
    span = int((max(seconds) - min(seconds)).total_seconds())
    assert span == len(seconds) - 1, mids


async def test_schedulers_running_together_enqueue_every_second_once(make_queue: QueueFactory) -> None:
    """Three run_schedules loops on the same every-second schedule: each second once, none skipped."""
    queue_name = (await make_queue()).name
    queues = [await make_queue(queue_name) for _ in range(3)]
    items = [schedule(queue, "tick", cron="* * * * * *") for queue in queues]
    tasks = [asyncio.create_task(run_schedules([item])) for item in items]
    try:
        mids = await wait_for_mids(queues[0], 3)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert_consecutive_seconds(await queued_mids(queues[0]))
    assert mids


async def test_a_worker_runs_its_schedules_and_stops_them(make_queue: QueueFactory) -> None:
    """AsyncWorker(schedules=...) enqueues each slot and handles it; stop() ends the schedules too."""
    queue = await make_queue()
    handled: list[str] = []

    async def handler(message: Message) -> None:
        handled.append(message.mid)

    item = schedule(queue, "beat", cron="* * * * * *", content={"n": 1})
    async with AsyncWorker(queue, handler, schedules=[item], monitor=None, presence_interval=None):

        async def two_handled() -> bool:
            return len(handled) >= 2

        await eventually(two_handled, 10, interval=0.05, what="two slots handled")
    stopped_at = await watermark(queue, "beat")
    await asyncio.sleep(1.2)  # a slot passes: nobody enqueues it
    assert await watermark(queue, "beat") == stopped_at
    assert all(mid.startswith("beat@") for mid in handled)
    with pytest.raises(TypeError, match="wrap the schedule in a list"):
        AsyncWorker(queue, handler, schedules=item)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two schedules named 'beat' on queue"):
        AsyncWorker(queue, handler, schedules=[item, schedule(queue, "beat", cron="0 * * * *")])
    with pytest.raises(TypeError, match="must hold Schedule objects, not str"):
        AsyncWorker(queue, handler, schedules=["beat"])  # type: ignore[list-item]


async def test_a_scheduler_waiting_for_a_far_slot_sends_nothing(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An hourly schedule: after its first pass it sleeps (the idle cost target is 0.5 commands/s).

    The scheduler's own calls are counted, not the server's: other clients of a
    shared Redis must not make this test fail.
    """
    queue = await make_queue()
    item = schedule(queue, "hourly", cron="0 * * * *")
    calls = 0

    async def counted_tick(*args: Any, **kwargs: Any) -> TickReply:
        nonlocal calls
        calls += 1
        return await tick(*args, **kwargs)

    monkeypatch.setattr(_schedules, "tick", counted_tick)
    task = asyncio.create_task(run_schedules([item]))

    async def started() -> bool:
        return await watermark(queue, "hourly") is not None

    try:
        await eventually(started, 5, interval=0.02, what="the schedule's first pass")
        before = calls
        await asyncio.sleep(3.0)
        after = calls
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Nothing, or the one call of an hour that began meanwhile.
    assert after - before <= 1


async def test_a_scheduler_killed_mid_run_loses_no_slot_and_doubles_none(
    make_queue: QueueFactory, redis_url: str
) -> None:
    """A scheduler process SIGKILLed while another runs beside it: every second once, before and after."""
    queue = await make_queue()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCHEDULER_PROCESS),
        redis_url,
        queue.name,
        stdout=asyncio.subprocess.PIPE,  # it flushes its one line itself
    )
    assert process.stdout is not None
    try:
        assert await read_line(process.stdout) == "ready"
        await wait_for_mids(queue, 2)
        survivor = asyncio.create_task(run_schedules([schedule(queue, "crash", cron="* * * * * *")]))
        await wait_for_mids(queue, 3)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        count = len(await queue.content())
        await wait_for_mids(queue, count + 2)
        survivor.cancel()
        await asyncio.gather(survivor, return_exceptions=True)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert_consecutive_seconds(await queued_mids(queue))


async def test_the_scheduler_command_runs_until_a_signal(make_queue: QueueFactory, redis_url: str) -> None:
    """`vermilion scheduler QUEUE NAME --cron ... --content JSON` enqueues each slot; SIGINT: exit code 0."""
    queue = await make_queue()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vermilion",
        "scheduler",
        queue.name,
        "cli",
        "--cron",
        "* * * * * *",
        "--content",
        '{"from": "cli"}',
        "--url",
        redis_url,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_for_mids(queue, 2)
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert "scheduling 'cli' on queue" in log and "enqueued slot cli@" in log
    infos = await queue.content()
    assert {info.content["from"] for info in infos} == {"cli"}
    assert_consecutive_seconds(await queued_mids(queue))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "0 3 * *"], "vermilion: cron '0 3 * *' is not a valid cron expression"),
        (["--cron", "* * * * *", "--tz", "Mars/Olympus"], "tz 'Mars/Olympus' is not a known time zone"),
        (["--cron", "* * * * *", "--content", "{"], "JSON"),
        (["--cron", "* * * * *", "--catch-up", "0"], "--catch-up"),
    ],
)
async def test_the_scheduler_command_refuses_bad_input(redis_url: str, args: list[str], message: str) -> None:
    run = await vermilion("scheduler", "q", "n", *args, url=redis_url)
    assert run.returncode == 2
    assert message in run.stderr


async def test_run_schedules_refuses_a_schedule_given_alone(queue: Queue) -> None:
    """A Schedule outside a list is refused; no schedules at all return at once."""
    await asyncio.wait_for(run_schedules([]), 1)
    item = Schedule(queue, "alone", cron="* * * * *")
    with pytest.raises(TypeError, match="wrap the schedule in a list"):
        await run_schedules(item)  # type: ignore[arg-type]


async def test_a_queue_vermilion_cannot_use_stops_the_schedules(make_queue: QueueFactory) -> None:
    """Data of protocol version 1 in the queue: run_schedules raises the ConfigurationError."""
    queue = await make_queue()
    v1_key = f"vermilion:{{{queue.name}}}:messages"
    await queue.redis.hset(v1_key, "m", "x")
    try:
        with pytest.raises(ConfigurationError, match="vermilion migrate"):
            await asyncio.wait_for(run_schedules([schedule(queue, "old", cron="* * * * *")]), 10)
    finally:
        await queue.redis.delete(v1_key)
