"""T6-T11: faults of the Redis server and of the network (plan §5, Redis-side faults).

T6  kills redis-server (SIGKILL) mid-enqueue and mid-drain and restarts it on its data,
    with AOF (`appendfsync always`) and, as the control, without persistence.
T7  flushes the script cache every 500 ms under load.
T8  kills every client connection every 300 ms while a producer and two workers run.
T9  loses the reply of one call of each script (a FaultProxy between client and
    server), with vermilion's own client and one that keeps redis-py's default retry.
T10 stalls the server for 3 s: CLIENT PAUSE WRITE, DEBUG SLEEP, SIGSTOP.
T11 cuts one worker off from Redis (its own proxy, blackholed) for 3 s.

Workers are worker_proc.py subprocesses writing each start and end of a handling to
the test's ground-truth log. A worker behind a proxy talks to a proxy that runs in
the test's event loop: workers are started and stopped in threads, and nothing here
blocks the loop. Sizes: CI by default, the full size with VERMILION_CHAOS=full;
VERMILION_RELIABILITY_RESULTS names a directory for each run's figures as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.reliability.conftest import ServerFactory, WorkerFactory
from tests.reliability.harness import Truth, WorkerProcess, audit, eventually, locks_key, record
from tests.reliability.proxy import FaultProxy
from tests.reliability.servers import KINDS, FaultServer, chaos_seconds, chaos_size
from tests.reliability.test_crashes import (
    TruthWatcher,
    read_counts,
    redis_ms,
    stop_workers,
    texts,
)
from vermilion import (
    MessageStatus,
    OutcomeUnknownError,
    Queue,
    VermilionConnectionError,
    VermilionError,
)
from vermilion._scripts import SCRIPTS
from vermilion._wire import OutcomeRequest

ProxyFactory = Callable[[int], Awaitable[FaultProxy]]


# -- shared helpers ------------------------------------------------------------------------------


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def timed_lines(path: Path, text: str) -> list[float]:
    """The unix times of a worker's log lines (log_times) that contain ``text``."""
    return [float(line.split(" ", 1)[0]) for line in log_lines(path) if text in line]


async def load_scripts(client: aioredis.Redis) -> None:
    """Cache every script, so that the calls measured are all EVALSHA."""
    for script in SCRIPTS.values():
        await client.script_load(script.source)


async def count_script_runs(client: aioredis.Redis) -> dict[str, int]:
    """How many times each script ran since the last SLOWLOG RESET (slowlog-log-slower-than 0)."""
    by_sha = {script.sha: name for name, script in SCRIPTS.items()}
    runs: dict[str, int] = {}
    for entry in await client.execute_command("SLOWLOG", "GET", "-1"):  # type: ignore[no-untyped-call]
        args = entry[3]
        if args and args[0].upper() in (b"EVALSHA", b"EVALSHA_RO") and args[1] in by_sha:
            name = by_sha[args[1]]
            runs[name] = runs.get(name, 0) + 1
    return runs


async def log_every_command(client: aioredis.Redis) -> None:
    await client.config_set("slowlog-log-slower-than", 0)
    await client.config_set("slowlog-max-len", 100_000)
    await client.slowlog_reset()


@dataclass
class Produced:
    """What a producer's calls returned: the ground truth of "enqueued"."""

    ok: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # OutcomeUnknownError: may have run
    reasons: dict[str, str] = field(default_factory=dict)  # mid -> the error of a call that raised
    ended: dict[str, float] = field(default_factory=dict)  # mid -> time.monotonic() its call ended
    refused: list[str] = field(default_factory=list)  # VermilionConnectionError before sending
    other: list[str] = field(default_factory=list)  # "mid: error" of anything else: a defect
    latency: dict[str, float] = field(default_factory=dict)  # mid -> seconds its call took

    def all(self) -> list[str]:
        return self.ok + self.unknown + self.refused + self.other


async def enqueue_one(queue: Queue, produced: Produced, mid: str, content: Any) -> float:
    """One enqueue call, classified by what it returned; returns its duration."""
    started = time.monotonic()
    try:
        result = await queue.enqueue(content, mid=mid)
    except OutcomeUnknownError as exc:
        produced.unknown.append(mid)
        produced.reasons[mid] = str(exc)
    except VermilionConnectionError as exc:
        produced.refused.append(mid)
        produced.reasons[mid] = str(exc)
    except VermilionError as exc:
        produced.other.append(f"{mid}: {type(exc).__name__}: {exc}")
    else:
        if result.ok:
            produced.ok.append(mid)
        else:
            produced.other.append(f"{mid}: {result.error}")
    ended = time.monotonic()
    elapsed = ended - started
    produced.latency[mid] = elapsed
    produced.ended[mid] = ended
    return elapsed


def ended_in(watcher: TruthWatcher, start: float, end: float) -> int:
    return sum(1 for seen in watcher.finished.values() if start <= seen < end)


# -- T9: lost replies, per script ----------------------------------------------------------------

T9_LEASE = 1.0
T9_IDLE = 0.05
T9_REDELIVERY_MAX = T9_LEASE + T9_IDLE + 1.0


@pytest.mark.parametrize("client_kind", ["from-url", "default-retry"])
async def test_t9_a_lost_reply_never_replays_a_script(
    client_kind: str, fault_server: ServerFactory, fault_proxy: ProxyFactory
) -> None:
    """T9: the reply of one call of enqueue, dequeue, ack, extend is lost after the script ran.

    Each non-fenced script (enqueue, dequeue) ran exactly once and the caller hears
    OutcomeUnknownError, never ``already-queued``; the fenced ones (ack, extend) are
    repeated once at most and apply once. With ``default-retry`` the queue's client is
    a plain ``redis.asyncio.Redis`` that keeps redis-py's retry-on-error policy.
    """
    server = fault_server("redis")
    proxy = await fault_proxy(server.port)
    direct = server.client()
    await load_scripts(direct)
    await log_every_command(direct)
    name = f"t9-{uuid.uuid4().hex[:8]}"
    if client_kind == "from-url":
        queue = Queue(name, proxy.url)
    else:
        user_client = aioredis.Redis(host="127.0.0.1", port=proxy.port)
        assert user_client.get_retry() is not None and user_client.get_retry()._retries > 0  # type: ignore[union-attr]
        queue = Queue(name, redis=user_client)
    conn, keys = queue._protocol
    runs: dict[str, dict[str, int]] = {}
    replies: dict[str, Any] = {}

    async def lose_reply(script: str, call: Awaitable[Any]) -> Any:
        await queue.status()  # a pooled connection is up: the armed reply is the call's
        await direct.slowlog_reset()
        proxy.set_mode("drop_next_reply", match=SCRIPTS[script].sha)
        dropped = proxy.dropped
        try:
            return await call
        finally:
            assert proxy.dropped == dropped + 1, f"the {script} reply was not dropped"
            runs[script] = await count_script_runs(direct)

    try:
        # enqueue, with a mid of the caller's and with a random one
        with pytest.raises(OutcomeUnknownError) as caught:
            await lose_reply("enqueue", queue.enqueue({"kind": "t9"}, mid="e1"))
        assert caught.value.mids == ("e1",)
        assert runs["enqueue"] == {"enqueue": 1}
        assert await queue.message_status("e1") == MessageStatus.QUEUED  # it ran, once
        with pytest.raises(OutcomeUnknownError) as caught:
            await lose_reply("enqueue", queue.enqueue({"kind": "t9"}))
        (random_mid,) = caught.value.mids
        assert await queue.message_status(random_mid) == MessageStatus.QUEUED
        runs["enqueue-random-mid"] = runs["enqueue"]
        assert runs["enqueue"] == {"enqueue": 1}
        with pytest.raises(OutcomeUnknownError) as caught:
            await lose_reply("enqueue", queue.enqueue_many([{"kind": "t9"}] * 3, mids=["b1", "b2", "b3"]))
        assert caught.value.mids == ("b1", "b2", "b3")
        runs["enqueue-many"] = runs["enqueue"]
        assert runs["enqueue"] == {"enqueue": 1}

        # dequeue: one batch of 2 leased, nobody received it, no second batch
        before = await queue.status()
        with pytest.raises(OutcomeUnknownError):
            await lose_reply("dequeue", conn.dequeue(keys, 2, 60_000, 100))
        assert runs["dequeue"] == {"dequeue": 1}
        after = await queue.status()
        assert (after.nlocked, after.nqueued) == (before.nlocked + 2, before.nqueued - 2)

        # ack: a success, then a retry and a failure; each applies once
        for kind in ("s", "r", "f"):
            leased = (await conn.dequeue(keys, 1, 60_000, 100)).messages
            assert len(leased) == 1
            mid, token = leased[0].mid, leased[0].token
            outcome = OutcomeRequest(mid, token, kind, 0, "t9 failure" if kind == "f" else "")
            replies[f"ack-{kind}"] = await lose_reply("ack", conn.ack(keys, [outcome], 100))
            runs[f"ack-{kind}"] = runs.pop("ack")
            assert runs[f"ack-{kind}"] == {"ack": 2}, "a lost ack reply is repeated once (it is fenced)"
            expected = {"s": None, "r": MessageStatus.QUEUED, "f": MessageStatus.FAILED}[kind]
            assert await queue.message_status(mid) == expected
            if kind == "r":
                infos = {info.mid: info for info in await queue.content()}
                assert infos[mid].attempts == 1  # retried once, not twice
        status = await queue.status()
        assert status.nfailed == 1

        # extend: repeated once, the lease renewed and still current
        leased = (await conn.dequeue(keys, 1, 60_000, 100)).messages
        mid, token = leased[0].mid, leased[0].token
        lease_end = await direct.zscore(locks_key(name), mid)
        await asyncio.sleep(0.01)  # so that a renewal moves the lease's end
        replies["extend"] = await lose_reply("extend", conn.extend(keys, [(mid, token, 60_000)]))
        assert 1 <= runs["extend"].get("extend", 0) <= 2  # fenced: repeating it is harmless
        assert replies["extend"] == [True]
        renewed_end = await direct.zscore(locks_key(name), mid)
        assert lease_end is not None and renewed_end is not None and renewed_end > lease_end
        problems = await audit(direct, name)
    finally:
        await queue.aclose()
        if client_kind == "default-retry":
            await user_client.aclose()
        await direct.aclose()
    record(f"t9-calls-{client_kind}", {"runs": runs, "replies": replies})
    print(f"T9 {client_kind}: runs {runs}, replies {replies}")  # noqa: T201 - the figures for the docs
    assert problems == []


@pytest.mark.parametrize("script", ["dequeue", "ack", "extend"])
async def test_t9_worker_behind_a_proxy_loses_one_reply(
    script: str,
    fault_server: ServerFactory,
    worker_process: WorkerFactory,
    truth_log: Path,
    tmp_path: Path,
    fault_proxy: ProxyFactory,
) -> None:
    """T9: a worker process loses the reply of one dequeue, ack or extend.

    dequeue: the leased message is handed out again (attempt 2) within
    lease + idle_backoff + 1 s, the first hand-out never reached a handler, and the
    worker saw the failure (no silent replay). ack and extend: repeated once (fenced),
    the message handled once, no lease reported lost, no outcome reported stale.
    """
    server = fault_server("redis")
    proxy = await fault_proxy(server.port)
    direct = server.client()
    await load_scripts(direct)
    await log_every_command(direct)
    name = f"t9w-{uuid.uuid4().hex[:8]}"
    log_file, stats_file = tmp_path / "worker.log", tmp_path / "worker.json"
    worker = await asyncio.to_thread(
        worker_process,
        url=proxy.url,
        queue=name,
        concurrency=2,
        lock_timeout=T9_LEASE,
        idle_backoff=T9_IDLE,
        sleeps={"slow": 2.5},
        log_file=str(log_file),
        log_times=True,
        stats_file=str(stats_file),
    )
    watcher = TruthWatcher(truth_log)
    mid = f"lost-{script}"
    kind = "slow" if script == "extend" else "quick"
    marker = b"t9-payload-marker"
    match = marker if script == "dequeue" else SCRIPTS[script].sha
    redelivered_after: float | None = None
    try:
        async with Queue(name, redis=direct) as queue, watcher.following():
            await direct.slowlog_reset()
            proxy.set_mode("drop_next_reply", match=match)
            await queue.enqueue({"kind": kind, "tag": marker.decode()}, mid=mid)

            async def dropped() -> bool:
                return proxy.dropped == 1

            await eventually(dropped, 10, f"the {script} reply was dropped")
            dropped_at = time.monotonic()

            async def finished() -> bool:
                return mid in watcher.finished and await queue.message_status(mid) is None

            await eventually(finished, T9_REDELIVERY_MAX + 10, "the message was handled and acknowledged")
            if script == "dequeue":
                redelivered_after = watcher.starts[(mid, 2)][1] - dropped_at
            # Long enough for any wrong redelivery of it to show.
            await asyncio.sleep(T9_REDELIVERY_MAX)
            runs = await count_script_runs(direct)
            problems = await audit(direct, name)
    finally:
        await stop_workers([worker])
        await direct.aclose()

    truth = Truth.read(truth_log)
    counts = read_counts(stats_file)
    lines = log_lines(log_file)
    figures = {
        "script": script,
        "starts": truth.starts[mid],
        "redelivered_after_s": None if redelivered_after is None else round(redelivered_after, 3),
        "bound_s": T9_REDELIVERY_MAX,
        "script_runs": runs,
        "counts": counts,
        "warnings": lines,
    }
    record(f"t9-worker-{script}", figures)
    print(f"T9 worker {script}: {figures}")  # noqa: T201 - the figures for the docs

    assert problems == []
    assert counts.get("ack/stale", 0) == 0 and not [line for line in lines if "was not applied" in line], (
        "an outcome that was applied is reported stale"
    )
    assert counts.get("lease/lost", 0) == 0
    if script == "dequeue":
        # The first hand-out (attempt 1) never reached a handler; the lease brought it back.
        assert truth.starts[mid] == [(2, worker.pid)]
        assert truth.ends[mid] == [(2, worker.pid, "NoneType")]
        assert counts.get("poll/error") == 1, "the lost dequeue reply must surface as a failed poll"
        assert redelivered_after is not None and redelivered_after <= T9_REDELIVERY_MAX
    else:
        assert truth.starts[mid] == [(1, worker.pid)]
        assert truth.ends[mid] == [(1, worker.pid, "NoneType")]
        assert counts.get("ack/error", 0) == 0 and counts.get("heartbeat/error", 0) == 0
        if script == "ack":
            assert runs.get("ack") == 2, "one ack call, repeated once after its reply was lost"
        else:
            assert runs.get("extend") == counts["heartbeat/extend"] + 1, "one extend repeated once"


# -- T11: one worker partitioned -----------------------------------------------------------------

T11_LEASE = 1.0
T11_IDLE = 0.1
T11_HANDLER = 5.0
T11_BLACKHOLE = 3.0
T11_SOCKET_TIMEOUT = 1.0  # worker A's redis-py socket_timeout, from its URL
T11_TAKEOVER_MAX = T11_LEASE + T11_IDLE + 1.0
T11_NEW_WORK_MAX = 5.0


async def test_t11_partitioned_worker_loses_its_lease_and_comes_back(
    fault_server: ServerFactory,
    worker_process: WorkerFactory,
    truth_log: Path,
    tmp_path: Path,
    fault_proxy: ProxyFactory,
) -> None:
    """T11: worker A (behind its own proxy) is blackholed for 3 s while handling a 5 s message.

    B (direct) takes the message over (attempt 2) within lease + idle_backoff + 1 s;
    A's calls give up within their socket timeout while cut off, A logs the lost
    lease after the heal, A's late ack is stale and changes nothing, and A takes new
    work within 5 s of the heal.
    """
    server = fault_server("redis")
    proxy = await fault_proxy(server.port)
    name = f"t11-{uuid.uuid4().hex[:8]}"
    gate = tmp_path / "release-b"
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a_stats, b_stats = tmp_path / "a.json", tmp_path / "b.json"
    common: dict[str, Any] = {
        "queue": name,
        "lock_timeout": T11_LEASE,
        "idle_backoff": T11_IDLE,
        "sleeps": {"slow": T11_HANDLER},
        "log_times": True,
    }
    a = await asyncio.to_thread(
        worker_process,
        **common,
        url=f"{proxy.url}?socket_timeout={T11_SOCKET_TIMEOUT}",
        concurrency=2,  # a free slot: A can take new work while its old handler runs
        log_file=str(a_log),
        stats_file=str(a_stats),
    )
    client = server.client()
    watcher = TruthWatcher(truth_log)
    workers = [a]
    try:
        async with Queue(name, redis=client) as queue, watcher.following():
            await queue.enqueue({"kind": "slow"}, mid="slow")

            async def a_started() -> bool:
                return ("slow", 1) in watcher.starts

            await eventually(a_started, 10, "A started the 5 s handler")
            # B handles one message at a time and holds it until the gate opens: once
            # B has taken the message over, new work can only go to A.
            b = await asyncio.to_thread(
                worker_process,
                **common,
                url=server.url,
                concurrency=1,
                hold_until=str(gate),
                log_file=str(b_log),
                stats_file=str(b_stats),
            )
            workers.append(b)
            proxy.set_mode("blackhole")
            cut_at, cut_wall = time.monotonic(), time.time()

            async def b_took_over() -> bool:
                return ("slow", 2) in watcher.starts

            await eventually(b_took_over, T11_TAKEOVER_MAX + 10, "B took the message over")
            took_over_after = watcher.starts[("slow", 2)][1] - cut_at
            await asyncio.sleep(max(0.0, T11_BLACKHOLE - (time.monotonic() - cut_at)))  # the plan's cut
            proxy.set_mode("pass")
            healed_at, healed_wall = time.monotonic(), time.time()
            await queue.enqueue({"kind": "quick"}, mid="fresh")

            async def fresh_started() -> bool:
                return ("fresh", 1) in watcher.starts

            await eventually(fresh_started, T11_NEW_WORK_MAX + 10, "new work was taken after the heal")
            new_work_after = watcher.starts[("fresh", 1)][1] - healed_at

            async def a_acked() -> bool:
                return bool(timed_lines(a_log, "was not applied"))

            await eventually(a_acked, T11_HANDLER + 10, "A acknowledged its late outcome")
            status_after_a = await queue.message_status("slow")
            infos_after_a = [(i.mid, i.status, i.attempts) for i in await queue.content() if i.mid == "slow"]
            problems_after_a = await audit(client, name)
            gate.touch()

            async def b_done() -> bool:
                return await queue.message_status("slow") is None and "fresh" in watcher.finished

            await eventually(b_done, T11_HANDLER + 10, "B's outcome removed the message")
            problems = await audit(client, name)
    finally:
        gate.touch()
        await stop_workers(workers)
        await client.aclose()

    truth = Truth.read(truth_log)
    a_counts, b_counts = read_counts(a_stats), read_counts(b_stats)
    a_warnings = [line.split(" ", 1) for line in log_lines(a_log)]
    failures_while_cut = [
        float(at) - cut_wall for at, text in a_warnings if "failed" in text and float(at) < healed_wall
    ]
    lease_lost_after = [at - cut_wall for at in timed_lines(a_log, "lost the lease")]
    figures = {
        "took_over_after_s": round(took_over_after, 3),
        "takeover_bound_s": T11_TAKEOVER_MAX,
        "a_failures_while_cut_s": [round(at, 3) for at in failures_while_cut],
        "a_lease_lost_logged_s": [round(at, 3) for at in lease_lost_after],
        "new_work_after_heal_s": round(new_work_after, 3),
        "status_after_a_ack": status_after_a,
        "a_counts": a_counts,
        "b_counts": b_counts,
        "a_warnings": [f"{float(at) - cut_wall:+.3f} {text}" for at, text in a_warnings],
    }
    record("t11", figures)
    print(f"T11: {figures}")  # noqa: T201 - the figures for the docs

    assert truth.starts["slow"] == [(1, a.pid), (2, b.pid)]  # the documented duplicate
    assert truth.ends["slow"] == [(1, a.pid, "NoneType"), (2, b.pid, "NoneType")]
    assert took_over_after <= T11_TAKEOVER_MAX
    # A's calls gave up while it was cut off, the first within a renewal period plus
    # its socket timeout, twice (a renewal is repeated once), plus slack: none hung.
    assert failures_while_cut, "no call of A returned while it was cut off"
    assert min(failures_while_cut) <= T11_LEASE / 3 + 2 * T11_SOCKET_TIMEOUT + 1.0
    assert lease_lost_after and a_counts.get("lease/lost") == 1  # A logged the lost lease ...
    assert min(lease_lost_after) >= T11_BLACKHOLE - 0.5  # ... once it could hear about it
    assert status_after_a == MessageStatus.LOCKED and infos_after_a == [("slow", MessageStatus.LOCKED, 2)]
    assert a_counts.get("ack/stale") == 1 and len(timed_lines(a_log, "was not applied")) == 1
    assert b_counts.get("ack/stale", 0) == 0
    assert truth.starts["fresh"] == [(1, a.pid)] and new_work_after <= T11_NEW_WORK_MAX
    assert problems_after_a == [] and problems == []


# -- T10: server stalls --------------------------------------------------------------------------

T10_LEASE = 2.0
T10_IDLE = 0.1
T10_STALL = 3.0
T10_RATE = 300  # messages offered per second
T10_CALLS = 8  # the producer's calls in flight at most
T10_WORKERS = 2
T10_CONCURRENCY = 8
T10_STALLS = chaos_size(1, 3)  # stalls per run, T10_GAP apart
T10_GAP = 2.0
T10_CALL_TIMEOUT = 30.0  # what a Queue built from a URL allows one call


async def paced_producer(
    queue: Queue,
    produced: Produced,
    rate: float,
    calls: int,
    stop: asyncio.Event,
    count: int | None = None,
) -> None:
    """Offer ``rate`` messages a second, one enqueue each, at most ``calls`` in flight.

    Until ``stop`` is set, or ``count`` messages were offered.
    """
    slots = asyncio.Semaphore(calls)
    tasks: set[asyncio.Task[float]] = set()
    started = time.monotonic()
    index = 0
    try:
        while not stop.is_set() and (count is None or index < count):
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            mid = f"m{index:07d}"
            index += 1
            task = asyncio.create_task(enqueue_one(queue, produced, mid, {"kind": "work"}))
            task.add_done_callback(lambda _: slots.release())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.timeout(chaos_size(120, 300))
@pytest.mark.parametrize("stall", ["client-pause-write", "debug-sleep", "sigstop"])
async def test_t10_server_stall(
    stall: str, fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path, tmp_path: Path
) -> None:
    """T10: the server stalls 3 s under a 300 msg/s producer and 2 workers x 8, lease 2 s.

    0 lost; duplicates only among messages started before the stall ended, at most
    the handlers in flight; every producer call completes within stall + 1 s (or
    raises our timeout error within its 30 s); both workers alive and handling
    afterwards; during CLIENT PAUSE WRITE, status() answers at once.
    """
    server = fault_server("redis")
    name = f"t10-{uuid.uuid4().hex[:8]}"
    stats = [tmp_path / f"w{i}.json" for i in range(T10_WORKERS)]
    workers = list(
        await asyncio.gather(
            *[
                asyncio.to_thread(
                    worker_process,
                    url=server.url,
                    queue=name,
                    concurrency=T10_CONCURRENCY,
                    lock_timeout=T10_LEASE,
                    idle_backoff=T10_IDLE,
                    sleep_min=0.005,
                    sleep_max=0.03,
                    log_file=str(tmp_path / f"w{i}.log"),
                    stats_file=str(path),
                )
                for i, path in enumerate(stats)
            ]
        )
    )
    admin = server.client()
    watcher = TruthWatcher(truth_log)
    produced = Produced()
    stalls: list[tuple[float, float]] = []  # (start, end), time.monotonic()
    locked_at_stall: list[int] = []
    status_latency: list[float] = []
    stop = asyncio.Event()
    try:
        async with Queue(name, server.url) as queue, watcher.following():
            producer = asyncio.create_task(paced_producer(queue, produced, T10_RATE, T10_CALLS, stop))
            for _ in range(T10_STALLS):
                await asyncio.sleep(T10_GAP)  # the producer and workers at their pace first
                locked_at_stall.append(await admin.zcard(locks_key(name)))
                start = time.monotonic()
                if stall == "client-pause-write":
                    await admin.execute_command(  # type: ignore[no-untyped-call]
                        "CLIENT", "PAUSE", int(T10_STALL * 1000), "WRITE"
                    )
                    # Read-only scripts answer while writes wait.
                    async with Queue(name, server.url) as reader:
                        while time.monotonic() - start < T10_STALL - 0.5:
                            asked = time.monotonic()
                            await reader.status()
                            await reader.message_status("m0000000")
                            status_latency.append(time.monotonic() - asked)
                            await asyncio.sleep(0.2)
                    await asyncio.sleep(max(0.0, start + T10_STALL - time.monotonic()))
                elif stall == "debug-sleep":
                    await admin.execute_command("DEBUG", "SLEEP", T10_STALL)  # type: ignore[no-untyped-call]
                else:
                    server.pause()
                    try:
                        await asyncio.sleep(T10_STALL)
                    finally:
                        server.resume()
                stalls.append((start, time.monotonic()))
            await asyncio.sleep(T10_GAP)  # the pace after the last stall
            stop.set()
            await producer

            async def drained() -> bool:
                status = await queue.status()
                return status.nqueued + status.nlocked + status.nbackoff == 0 and all(
                    mid in watcher.finished for mid in produced.ok
                )

            await eventually(drained, 60, "every message handled")
            problems = await audit(admin, name)
        alive = [worker.alive() for worker in workers]
    finally:
        stop.set()
        await stop_workers(workers)
        await admin.aclose()

    truth = Truth.read(truth_log)
    handled = truth.handled()
    lost = [mid for mid in produced.ok if mid not in handled]
    duplicates = truth.duplicates()
    last_end = stalls[-1][1]
    # A duplicate's first handling must have started before a stall ended (the watcher
    # sees a line at most one poll late: 0.1 s of slack).
    first_seen = {mid: watcher.starts[(mid, truth.starts[mid][0][0])][1] for mid in duplicates}
    unexplained = [mid for mid, seen in first_seen.items() if not any(seen <= end + 0.1 for _, end in stalls)]
    handled_by = {
        worker.pid: sum(1 for starts in truth.starts.values() for _, pid in starts if pid == worker.pid)
        for worker in workers
    }
    started_after_stall = {
        worker.pid: sum(
            1
            for (mid, attempt), (pid, seen) in watcher.starts.items()
            if pid == worker.pid and seen > last_end
        )
        for worker in workers
    }
    ok_latency = max((produced.latency[mid] for mid in produced.ok), default=0.0)
    raised_latency = max((produced.latency[mid] for mid in produced.unknown + produced.refused), default=0.0)
    counts = [read_counts(path) for path in stats]
    figures = {
        "stall": stall,
        "stalls": len(stalls),
        "stall_s": [round(end - start, 3) for start, end in stalls],
        "offered": len(produced.all()),
        "ok": len(produced.ok),
        "unknown": len(produced.unknown),
        "refused": len(produced.refused),
        "other": produced.other[:5],
        "lost": len(lost),
        "duplicates": sum(duplicates.values()),
        "locked_at_stall": locked_at_stall,
        "producer_latency_max_s": round(ok_latency, 3),
        "raised_latency_max_s": round(raised_latency, 3),
        "status_latency_max_s": round(max(status_latency), 3) if status_latency else None,
        "status_answers": len(status_latency),
        "handled_by_worker": handled_by,
        "started_after_last_stall": started_after_stall,
        "worker_counts": counts,
    }
    record(f"t10-{stall}", figures)
    print(f"T10 {stall}: {figures}")  # noqa: T201 - the figures for the docs

    assert produced.other == []
    assert lost == []
    assert unexplained == [], "a duplicate of a message first started after the stall"
    assert sum(duplicates.values()) <= T10_STALLS * T10_WORKERS * T10_CONCURRENCY
    assert ok_latency <= T10_STALL + 1.0
    assert raised_latency <= T10_CALL_TIMEOUT + 1.0
    assert all(alive) and all(started_after_stall.values()), "a worker stopped handling after the stall"
    if stall == "client-pause-write":
        assert status_latency and max(status_latency) <= 0.5
    assert problems == []


# -- T6: Redis killed and restarted --------------------------------------------------------------

T6_MESSAGES = chaos_size(5_000, 50_000)
T6_WORKERS = 2
T6_CONCURRENCY = 8
T6_PRODUCERS = 4  # sequential enqueue calls each: at most 4 in flight at a kill
T6_LEASE = 2.0
T6_IDLE = 0.1
T6_DOWN = 2.0  # seconds between the kill and the restart
T6_RESUME_MAX = 5.0


@dataclass
class ServerKill:
    at: float  # time.monotonic() right after the SIGKILL was reaped
    up: float  # time.monotonic() once the restarted server answered
    enqueues_in_flight: int  # at most, at the kill
    locked: int  # leases in Redis just before the kill


async def start_workers(
    worker_process: WorkerFactory, tmp_path: Path, count: int, **options: Any
) -> tuple[list[WorkerProcess], list[Path], list[Path]]:
    """``count`` worker processes started side by side, each with its own log and stats file."""
    logs = [tmp_path / f"w{i}.log" for i in range(count)]
    stats = [tmp_path / f"w{i}.json" for i in range(count)]
    started = await asyncio.gather(
        *[
            asyncio.to_thread(worker_process, log_file=str(log), stats_file=str(stat), **options)
            for log, stat in zip(logs, stats, strict=True)
        ]
    )
    return list(started), logs, stats


async def kill_and_restart(server: FaultServer, down: float) -> tuple[float, float]:
    """SIGKILL the server, wait ``down`` seconds, start it on the same port and data."""
    await asyncio.to_thread(server.kill)
    at = time.monotonic()
    await asyncio.sleep(down)
    await asyncio.to_thread(server.start)
    return at, time.monotonic()


def worker_warnings(paths: list[Path]) -> list[str]:
    return [line for path in paths for line in log_lines(path)]


@pytest.mark.timeout(chaos_size(240, 900))
@pytest.mark.parametrize("kind", KINDS)
async def test_t6_redis_killed_and_restarted_keeps_every_ok_enqueue(
    kind: str, fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path, tmp_path: Path
) -> None:
    """T6: kill -9 of the server mid-enqueue and mid-drain, AOF with appendfsync always.

    5,000 [50,000 full] single enqueues from 4 producer tasks, 2 workers x 8 draining.
    0 lost `ok` enqueues; OutcomeUnknownError at most for the calls in flight at a kill;
    calls refused before sending never ran; duplicates only of messages started before
    a kill; both workers resume within 5 s of each restart, without being restarted;
    no NOSCRIPT (or any other error) reaches the producer or the worker logs.
    """
    server = fault_server(kind, appendonly=True)
    name = f"t6-{kind}-{uuid.uuid4().hex[:8]}"
    workers, logs, stats = await start_workers(
        worker_process,
        tmp_path,
        T6_WORKERS,
        url=server.url,
        queue=name,
        concurrency=T6_CONCURRENCY,
        lock_timeout=T6_LEASE,
        idle_backoff=T6_IDLE,
        sleep_min=0.01,
        sleep_max=0.03,
    )
    pids = [worker.pid for worker in workers]
    # No retries (redis-py's default would sleep up to 10 s between them): a sample
    # that fails is simply missing.
    client = server.client(retry=Retry(NoBackoff(), 0), socket_timeout=2.0)
    watcher = TruthWatcher(truth_log)
    produced = Produced()
    kills: list[ServerKill] = []
    leases: list[tuple[float, int]] = []  # (time.monotonic(), leases in Redis), every 0.1 s
    rng = random.Random()
    mids = iter(f"m{i:06d}" for i in range(T6_MESSAGES))
    try:
        async with Queue(name, server.url) as queue, watcher.following():

            async def produce() -> None:
                for mid in mids:
                    await enqueue_one(queue, produced, mid, {"kind": "work"})
                    if mid in produced.refused:
                        await asyncio.sleep(0.05)  # Redis is down: do not spin

            async def kill(producers_running: int) -> None:
                try:
                    locked = await client.zcard(locks_key(name))
                except redis_errors.ConnectionError:
                    locked = -1
                at, up = await kill_and_restart(server, T6_DOWN)
                # Each producer task has at most one call in flight.
                kills.append(ServerKill(at, up, producers_running, locked))

            async def sample_leases() -> None:
                while True:
                    with contextlib.suppress(redis_errors.RedisError):
                        leases.append((time.monotonic(), await client.zcard(locks_key(name))))
                    await asyncio.sleep(0.1)

            sampler = asyncio.create_task(sample_leases())
            producers = [asyncio.create_task(produce()) for _ in range(T6_PRODUCERS)]
            try:
                # Mid-enqueue: at a random point of the first half of the enqueues.
                threshold = rng.uniform(0.2, 0.5) * T6_MESSAGES

                async def enqueued_enough() -> bool:
                    return len(produced.all()) >= threshold

                await eventually(enqueued_enough, 120, "the producers got going")
                await kill(sum(not task.done() for task in producers))
                await asyncio.gather(*producers)
            finally:
                for task in producers:
                    task.cancel()
                await asyncio.gather(*producers, return_exceptions=True)
            # Mid-drain: the backlog is still there (the producers outrun the workers).
            backlog = (await queue.status()).nqueued
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            await kill(0)

            async def drained() -> bool:
                status = await queue.status()
                return status.nqueued + status.nlocked + status.nbackoff == 0 and all(
                    mid in watcher.finished for mid in produced.ok
                )

            await eventually(drained, chaos_size(90, 300), "every message handled")
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            never_ran = [mid for mid in produced.refused if await queue.message_status(mid) is not None]
            problems = await audit(client, name)
        alive = [worker.alive() for worker in workers]
    finally:
        await stop_workers(workers)
        await client.aclose()

    truth = Truth.read(truth_log)
    handled = truth.handled()
    lost = [mid for mid in produced.ok if mid not in handled]
    refused_handled = [mid for mid in produced.refused if mid in handled]
    duplicates = truth.duplicates()
    first_seen = {mid: watcher.starts[(mid, truth.starts[mid][0][0])][1] for mid in duplicates}
    unexplained = [mid for mid, seen in first_seen.items() if not any(seen <= k.at + 0.1 for k in kills)]
    resume: list[dict[int, float | None]] = []
    for server_kill in kills:
        after = {}
        for pid in pids:
            seen = [at for (_, _), (who, at) in watcher.starts.items() if who == pid and at > server_kill.up]
            after[pid] = round(min(seen) - server_kill.up, 3) if seen else None
        resume.append(after)
    warnings = worker_warnings(logs)
    counts = [read_counts(path) for path in stats]
    leases_max = max((n for _, n in leases), default=0)
    figures = {
        "server": kind,
        "offered": len(produced.all()),
        "ok": len(produced.ok),
        "unknown": len(produced.unknown),
        "refused": len(produced.refused),
        "other": produced.other[:5],
        "unknown_reasons": sorted({produced.reasons[mid] for mid in produced.unknown}),
        "unknown_that_ran": sum(1 for mid in produced.unknown if mid in handled),
        "unknown_detail": [  # mid, ran, seconds after each kill, error
            (
                mid,
                mid in handled,
                [round(produced.ended[mid] - k.at, 3) for k in kills],
                produced.reasons[mid][-60:],
            )
            for mid in produced.unknown[:20]
        ],
        "enqueues_in_flight_at_kills": [k.enqueues_in_flight for k in kills],
        "locked_at_kills": [k.locked for k in kills],
        "backlog_at_drain_kill": backlog,
        "lost": len(lost),
        "duplicates": sum(duplicates.values()),
        "resume_after_restart_s": resume,
        "resume_bound_s": T6_RESUME_MAX,
        "restart_s": [round(k.up - k.at, 3) for k in kills],
        "leases_max": leases_max,
        "leases_after_restarts": [
            [(round(t - k.up, 1), n) for t, n in leases if k.up <= t <= k.up + 12][::5] for k in kills
        ],
        "noscript_in_logs": sum("NOSCRIPT" in line for line in warnings),
        "worker_counts": counts,
    }
    record(f"t6-{kind}", figures)
    print(f"T6 {kind}: {figures}")  # noqa: T201 - the figures for the docs

    assert produced.other == [], "an error that is not a connection error reached the producer"
    assert lost == []
    assert never_ran == [] and refused_handled == [], "a call refused before sending ran"
    assert all(alive), "a worker process died"
    assert not [line for line in warnings if "NOSCRIPT" in line or "internal error" in line]
    assert problems == []
    assert backlog > 0, "the mid-drain kill found no backlog"
    assert unexplained == [], "a duplicate of a message first started after the kills"
    # Leases held at once: the handlers running, those of the handlers that ran at a kill
    # (lapsed, not yet reclaimed), and a lost dequeue's batch per worker: each at most
    # the workers' slots. More means handled messages wait for their acks in the
    # workers, and a second fault turns every one of them into a duplicate.
    assert leases_max <= 3 * T6_WORKERS * T6_CONCURRENCY, "outcomes pile up unacknowledged"
    assert sum(duplicates.values()) <= len(kills) * T6_WORKERS * T6_CONCURRENCY
    for after in resume:
        assert all(seconds is not None and seconds <= T6_RESUME_MAX for seconds in after.values()), resume
    # A call raises OutcomeUnknownError only if it was in flight when the server died;
    # one refused with LOADING by the restarting server provably did not run.
    assert len(produced.unknown) <= sum(k.enqueues_in_flight for k in kills)


T6_CONTROL_MESSAGES = chaos_size(200, 2_000)


@pytest.mark.parametrize("kind", KINDS)
async def test_t6_control_without_persistence_loses_messages_but_nothing_crashes(
    kind: str, fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path, tmp_path: Path
) -> None:
    """T6 control: `appendonly no`, no snapshots: a kill -9 loses every message (the docs' warning).

    The workers keep running: the outcomes of the handlers that held leases are stale,
    and messages enqueued after the restart are handled.
    """
    server = fault_server(kind, appendonly=False)
    name = f"t6c-{kind}-{uuid.uuid4().hex[:8]}"
    gate = tmp_path / "gate"
    stats = [tmp_path / f"w{i}.json" for i in range(T6_WORKERS)]
    logs = [tmp_path / f"w{i}.log" for i in range(T6_WORKERS)]
    workers = list(
        await asyncio.gather(
            *[
                asyncio.to_thread(
                    worker_process,
                    url=server.url,
                    queue=name,
                    concurrency=4,
                    lock_timeout=T6_LEASE,
                    idle_backoff=T6_IDLE,
                    hold_until=str(gate),
                    log_file=str(log),
                    stats_file=str(stat),
                )
                for log, stat in zip(logs, stats, strict=True)
            ]
        )
    )
    client = server.client()
    watcher = TruthWatcher(truth_log)
    before = [f"old{i:05d}" for i in range(T6_CONTROL_MESSAGES)]
    after = [f"new{i:05d}" for i in range(50)]
    try:
        async with Queue(name, server.url) as queue, watcher.following():
            results = await queue.enqueue_many([{"kind": "work"}] * len(before), mids=before)
            assert all(result.ok for result in results)

            async def held() -> bool:
                return len(watcher.starts) == T6_WORKERS * 4

            await eventually(held, 20, "every handler slot holds a message")
            status_before = await queue.status()
            await kill_and_restart(server, T6_DOWN)
            status_after = await queue.status()
            keys_after = await client.dbsize()
            gate.touch()  # the held handlers finish: their outcomes find nothing
            results = await queue.enqueue_many([{"kind": "work"}] * len(after), mids=after)
            assert all(result.ok for result in results)

            async def new_ones_handled() -> bool:
                return all(mid in watcher.finished for mid in after)

            await eventually(new_ones_handled, 30, "the messages enqueued after the restart were handled")
            problems = await audit(client, name)
        alive = [worker.alive() for worker in workers]
    finally:
        gate.touch()
        await stop_workers(workers)
        await client.aclose()

    truth = Truth.read(truth_log)
    counts = [read_counts(path) for path in stats]
    old_handled = [mid for mid in before if truth.starts[mid]]
    figures = {
        "server": kind,
        "enqueued_before": len(before),
        "live_before_kill": status_before.nqueued + status_before.nlocked,
        "live_after_restart": status_after.ntotal,
        "keys_after_restart": keys_after,
        "old_messages_started": len(old_handled),
        "stale_acks": sum(count.get("ack/stale", 0) for count in counts),
        "new_handled": sum(1 for mid in after if mid in truth.handled()),
        "worker_counts": counts,
    }
    record(f"t6-control-{kind}", figures)
    print(f"T6 control {kind}: {figures}")  # noqa: T201 - the figures for the docs

    assert status_before.nqueued + status_before.nlocked == len(before)
    assert status_after.ntotal == 0 and status_after.nfailed == 0 and keys_after == 0  # all gone
    assert len(old_handled) == T6_WORKERS * 4  # only those held at the kill ever started
    assert figures["stale_acks"] == T6_WORKERS * 4  # their outcomes changed nothing
    assert all(alive)
    assert not [line for line in worker_warnings(logs) if "internal error" in line]
    assert problems == []


# -- T7: script cache flushed under load ---------------------------------------------------------

T7_MESSAGES = chaos_size(4_000, 20_000)
T7_RATE = chaos_size(500, 1_000)  # offered per second: the load (8 s [20 s]) outlasts the flushes
T7_FLUSHES = chaos_size(10, 30)  # the plan's 10; at full size they span most of the load
T7_INTERVAL = 0.5
T7_WORKERS = 2
T7_CONCURRENCY = 8


async def command_calls(client: aioredis.Redis) -> dict[str, tuple[int, int]]:
    """``INFO commandstats``: command -> (calls, failed calls) for the script commands."""
    stats = await client.info("commandstats")
    calls = {}
    for command in ("eval", "eval_ro", "evalsha", "evalsha_ro"):
        entry = stats.get(f"cmdstat_{command}", {})
        calls[command] = (int(entry.get("calls", 0)), int(entry.get("failed_calls", 0)))
    return calls


@pytest.mark.timeout(chaos_size(120, 300))
@pytest.mark.parametrize("kind", KINDS)
async def test_t7_script_flush_under_load_surfaces_nothing(
    kind: str, fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path, tmp_path: Path
) -> None:
    """T7: SCRIPT FLUSH every 500 ms while 4,000 [20,000 full] messages flow through 2 workers.

    0 errors surfaced to the producer or in the workers (no failed poll, ack or renewal,
    no warning at all); 0 lost, 0 duplicates; EVAL fallbacks at most
    flushes x scripts x connections.
    """
    server = fault_server(kind)
    name = f"t7-{kind}-{uuid.uuid4().hex[:8]}"
    logs = [tmp_path / f"w{i}.log" for i in range(T7_WORKERS)]
    stats = [tmp_path / f"w{i}.json" for i in range(T7_WORKERS)]
    workers = list(
        await asyncio.gather(
            *[
                asyncio.to_thread(
                    worker_process,
                    url=server.url,
                    queue=name,
                    concurrency=T7_CONCURRENCY,
                    lock_timeout=5.0,
                    idle_backoff=0.1,
                    sleep_min=0.002,
                    sleep_max=0.01,
                    log_file=str(log),
                    stats_file=str(stat),
                )
                for log, stat in zip(logs, stats, strict=True)
            ]
        )
    )
    admin = server.client()
    await admin.config_resetstat()
    watcher = TruthWatcher(truth_log)
    produced = Produced()
    flushes = 0
    clients_max = 0
    stop = asyncio.Event()
    try:
        async with Queue(name, server.url) as queue, watcher.following():
            producer = asyncio.create_task(paced_producer(queue, produced, T7_RATE, 4, stop, T7_MESSAGES))
            try:
                for _ in range(T7_FLUSHES):
                    await asyncio.sleep(T7_INTERVAL)
                    clients_max = max(clients_max, int((await admin.info("clients"))["connected_clients"]))
                    await admin.script_flush()
                    flushes += 1
                busy_at_last_flush = not producer.done()
                await producer
            finally:
                stop.set()
                await asyncio.gather(producer, return_exceptions=True)

            async def drained() -> bool:
                status = await queue.status()
                return status.nqueued + status.nlocked + status.nbackoff == 0 and all(
                    mid in watcher.finished for mid in produced.ok
                )

            await eventually(drained, 60, "every message handled")
            calls = await command_calls(admin)
            problems = await audit(admin, name)
    finally:
        stop.set()
        await stop_workers(workers)
        await admin.aclose()

    truth = Truth.read(truth_log)
    handled = truth.handled()
    lost = [mid for mid in produced.ok if mid not in handled]
    starts_per_mid = sorted({len(starts) for starts in truth.starts.values()})
    counts = [read_counts(path) for path in stats]
    error_counts = (
        "poll/error",
        "ack/error",
        "heartbeat/error",
        "ack/stale",
        "lease/lost",
        "handler/exception",
    )
    errors = {key: sum(count.get(key, 0) for count in counts) for key in error_counts}
    warnings = worker_warnings(logs)
    fallbacks = calls["eval"][0] + calls["eval_ro"][0]
    noscripts = calls["evalsha"][1] + calls["evalsha_ro"][1]
    bound = flushes * len(SCRIPTS) * clients_max
    figures = {
        "server": kind,
        "messages": len(produced.all()),
        "flushes": flushes,
        "producer_errors": len(produced.all()) - len(produced.ok),
        "worker_errors": errors,
        "worker_warnings": warnings[:5],
        "lost": len(lost),
        "duplicates": sum(truth.duplicates().values()),
        "starts_per_mid": starts_per_mid,
        "eval_fallbacks": fallbacks,
        "noscript_replies": noscripts,
        "fallback_bound": bound,
        "clients_max": clients_max,
        "commandstats": calls,
    }
    record(f"t7-{kind}", figures)
    print(f"T7 {kind}: {figures}")  # noqa: T201 - the figures for the docs

    assert busy_at_last_flush, "the load ended before the flushes did"
    assert produced.other == [] and produced.unknown == [] and produced.refused == []
    assert all(value == 0 for value in errors.values()) and warnings == []
    assert lost == [] and len(produced.ok) == T7_MESSAGES
    assert truth.duplicates() == {} and starts_per_mid == [1]
    assert 0 < fallbacks <= bound
    assert problems == []


# -- T8: connection kill storm -------------------------------------------------------------------

T8_PRE = chaos_seconds(3.0, 10.0)
T8_STORM = chaos_seconds(8.0, 40.0)
T8_POST = chaos_seconds(4.0, 10.0)
T8_INTERVAL = 0.3
T8_RATE = 500
T8_CALLS = 8
T8_WORKERS = 2
T8_CONCURRENCY = 10
T8_LEASE = 2.0
T8_IDLE = 0.1
T8_STRANDED_AFTER = T8_IDLE + 1.0  # a lease ended this long ago, and not reclaimed: stranded


@pytest.mark.timeout(chaos_size(120, 300))
@pytest.mark.parametrize("kind", ["redis"])
async def test_t8_connection_kill_storm(
    kind: str, fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path, tmp_path: Path
) -> None:
    """T8: CLIENT KILL TYPE normal SKIPME yes every 300 ms for 8 s [40 s full] at 500 msg/s.

    2 workers x 10, lease 2 s. 0 lost, 0 stranded; the workers never stop; the handled
    rate is back to 90 % of the rate before the storm within 2 s after it; duplicates
    at most kills x concurrency.
    """
    server = fault_server(kind)
    name = f"t8-{uuid.uuid4().hex[:8]}"
    workers, _logs, stats = await start_workers(
        worker_process,
        tmp_path,
        T8_WORKERS,
        url=server.url,
        queue=name,
        concurrency=T8_CONCURRENCY,
        lock_timeout=T8_LEASE,
        idle_backoff=T8_IDLE,
        sleep_min=0.005,
        sleep_max=0.02,
    )
    admin = server.client()  # SKIPME yes: the killer's own connection survives
    sampler_client = server.client(retry=Retry(NoBackoff(), 0), socket_timeout=2.0)
    watcher = TruthWatcher(truth_log)
    produced = Produced()
    stop = asyncio.Event()
    stranded: set[str] = set()
    killed: list[int] = []
    try:
        async with Queue(name, server.url) as queue, watcher.following():

            async def watch_leases() -> None:
                while True:
                    with contextlib.suppress(redis_errors.RedisError):
                        limit = await redis_ms(sampler_client) - int(T8_STRANDED_AFTER * 1000)
                        late = await sampler_client.zrangebyscore(locks_key(name), "-inf", limit)
                        stranded.update(texts(late))
                    await asyncio.sleep(0.25)

            sampler = asyncio.create_task(watch_leases())
            producer = asyncio.create_task(paced_producer(queue, produced, T8_RATE, T8_CALLS, stop))
            try:
                started = time.monotonic()
                await asyncio.sleep(T8_PRE)
                storm_start = time.monotonic()
                while time.monotonic() - storm_start < T8_STORM:
                    killed.append(
                        await admin.execute_command(  # type: ignore[no-untyped-call]
                            "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
                        )
                    )
                    await asyncio.sleep(T8_INTERVAL)
                storm_end = time.monotonic()
                await asyncio.sleep(T8_POST)
                stop.set()
                await producer

                async def drained() -> bool:
                    status = await queue.status()
                    return status.nqueued + status.nlocked + status.nbackoff == 0 and all(
                        mid in watcher.finished for mid in produced.ok
                    )

                await eventually(drained, 60, "every message handled")
            finally:
                stop.set()
                sampler.cancel()
                await asyncio.gather(producer, sampler, return_exceptions=True)
            problems = await audit(admin, name)
        alive = [worker.alive() for worker in workers]
    finally:
        stop.set()
        await stop_workers(workers)
        await admin.aclose()
        await sampler_client.aclose()

    truth = Truth.read(truth_log)
    handled = truth.handled()
    lost = [mid for mid in produced.ok if mid not in handled]
    duplicates = truth.duplicates()
    pre_rate = ended_in(watcher, started + 1.0, storm_start) / (storm_start - started - 1.0)
    per_second = [
        ended_in(watcher, storm_start + i, storm_start + i + 1) for i in range(int(T8_STORM + T8_POST))
    ]
    after_rate = ended_in(watcher, storm_end + 1.0, storm_end + 2.0)
    by_worker_after: dict[int, int] = {worker.pid: 0 for worker in workers}
    for pid, seen in watcher.starts.values():
        if storm_end <= seen <= storm_end + 2.0 and pid in by_worker_after:
            by_worker_after[pid] += 1
    counts = [read_counts(path) for path in stats]
    figures = {
        "server": kind,
        "kills": len(killed),
        "connections_killed": sum(killed),
        "offered": len(produced.all()),
        "ok": len(produced.ok),
        "unknown": len(produced.unknown),
        "refused": len(produced.refused),
        "other": produced.other[:5],
        "lost": len(lost),
        "stranded": sorted(stranded)[:10],
        "duplicates": sum(duplicates.values()),
        "duplicates_bound": len(killed) * T8_CONCURRENCY,
        "pre_rate": round(pre_rate, 1),
        "handled_per_second_from_storm": per_second,
        "rate_1_to_2_s_after": after_rate,
        "started_by_worker_2_s_after": by_worker_after,
        "worker_counts": counts,
    }
    record(f"t8-{kind}", figures)
    print(f"T8 {kind}: {figures}")  # noqa: T201 - the figures for the docs

    assert produced.other == []
    assert lost == []
    assert stranded == set()
    assert all(alive) and all(by_worker_after.values()), "a worker stopped"
    assert min(per_second) > 0, "nothing was handled for a whole second"
    assert sum(duplicates.values()) <= len(killed) * T8_CONCURRENCY
    assert after_rate >= 0.9 * pre_rate
    assert problems == []
