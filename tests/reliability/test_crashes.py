"""T1, T2, T4, T5, T16: killed, paused, clock-skewed and poisoned workers (plan §5, crashes and leases).

Every worker is a worker_proc.py subprocess writing each start and end of a
handling to the test's ground-truth log; the tests follow that log as it
grows (TruthWatcher) to time redeliveries, and audit the queue's keys.

T1  kills random worker processes under load and respawns them.
T2  makes a worker process kill itself at each step of the protocol.
T4  pauses the holder of a lease past its end (Kleppmann's timeline).
T5  runs workers whose wall clocks are 120 s fast and 120 s slow.
T16 feeds the workers a message that kills every process handling it.

Sizes: CI by default, the full size with VERMILION_CHAOS=full. Set
VERMILION_RELIABILITY_RESULTS to a directory to get each run's figures as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.reliability.conftest import ServerFactory, WorkerFactory
from tests.reliability.harness import Truth, WorkerProcess, audit, eventually, locks_key, record
from tests.reliability.servers import KINDS, chaos_size
from vermilion import MessageStatus, Queue


class TruthWatcher:
    """Follows the ground-truth log as the workers append to it.

    Each line gets the test's ``time.monotonic()`` of the poll that first read
    it, so an interval measured from an earlier event of the test is at most
    one poll interval too long, never too short.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.starts: dict[tuple[str, int], tuple[int, float]] = {}  # (mid, attempt) -> (pid, seen)
        self.latest: dict[str, tuple[int, int]] = {}  # mid -> (attempt, pid) of its latest start
        self.finished: dict[str, float] = {}  # mid -> when its first final (non-Retry) end showed
        self.extras: dict[tuple[str, int], list[str]] = {}  # (mid, attempt) -> start fields after the pid
        self.clocks: dict[int, float] = {}  # pid -> the wall clock it logged at start (clock_skew)

    def poll(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.lseek(fd, self._offset, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        self._offset += len(data)
        now = time.monotonic()
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # a line being written, or b""
        for line in lines:
            parts = line.decode().split()
            if parts[0] == "start":
                mid, attempt, pid = parts[1], int(parts[2]), int(parts[3])
                self.starts.setdefault((mid, attempt), (pid, now))
                self.extras[(mid, attempt)] = parts[4:]
                if attempt >= self.latest.get(mid, (0, 0))[0]:
                    self.latest[mid] = (attempt, pid)
            elif parts[0] == "end" and parts[3] != "Retry":
                self.finished.setdefault(parts[1], now)
            elif parts[0] == "clock":
                self.clocks[int(parts[2])] = float(parts[1])

    @contextlib.asynccontextmanager
    async def following(self, interval: float = 0.02) -> AsyncIterator[TruthWatcher]:
        """Poll the log every ``interval`` seconds while the block runs."""

        async def follow() -> None:
            while True:
                self.poll()
                await asyncio.sleep(interval)

        task = asyncio.create_task(follow())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.poll()


def texts(values: Any) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values]


async def redis_ms(client: aioredis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def start_workers(factory: WorkerFactory, count: int, **config: Any) -> list[WorkerProcess]:
    """Start ``count`` worker processes at once, without blocking the event loop."""
    return list(await asyncio.gather(*[asyncio.to_thread(factory, **config) for _ in range(count)]))


async def stop_workers(workers: list[WorkerProcess]) -> None:
    await asyncio.gather(*[asyncio.to_thread(worker.stop, 15) for worker in workers])


def read_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = json.loads(path.read_text())
    return counts


# -- T1: crash storm -----------------------------------------------------------------------------

T1_MESSAGES = chaos_size(2_000, 10_000)
T1_KILLS = chaos_size(5, 20)
T1_WORKERS = 4
T1_CONCURRENCY = 8
T1_LEASE = 2.0
T1_IDLE = 0.1
T1_REDELIVERY_MAX = T1_LEASE + T1_IDLE + 1.0


@dataclass
class Kill:
    at: float  # time.monotonic() right after the SIGKILL was reaped
    pid: int
    held: dict[str, int]  # mid -> attempt: started by the victim, still leased at the kill


@pytest.mark.parametrize("kind", KINDS)
async def test_t1_crash_storm(
    kind: str, fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path
) -> None:
    """T1: SIGKILL random workers under load and respawn them: 0 lost, 0 stranded, bounded duplicates.

    At least 2,000 [10,000 full] messages (a backlog kept while the storm lasts)
    through 4 worker processes x concurrency 8,
    handlers of U(5, 50) ms, lease 2 s; 5 [20] kills, one every U(0.2, 1.5) s.
    """
    server = fault_server(kind)
    name = f"t1-{kind}-{uuid.uuid4().hex[:8]}"
    common: dict[str, Any] = {
        "url": server.url,
        "queue": name,
        "concurrency": T1_CONCURRENCY,
        "lock_timeout": T1_LEASE,
        "idle_backoff": T1_IDLE,
        "sleep_min": 0.005,
        "sleep_max": 0.05,
    }
    workers = await start_workers(worker_process, T1_WORKERS, **common)
    client = server.client()
    watcher = TruthWatcher(truth_log)
    mids: list[str] = []
    kills: list[Kill] = []
    stranded: list[str] = []
    audit_problems: list[str] = []
    rng = random.Random()

    async with Queue(name, redis=client) as queue, watcher.following():
        storm_over = asyncio.Event()

        async def produce() -> None:
            # Keeps a backlog of two polls' worth while the storm lasts, so that
            # every kill finds its victim busy: at least T1_MESSAGES in all.
            backlog = 2 * T1_WORKERS * T1_CONCURRENCY
            while len(mids) < T1_MESSAGES or not storm_over.is_set():
                if (await queue.status()).nqueued >= backlog:
                    await asyncio.sleep(0.01)
                    continue
                chunk = [f"m{len(mids) + i:06d}" for i in range(backlog)]
                results = await queue.enqueue_many([{"kind": "work"}] * len(chunk), mids=chunk)
                assert all(result.ok for result in results)
                mids.extend(chunk)

        async def watch_leases() -> None:
            # Stranded: leased, and the lease ended more than idle_backoff + 1 s ago.
            checks = 0
            while True:
                limit = await redis_ms(client) - int((T1_IDLE + 1.0) * 1000)
                late = await client.zrangebyscore(locks_key(name), "-inf", limit)
                stranded.extend(texts(late))
                if checks % 4 == 0:
                    audit_problems.extend(await audit(client, name, atomic=True))
                checks += 1
                await asyncio.sleep(0.25)

        async def respawn(index: int) -> None:
            workers[index] = await asyncio.to_thread(worker_process, **common)

        started = time.monotonic()
        producer = asyncio.create_task(produce())
        sampler = asyncio.create_task(watch_leases())
        respawns: list[asyncio.Task[None]] = []
        try:
            for _ in range(T1_KILLS):
                await asyncio.sleep(rng.uniform(0.2, 1.5))  # the fault schedule of the plan
                alive = [index for index, worker in enumerate(workers) if worker.alive()]
                index = rng.choice(alive)  # never one still being respawned
                victim = workers[index]
                victim.kill()
                at = time.monotonic()
                watcher.poll()  # the dead process writes no more: its lines are all in
                locked = set(texts(await client.zrange(locks_key(name), 0, -1)))
                held = {
                    mid: attempt
                    for mid, (attempt, pid) in watcher.latest.items()
                    if pid == victim.pid and mid in locked
                }
                kills.append(Kill(at, victim.pid, held))
                respawns.append(asyncio.create_task(respawn(index)))
            storm_over.set()
            await asyncio.gather(producer, *respawns)

            async def drained() -> bool:
                if len(watcher.finished) < len(mids):
                    return False
                status = await queue.status()
                return status.nqueued + status.nlocked + status.nbackoff == 0

            await eventually(drained, chaos_size(60, 180), "every message handled and the queue empty")
            run_seconds = time.monotonic() - started
        finally:
            for task in (producer, sampler, *respawns):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(producer, sampler, *respawns, return_exceptions=True)
        final_audit = await audit(client, name)
    await client.aclose()

    truth = Truth.read(truth_log)
    killed = {kill.pid for kill in kills}
    lost = [mid for mid in mids if mid not in truth.handled()]
    duplicates = truth.duplicates()
    in_flight = [len(kill.held) for kill in kills]
    held_anywhere = {mid for kill in kills for mid in kill.held}
    redelivery: list[float] = []  # seconds per hand-out, from the kill to the next start
    caught_again = 0
    acked_at_kill: list[str] = []
    for kill in kills:
        for mid, attempt in kill.held.items():
            # The next handling (attempt + 1, or later if a kill caught that hand-out before its start).
            later = [a for a, _ in truth.starts[mid] if a > attempt]
            again = watcher.starts[(mid, min(later))] if later else None
            if again is None:
                # The victim's ack reached Redis after the locks were read: handled once.
                assert (attempt, kill.pid, "NoneType") in truth.ends[mid], (
                    f"{mid} neither acked nor redelivered"
                )
                acked_at_kill.append(mid)
            else:
                # Each hand-out a later kill caught before its start costs one more lease.
                hops = min(later) - attempt
                redelivery.append((again[1] - kill.at) / hops)
                caught_again += hops > 1
    bad_duplicates = []
    for mid in duplicates:
        ends = sorted(truth.ends[mid])
        if ends[-1][0] < 2 or any(pid not in killed for _, pid, _ in ends[:-1]) or mid not in held_anywhere:
            bad_duplicates.append((mid, ends))

    figures = {
        "server": kind,
        "messages": len(mids),
        "kills": len(kills),
        "in_flight_at_kills": in_flight,
        "lost": len(lost),
        "stranded": sorted(set(stranded)),
        "duplicates": sum(duplicates.values()),
        "duplicates_max": sum(in_flight),
        "acked_while_killed": len(acked_at_kill),
        "redelivery_max_s": round(max(redelivery, default=0.0), 3),
        "redelivery_median_s": round(statistics.median(redelivery), 3) if redelivery else None,
        "redelivery_bound_s": T1_REDELIVERY_MAX,
        "redelivered_after_a_caught_hand_out": caught_again,
        "run_s": round(run_seconds, 2),
    }
    record(f"t1-{kind}", figures)
    print(f"T1 {kind}: {figures}")  # noqa: T201 - the figures for the docs

    assert lost == []
    assert stranded == []
    assert audit_problems == [] and final_audit == []
    assert bad_duplicates == [], "a duplicate that no kill explains"
    assert sum(duplicates.values()) <= sum(in_flight)
    assert sum(duplicates.values()) <= T1_KILLS * T1_CONCURRENCY
    assert sum(in_flight) > 0, "the kills hit no work: the storm proved nothing"
    assert max(redelivery, default=0.0) <= T1_REDELIVERY_MAX


# -- T2: crash at each protocol step -------------------------------------------------------------

T2_LEASE = 2.0
T2_IDLE = 0.05
T2_REDELIVERY_MAX = T2_LEASE + T2_IDLE + 1.0


@pytest.mark.parametrize("step", ["after_dequeue", "in_handler", "before_ack", "after_ack"])
async def test_t2_crash_at_each_protocol_step(
    step: str, fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path
) -> None:
    """T2: a worker SIGKILLs itself at one step; unless its ack was applied, the message is handled again."""
    server = fault_server("redis")
    name = f"t2-{uuid.uuid4().hex[:8]}"
    common: dict[str, Any] = {
        "url": server.url,
        "queue": name,
        "concurrency": 1,
        "lock_timeout": T2_LEASE,
        "idle_backoff": T2_IDLE,
    }
    dying, survivor = await asyncio.gather(
        asyncio.to_thread(worker_process, **common, die_at=step),
        asyncio.to_thread(worker_process, **common),
    )
    survivor.pause()  # so that the dying worker takes the message; resumed once it is dead
    client = server.client()
    async with Queue(name, redis=client) as queue:
        await queue.enqueue({"kind": "once"}, mid="once")

        async def dead() -> bool:
            return not dying.alive()

        await eventually(dead, 15, f"the worker killed itself {step}")
        died_at = time.monotonic()
        status_at_death = await queue.message_status("once")
        attempts_at_death = [info.attempts for info in await queue.content()]
        survivor.resume()
        if step == "after_ack":
            # The longest a redelivery could take; there must be none.
            await asyncio.sleep(T2_REDELIVERY_MAX + 0.5)
            redelivered_after = None
        else:

            async def redelivered() -> bool:
                return any(attempt == 2 for attempt, _ in Truth.read(truth_log).starts["once"])

            await eventually(redelivered, T2_REDELIVERY_MAX + 10, "redelivery")
            redelivered_after = time.monotonic() - died_at

            async def gone() -> bool:
                return await queue.message_status("once") is None

            await eventually(gone, 10, "the second handling was acknowledged")
        final_status = await queue.message_status("once")
        problems = await audit(client, name)
    await client.aclose()

    truth = Truth.read(truth_log)
    a, b = dying.pid, survivor.pid
    expected_starts, expected_ends = {
        "after_dequeue": ([(2, b)], [(2, b, "NoneType")]),
        "in_handler": ([(1, a), (2, b)], [(2, b, "NoneType")]),
        "before_ack": ([(1, a), (2, b)], [(1, a, "NoneType"), (2, b, "NoneType")]),
        "after_ack": ([(1, a)], [(1, a, "NoneType")]),
    }[step]
    record(
        f"t2-{step}",
        {
            "step": step,
            "status_at_death": status_at_death,
            "redelivered_after_s": None if redelivered_after is None else round(redelivered_after, 3),
            "bound_s": T2_REDELIVERY_MAX,
            "starts": truth.starts["once"],
        },
    )
    assert dying.process is not None and dying.process.returncode == -9  # killed by its own hook
    assert truth.starts["once"] == expected_starts
    assert truth.ends["once"] == expected_ends
    if step == "after_ack":
        assert status_at_death is None and attempts_at_death == []
    else:
        assert status_at_death == MessageStatus.LOCKED and attempts_at_death == [1]
        assert redelivered_after is not None and redelivered_after <= T2_REDELIVERY_MAX
    assert final_status is None
    assert problems == []


# -- T4: paused holder, fenced late ack ----------------------------------------------------------

T4_LEASE = 1.0
T4_PAUSE = 3.0


async def test_t4_paused_holder_late_ack_is_fenced(
    fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path, tmp_path: Path
) -> None:
    """T4: A is paused past its lease, B takes over (attempt 2); A's late ack is stale and changes nothing."""
    server = fault_server("redis")
    name = f"t4-{uuid.uuid4().hex[:8]}"
    common: dict[str, Any] = {
        "url": server.url,
        "queue": name,
        "concurrency": 1,
        "lock_timeout": T4_LEASE,
        "idle_backoff": 0.05,
    }
    gate = tmp_path / "release-b"
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a_stats, b_stats = tmp_path / "a.json", tmp_path / "b.json"
    a = worker_process(**common, sleep_min=1.0, sleep_max=1.0, log_file=str(a_log), stats_file=str(a_stats))
    client = server.client()
    async with Queue(name, redis=client) as queue:
        await queue.enqueue({"kind": "paused"}, mid="paused")

        async def a_started() -> bool:
            return bool(Truth.read(truth_log).starts["paused"])

        await eventually(a_started, 10, "A started the handler")
        a.pause()
        paused_at = time.monotonic()
        b = await asyncio.to_thread(
            worker_process, **common, hold_until=str(gate), log_file=str(b_log), stats_file=str(b_stats)
        )

        async def b_holds() -> bool:
            return (2, b.pid) in Truth.read(truth_log).starts["paused"]

        await eventually(b_holds, 10, "B took the message over")
        took_over_after = time.monotonic() - paused_at
        await asyncio.sleep(max(0.0, T4_PAUSE - (time.monotonic() - paused_at)))  # the pause of the plan
        a.resume()

        def stale_lines() -> list[str]:
            lines = a_log.read_text().splitlines() if a_log.exists() else []
            return [line for line in lines if "was not applied" in line]

        async def a_acked() -> bool:
            return bool(stale_lines())

        await eventually(a_acked, 10, "A acknowledged its late outcome")
        status_after_a = await queue.message_status("paused")
        infos_after_a = [(info.mid, info.status, info.attempts) for info in await queue.content()]
        problems_after_a = await audit(client, name)
        gate.touch()

        async def gone() -> bool:
            return await queue.message_status("paused") is None

        await eventually(gone, 10, "B's success removed the message")
        problems = await audit(client, name)
    await client.aclose()
    await stop_workers([a, b])

    truth = Truth.read(truth_log)
    a_counts, b_counts = read_counts(a_stats), read_counts(b_stats)
    record(
        "t4",
        {
            "took_over_after_s": round(took_over_after, 3),
            "status_after_a_ack": status_after_a,
            "content_after_a_ack": infos_after_a,
            "a_counts": a_counts,
            "b_counts": b_counts,
        },
    )
    assert status_after_a == MessageStatus.LOCKED
    assert infos_after_a == [("paused", MessageStatus.LOCKED, 2)]
    assert problems_after_a == [] and problems == []
    assert truth.starts["paused"] == [(1, a.pid), (2, b.pid)]  # the documented duplicate
    assert truth.ends["paused"] == [(1, a.pid, "NoneType"), (2, b.pid, "NoneType")]
    assert a_counts.get("ack/stale") == 1 and a_counts.get("handler/success") == 1
    assert len(stale_lines()) == 1  # logged once
    assert b_counts.get("ack/stale", 0) == 0 and b_counts.get("handler/success") == 1
    assert b_counts.get("lease/reclaimed") == 1


# -- T5: clock skew ------------------------------------------------------------------------------

T5_MESSAGES = chaos_size(500, 2_000)
T5_DELAYED_EVERY = 10  # 50 [200] delayed messages
T5_DELAY = 2.0
T5_IDLE = 0.05
T5_LATE_SLACK = 0.1  # the plan's figure, held by 95 % of the delayed messages
T5_LATE_CAP = 0.5  # held by all: a stall of this shared machine is no clock error (those are 120 s)
T5_SKEWS = (0.0, 120.0, -120.0)


async def test_t5_skewed_worker_clocks_change_nothing(
    fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path, tmp_path: Path
) -> None:
    """T5: workers 120 s fast and 120 s slow: every message attempt 1, 0 duplicates, delays on time."""
    server = fault_server("redis")
    name = f"t5-{uuid.uuid4().hex[:8]}"
    common: dict[str, Any] = {
        "url": server.url,
        "queue": name,
        "concurrency": 8,
        "lock_timeout": 10.0,
        "idle_backoff": T5_IDLE,
        "sleep_min": 0.05,
        "sleep_max": 0.05,
        "log_age": True,
    }
    stats = [tmp_path / f"w{i}.json" for i in range(len(T5_SKEWS))]
    before = time.time()
    workers = list(
        await asyncio.gather(
            *[
                asyncio.to_thread(worker_process, **common, clock_skew=skew, stats_file=str(path))
                for skew, path in zip(T5_SKEWS, stats, strict=True)
            ]
        )
    )
    after = time.time()
    client = server.client()
    watcher = TruthWatcher(truth_log)
    mids = [f"m{i:05d}" for i in range(T5_MESSAGES)]
    delayed = {mid for i, mid in enumerate(mids) if i % T5_DELAYED_EVERY == T5_DELAYED_EVERY - 1}
    async with Queue(name, redis=client) as queue, watcher.following():
        for first in range(0, T5_MESSAGES, T5_DELAYED_EVERY):
            now, later = mids[first : first + T5_DELAYED_EVERY - 1], mids[first + T5_DELAYED_EVERY - 1]
            results = await queue.enqueue_many([{"kind": "work"}] * len(now), mids=now)
            results.append(await queue.enqueue({"kind": "later"}, mid=later, delay=T5_DELAY))
            assert all(result.ok for result in results)
            await asyncio.sleep(0.05)  # ~200 messages/s, well within the workers' capacity

        async def drained() -> bool:
            return len(watcher.finished) == len(mids) and (await queue.status()).ntotal == 0

        await eventually(drained, 60, "every message handled")
        problems = await audit(client, name)
    await client.aclose()
    await stop_workers(workers)

    truth = Truth.read(truth_log)
    # Each worker's clock at its start, less the real time then (between before and after).
    clock_offsets = {
        skew: (round(watcher.clocks[worker.pid] - after, 1), round(watcher.clocks[worker.pid] - before, 1))
        for skew, worker in zip(T5_SKEWS, workers, strict=True)
    }
    attempts = sorted({attempt for starts in truth.starts.values() for attempt, _ in starts})
    starts_per_mid = sorted({len(starts) for starts in truth.starts.values()})
    delayed_ages = sorted(int(watcher.extras[(mid, 1)][0]) / 1000 for mid in delayed)
    p95 = delayed_ages[math.ceil(0.95 * len(delayed_ages)) - 1]
    by_worker = {
        skew: sum(1 for starts in truth.starts.values() if starts[0][1] == worker.pid)
        for skew, worker in zip(T5_SKEWS, workers, strict=True)
    }
    delayed_by_worker = {
        skew: sum(1 for mid in delayed if truth.starts[mid][0][1] == worker.pid)
        for skew, worker in zip(T5_SKEWS, workers, strict=True)
    }
    counts = [read_counts(path) for path in stats]
    reclaimed = sum(count.get("lease/reclaimed", 0) for count in counts)
    figures = {
        "messages": len(mids),
        "delayed": len(delayed),
        "clock_offsets_s": clock_offsets,
        "attempts_seen": attempts,
        "duplicates": sum(truth.duplicates().values()),
        "reclaimed": reclaimed,
        "handled_by_skew": by_worker,
        "delayed_by_skew": delayed_by_worker,
        "delayed_age_min_s": delayed_ages[0],
        "delayed_age_median_s": statistics.median(delayed_ages),
        "delayed_age_p95_s": p95,
        "delayed_age_max_s": delayed_ages[-1],
        "delayed_age_bounds_s": [
            T5_DELAY,
            T5_DELAY + T5_IDLE + T5_LATE_SLACK,
            T5_DELAY + T5_IDLE + T5_LATE_CAP,
        ],
    }
    record("t5", figures)
    print(f"T5: {figures}")  # noqa: T201 - the figures for the docs

    for skew, (low, high) in clock_offsets.items():  # the skew was in effect
        assert low - 0.5 <= skew <= high + 0.5, clock_offsets
    assert set(truth.handled()) == set(mids)
    assert attempts == [1] and starts_per_mid == [1]  # no premature reclaim
    assert truth.duplicates() == {} and reclaimed == 0
    assert all(by_worker.values()), "a worker handled nothing: its clock was not tested"
    assert delayed_ages[0] >= T5_DELAY
    assert p95 <= T5_DELAY + T5_IDLE + T5_LATE_SLACK
    assert delayed_ages[-1] <= T5_DELAY + T5_IDLE + T5_LATE_CAP
    assert problems == []


# -- T16: poison message -------------------------------------------------------------------------

T16_MESSAGES = chaos_size(200, 1_000)
T16_WORKERS = 3
T16_LEASE = 2.0
T16_MAX_ATTEMPTS = 3


async def test_t16_poison_message_is_failed_after_max_attempts(
    fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path, tmp_path: Path
) -> None:
    """T16: a message that kills its worker is handed out 3 times, then failed; the rest finish on time."""
    server = fault_server("redis")
    client = server.client()
    watcher = TruthWatcher(truth_log)
    common: dict[str, Any] = {
        "url": server.url,
        "concurrency": 4,
        "lock_timeout": T16_LEASE,
        "idle_backoff": 0.1,
        "sleep_min": 0.005,
        "sleep_max": 0.05,
        "max_attempts": T16_MAX_ATTEMPTS,
        "outcomes": {"poison": "exit_at_once"},
    }

    # The no-fault time: the same messages, the same workers, no poison.
    baseline_name = f"t16-base-{uuid.uuid4().hex[:8]}"
    baseline_workers = await start_workers(worker_process, T16_WORKERS, **common, queue=baseline_name)
    baseline_mids = [f"b{i:05d}" for i in range(T16_MESSAGES)]
    async with Queue(baseline_name, redis=client) as queue, watcher.following():
        started = time.monotonic()
        assert all(
            r.ok for r in await queue.enqueue_many([{"kind": "work"}] * T16_MESSAGES, mids=baseline_mids)
        )

        async def baseline_done() -> bool:
            return all(mid in watcher.finished for mid in baseline_mids)

        await eventually(baseline_done, 60, "the no-fault run finished")
        no_fault = max(watcher.finished[mid] for mid in baseline_mids) - started
    await stop_workers(baseline_workers)

    name = f"t16-{uuid.uuid4().hex[:8]}"
    stats_files: list[Path] = []

    async def spawn() -> WorkerProcess:
        path = tmp_path / f"w{len(stats_files)}.json"
        stats_files.append(path)
        return await asyncio.to_thread(worker_process, **common, queue=name, stats_file=str(path))

    workers = [await spawn() for _ in range(T16_WORKERS)]
    deaths: list[tuple[int, int | None]] = []
    mids = [f"n{i:05d}" for i in range(T16_MESSAGES)]
    async with Queue(name, redis=client) as queue, watcher.following():

        async def supervise() -> None:
            while True:
                for index, worker in enumerate(workers):
                    if not worker.alive():
                        assert worker.process is not None
                        deaths.append((worker.pid, worker.process.returncode))
                        workers[index] = await spawn()
                await asyncio.sleep(0.05)

        supervisor = asyncio.create_task(supervise())
        try:
            started = time.monotonic()
            results = await queue.enqueue_many(
                # First in line: the first poll takes it with the next three.
                [{"kind": "poison"}] + [{"kind": "work"}] * T16_MESSAGES,
                mids=["poison", *mids],
            )
            assert all(result.ok for result in results)

            async def settled() -> bool:
                if await queue.message_status("poison") != MessageStatus.FAILED:
                    return False
                status = await queue.status()
                return status.nqueued + status.nlocked + status.nbackoff == 0

            await eventually(settled, no_fault + 4 * T16_LEASE + 60, "the poison failed, the queue empty")
            status = await queue.status()
            infos = {info.mid: info for info in await queue.content()}
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        problems = await audit(client, name)
    await client.aclose()
    await stop_workers(workers)

    truth = Truth.read(truth_log)
    counts = [read_counts(path) for path in stats_files if path.exists()]
    failed_without_handler = sum(count.get("message/max-attempts", 0) for count in counts)
    deadline = no_fault + 3 * T16_LEASE
    finish_times = sorted(watcher.finished.get(mid, math.inf) - started for mid in mids)
    on_time = sum(1 for seconds in finish_times if seconds <= deadline) / len(mids)
    poison_starts = truth.starts["poison"]
    never_handled = [mid for mid in mids if mid not in truth.handled()]
    # Normal messages the queue failed as poison ("handed out 4 times"), handled or not.
    failed_normal = sorted(mid for mid, info in infos.items() if mid != "poison")
    figures = {
        "messages": len(mids),
        "no_fault_s": round(no_fault, 2),
        "deadline_s": round(deadline, 2),
        "finished_on_time": on_time,
        "last_finish_s": round(finish_times[-1], 2) if finish_times[-1] < math.inf else None,
        "poison_handler_calls": poison_starts,
        "worker_deaths": deaths,
        "failed_without_handler": failed_without_handler,
        "poison_error": infos["poison"].error if "poison" in infos else None,
        "never_handled": never_handled,
        "normal_failed": {mid: (truth.starts[mid], infos[mid].error) for mid in failed_normal},
        "duplicates": sum(truth.duplicates().values()),
    }
    record("t16", figures)
    print(f"T16: {figures}")  # noqa: T201 - the figures for the docs

    assert [attempt for attempt, _ in poison_starts] == [1, 2, 3]
    assert len({pid for _, pid in poison_starts}) == 3 and truth.ends["poison"] == []
    assert sorted(pid for pid, _ in deaths) == sorted(pid for _, pid in poison_starts)
    assert all(code == 1 for _, code in deaths)  # each death was the poison's os._exit(1)
    assert infos["poison"].status == MessageStatus.FAILED
    assert "max_attempts" in (infos["poison"].error or "")
    # 0 normal messages lost: none unhandled, none failed as if it were the poison.
    assert never_handled == [], "normal messages never handled (failed with the poison)"
    assert failed_normal == [], "normal messages failed by max_attempts: they shared the poison's worker"
    assert failed_without_handler == 1
    assert status.nqueued + status.nlocked + status.nbackoff == 0 and status.nfailed == 1
    assert on_time >= 0.99
    assert problems == []
