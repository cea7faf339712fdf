"""Schedulers under faults: a lost reply, and a scheduler killed with its call in flight.

Either way each slot is enqueued exactly once: the watermark the schedule
script moves with each enqueue covers the slot for every later call, the
re-sent one and the other schedulers' alike.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from tests.integration.test_schedules import (
    SCHEDULER_PROCESS,
    START,
    assert_consecutive_seconds,
    on_test_clock,
    queued_mids,
    set_clock,
    slot_mid,
    wait_for_mids,
    watermark,
)
from tests.integration.test_worker_process import read_line
from tests.reliability.conftest import ServerFactory
from tests.reliability.harness import audit
from tests.reliability.proxy import FaultProxy
from tests.reliability.test_redis_faults import count_script_runs, load_scripts, log_every_command
from vermilion import Queue, run_schedules, schedule
from vermilion._scripts import SCRIPTS

ProxyFactory = Callable[[int], Awaitable[FaultProxy]]
MINUTE = 60_000


async def test_a_lost_reply_of_a_schedule_call_is_sent_again_and_enqueues_once(
    fault_server: ServerFactory, fault_proxy: ProxyFactory
) -> None:
    """The reply of the call that enqueued a slot is lost: the re-send finds the slot covered.

    The script ran twice (the call is safe to repeat), the slot's message
    exists once, and the pass reports nothing enqueued: its caller cannot
    tell, and need not.
    """
    name = f"sched-{uuid.uuid4().hex[:8]}"
    server = fault_server("redis")
    direct = server.client()
    await load_scripts(direct)
    await log_every_command(direct)
    proxy = await fault_proxy(server.port)
    async with Queue(name, proxy.url) as queue:
        await on_test_clock(queue, START)
        item = schedule(queue, "lost", cron="* * * * *")
        await item.tick()
        await set_clock(queue, START + MINUTE)
        await direct.slowlog_reset()
        proxy.set_mode("drop_next_reply", match=SCRIPTS["schedule"].sha)
        dropped = proxy.dropped
        await item.tick()  # the first call of the pass reads the watermark: its reply is lost
        assert proxy.dropped == dropped + 1
        assert (await count_script_runs(direct)).get("schedule") == 3  # lost, re-sent, then the slot
        assert await queued_mids(queue) == [slot_mid("lost", START + MINUTE)]
        proxy.set_mode("drop_next_reply", match=b"lost@")  # now the call that enqueues a slot
        await set_clock(queue, START + 2 * MINUTE)
        assert await item.tick() == []  # its re-send found the slot covered
        assert await queued_mids(queue) == [slot_mid("lost", s) for s in (START + MINUTE, START + 2 * MINUTE)]
        assert await watermark(queue, "lost") == START + 2 * MINUTE
        await direct.delete(queue._keys.keys[11])  # the test clock, no key of the queue
        assert await audit(direct, name) == []
    await direct.aclose()


async def test_a_scheduler_killed_with_its_call_in_flight_loses_and_doubles_no_slot(
    fault_server: ServerFactory, fault_proxy: ProxyFactory
) -> None:
    """A scheduler process whose calls go through a slow proxy is SIGKILLed while one is held.

    Its call may still reach the server after it died; another scheduler runs
    the same every-second schedule all along. Every second is enqueued once.
    """
    server = fault_server("redis")
    proxy = await fault_proxy(server.port)
    direct = server.client()
    name = f"sched-{uuid.uuid4().hex[:8]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SCHEDULER_PROCESS), proxy.url, name, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    async with Queue(name, server.url) as queue:
        survivor: asyncio.Task[None] | None = None
        try:
            assert await read_line(process.stdout) == "ready"
            await wait_for_mids(queue, 2)
            survivor = asyncio.create_task(run_schedules([schedule(queue, "crash", cron="* * * * * *")]))
            proxy.set_mode("delay", 0.6)
            # Just after a slot: the process has sent its call, which the proxy holds.
            await asyncio.sleep(1.15 - time.time() % 1.0)
            process.send_signal(signal.SIGKILL)
            await process.wait()
            count = len(await queue.content())
            await wait_for_mids(queue, count + 3)
        finally:
            if survivor is not None:
                survivor.cancel()
                await asyncio.gather(survivor, return_exceptions=True)
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert_consecutive_seconds(await queued_mids(queue))
        assert await audit(direct, name) == []
    await direct.aclose()


async def test_a_scheduler_cut_off_from_redis_keeps_trying_and_catches_up(
    fault_server: ServerFactory, fault_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis unreachable for about three slots: warnings, capped retries, then the missed slots.

    With catch_up=10 every missed second is enqueued when Redis answers again.
    """
    name = f"sched-{uuid.uuid4().hex[:8]}"
    server = fault_server("redis")
    proxy = await fault_proxy(server.port)
    async with Queue(name, server.url) as watcher, Queue(name, proxy.url) as queue:
        task = asyncio.create_task(run_schedules([schedule(queue, "cut", cron="* * * * * *", catch_up=10)]))
        try:
            await wait_for_mids(watcher, 2)
            proxy.set_mode("reset")
            count = len(await watcher.content())
            await asyncio.sleep(3.0)  # the outage: slots pass with nobody to enqueue them
            assert len(await watcher.content()) <= count + 1  # at most the call in flight at the cut
            proxy.set_mode("pass")
            await wait_for_mids(watcher, count + 4)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert_consecutive_seconds(await queued_mids(watcher))
    assert any("schedule 'cut'" in r.message and "trying again" in r.message for r in caplog.records)
