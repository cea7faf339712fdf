"""T12-T19: memory limits, eviction, damaged keys, Redis down, big and hostile payloads, bad input.

Plan §5 (Redis-side faults; payloads and input). Each test starts its own
servers on free loopback ports; sizes are the CI ones unless
VERMILION_CHAOS=full. Where a pass figure cannot be met by the library as it
is, the test keeps the figure and fails: the defect is the library's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import math
import random
import re
import socket
import statistics
import string
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, event, given, settings, strategies as st

from tests.layout import POINTER, decode_entry, encode_fresh
from tests.reliability.conftest import ServerFactory, WorkerFactory
from tests.reliability.harness import Truth, audit, eventually, record, whole_lines
from tests.reliability.proxy import FaultProxy
from tests.reliability.servers import KINDS, FaultServer, binary, chaos_seconds, chaos_size, free_port
from vermilion import (
    AsyncWorker,
    Message,
    OutcomeUnknownError,
    ProtocolError,
    Queue,
    ScriptError,
    VermilionConnectionError,
    VermilionError,
    clear_queues,
)
from vermilion._keys import KEY_PARTS, QueueKeys
from vermilion._transport import Transport
from vermilion._wire import OutcomeRequest

MIB = 1024 * 1024


# -- helpers -------------------------------------------------------------------------------


async def info_fields(client: aioredis.Redis, section: str) -> dict[str, Any]:
    fields: dict[str, Any] = await client.info(section)
    return fields


async def oom_errors(client: aioredis.Redis) -> int:
    """How many OOM error replies the server has sent since it started."""
    stats = await info_fields(client, "errorstats")
    return int(stats.get("errorstat_OOM", {}).get("count", 0))


async def used_memory(client: aioredis.Redis) -> tuple[int, int]:
    """(used_memory, maxmemory) in bytes."""
    memory = await info_fields(client, "memory")
    return int(memory["used_memory"]), int(memory["maxmemory"])


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes, from /proc/<pid>/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


async def queue_keys(client: aioredis.Redis, name: str) -> list[bytes]:
    return sorted([key async for key in client.scan_iter(match=f"vermilion:{{{name}}}:*", count=1000)])


async def live_count(client: aioredis.Redis, name: str) -> int:
    """How many messages of the queue are live (queued, delayed or leased).

    Protocol version 1 kept each live message's payload in `messages` (HLEN);
    version 2 keeps every mid it knows in `mids`, the done and failed among them.
    """
    keys = QueueKeys.for_queue(name)
    async with client.pipeline(transaction=False) as pipe:
        pipe.scard(keys.key("mids"))
        pipe.zcard(keys.key("done"))
        pipe.zcard(keys.key("failed"))
        known, done, failed = await pipe.execute()
    return int(known) - int(done) - int(failed)


async def stored_mids(client: aioredis.Redis, name: str) -> set[str]:
    """The mids whose message is still stored: in a record, or in a fresh entry of `ready`.

    The counterpart of protocol version 1's `messages` hash under eviction, where any
    key (`mids` included) may be gone: the payload's holder is what makes a message
    handleable.
    """
    keys = QueueKeys.for_queue(name)
    found = {text(mid) for mid in await client.hkeys(keys.key("records"))}
    for raw in await client.lrange(keys.key("ready"), 0, -1):
        entry = decode_entry(raw)
        if entry.kind != POINTER:
            found.add(entry.mid)
    return found


def start_digests(truth_log: Path) -> dict[str, list[str]]:
    """mid -> the content digests its start lines carry (worker_proc's log_digest)."""
    digests: dict[str, list[str]] = {}
    if truth_log.exists():
        for line in whole_lines(truth_log):
            parts = line.split()
            if parts[0] == "start":
                digests.setdefault(parts[1], []).append(parts[-1])
    return digests


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float) -> float | None:
    """Poll ``predicate`` every 20 ms; the seconds until it held, or None after ``timeout``.

    For figures that are recorded before they are asserted (eventually() fails at once).
    """
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > timeout:
            return None
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per command vermilion sends from this process (its one transport point).

    Counted in the client, so that a stray client of the server changes nothing.
    """
    sent: list[int] = []
    send_once = Transport._send_once

    async def counting(self: Transport, *args: Any, **kwargs: Any) -> Any:
        sent.append(1)
        return await send_once(self, *args, **kwargs)

    monkeypatch.setattr(Transport, "_send_once", counting)
    return sent


def oom_named(exc: BaseException) -> bool:
    return re.search(r"\bOOM\b|out of memory", str(exc), re.IGNORECASE) is not None


# -- T12: OOM under noeviction -------------------------------------------------------------

T12_MAXMEMORY_MB = chaos_size(12, 32)
T12_REFUSALS = chaos_size(10, 50)
T12_PAYLOAD = b"p" * 10_000


@pytest.mark.parametrize("kind", KINDS)
async def test_t12_oom_refuses_enqueues_whole_and_acks_still_drain(
    kind: str, fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path
) -> None:
    """T12: enqueue until refused under noeviction with two workers running.

    Pass: every refusal is a ScriptError naming OOM and leaves the keys clean
    (audited atomically after each one); while memory is over the limit the
    workers' acks still apply and memory falls below maxmemory; enqueues then
    succeed again; every accepted message is handled, none twice; no call of
    the workers was refused (the server's OOM error count equals the
    producer's refusals).
    """
    server = fault_server(
        kind, config={"maxmemory": f"{T12_MAXMEMORY_MB}mb", "maxmemory-policy": "noeviction"}
    )
    name = f"t12-{uuid.uuid4().hex[:8]}"
    client = server.client()
    for _ in range(2):
        worker_process(
            url=server.url, queue=name, concurrency=4, sleep_min=0.01, sleep_max=0.03, lock_timeout=10.0
        )
    accepted: list[str] = []
    refusals: list[VermilionError] = []
    audits: list[list[str]] = []
    async with Queue(name, server.url) as queue:
        # Fill in batches (a refused batch is refused whole), then one message at a time.
        while not refusals:
            try:
                results = await queue.enqueue_many([T12_PAYLOAD] * 20)
            except VermilionError as exc:
                refusals.append(exc)
                audits.append(await audit(client, name, atomic=True))
            else:
                accepted += [result.mid for result in results if result.ok]
        while len(refusals) < T12_REFUSALS:
            try:
                result = await queue.enqueue(T12_PAYLOAD)
            except VermilionError as exc:
                refusals.append(exc)
                audits.append(await audit(client, name, atomic=True))
            else:
                accepted.append(result.mid)

        # Hold memory over the limit for a while: lower maxmemory below what is used
        # by a quarter of the payloads still queued. Acks must keep applying meanwhile.
        start_count = await live_count(client, name)
        used, limit = await used_memory(client)
        await client.config_set("maxmemory", str(used - start_count * len(T12_PAYLOAD) // 4))
        over_limit_drained = 0
        probe_refused = False
        while True:
            used, limit = await used_memory(client)
            live = await live_count(client, name)
            if used <= limit:
                break
            over_limit_drained = start_count - live
            if not probe_refused:
                try:
                    await queue.enqueue(T12_PAYLOAD)
                except ScriptError as exc:
                    refusals.append(exc)
                    probe_refused = True
                else:
                    raise AssertionError("an enqueue was accepted while memory was over the limit")
            await asyncio.sleep(0.02)
        assert probe_refused, "memory never was over the limit after lowering maxmemory"
        assert over_limit_drained >= 10, f"only {over_limit_drained} acks applied while over the limit"

        async def accepts() -> bool:
            try:
                result = await queue.enqueue(T12_PAYLOAD)
            except ScriptError as exc:
                refusals.append(exc)
                return False
            accepted.append(result.mid)
            return True

        recovered = await eventually(accepts, 30, "enqueues succeed again once memory fell below the limit")

        async def drained() -> bool:
            return Truth.read(truth_log).handled() >= set(accepted)

        await eventually(drained, 60, "every accepted message was handled")

        async def idle() -> bool:
            return await live_count(client, name) == 0

        await eventually(idle, 10, "the queue emptied")
        final_audit = await audit(client, name)
        server_ooms = await oom_errors(client)
    await client.aclose()

    truth = Truth.read(truth_log)
    record(
        f"t12-{kind}",
        {
            "maxmemory_mb": T12_MAXMEMORY_MB,
            "accepted": len(accepted),
            "refusals": len(refusals),
            "audits_after_refusals": len(audits),
            "dirty_audits": sum(1 for problems in audits if problems),
            "acks_applied_over_limit": over_limit_drained,
            "seconds_to_accept_again": round(recovered, 3),
            "lost": len(set(accepted) - truth.handled()),
            "duplicates": len(truth.duplicates()),
            "server_oom_errors": server_ooms,
            "refusal": str(refusals[0]),
        },
    )
    assert [problems for problems in audits if problems] == []
    assert final_audit == []
    assert set(accepted) - truth.handled() == set()  # 0 lost
    assert truth.duplicates() == {}
    assert server_ooms == len(refusals), "a worker's call was refused for OOM"
    assert all(isinstance(exc, ScriptError) for exc in refusals), refusals[:3]
    assert all(oom_named(exc) for exc in refusals), f"refusal does not name OOM: {refusals[0]}"


@pytest.mark.parametrize("kind", KINDS)
async def test_t12_leases_renew_while_over_the_limit(kind: str, fault_server: ServerFactory) -> None:
    """T12, the heartbeat: with memory full, extending a held lease succeeds (like acks).

    A heartbeat refused for OOM lets a long handler's lease lapse, and another
    worker handles the message a second time while memory is full.
    """
    server = fault_server(kind, config={"maxmemory": "8mb", "maxmemory-policy": "noeviction"})
    name = f"t12x-{uuid.uuid4().hex[:8]}"
    async with Queue(name, server.url) as queue:
        conn, keys = queue._protocol
        await queue.enqueue("held", mid="held")
        reply = await conn.dequeue(keys, 1, 60_000, 256)
        (leased,) = reply.messages

        async def fill() -> None:
            while True:
                await queue.enqueue(T12_PAYLOAD)

        with pytest.raises(ScriptError):
            await fill()
        renewed = await conn.extend(keys, [(leased.mid, leased.token, 60_000)])
        applied = await conn.ack(keys, [OutcomeRequest(leased.mid, leased.token, "s")], 100)
    assert applied == [True]
    assert renewed == [True], "extend was refused while memory was over the limit"


# -- T13: eviction policy ------------------------------------------------------------------

# One process: two queues on clients of their own, a producer and a worker. It
# prints nothing; the vermilion logger's records go to stderr, one line each.
T13_PROCESS = """
import asyncio, logging, sys
from vermilion import AsyncWorker, Queue

logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(message)s")

async def handler(message):
    return None

async def main(url):
    async with Queue("t13-a", url) as first, Queue("t13-b", url) as second:
        await first.enqueue("x")
        await second.enqueue("y")
        async with AsyncWorker(first, handler, monitor=None), AsyncWorker(second, handler, monitor=None):
            await first.status()
            await second.enqueue("z")

asyncio.run(main(sys.argv[1]))
"""
# Every policy Redis 7 and Valkey 9 know (a process each: about 0.2 s).
T13_POLICIES = (
    "allkeys-lru",
    "volatile-lru",
    "allkeys-lfu",
    "volatile-lfu",
    "allkeys-random",
    "volatile-random",
    "volatile-ttl",
    "noeviction",
)


@pytest.mark.parametrize("kind", KINDS)
async def test_t13_one_eviction_warning_per_process(kind: str, fault_server: ServerFactory) -> None:
    """T13: a process using a server that may evict warns exactly once, naming the policy.

    Each policy gets a fresh process with two queues (two clients), a producer
    and two workers; a noeviction server gets no warning at all.
    """
    server = fault_server(kind)
    client = server.client()
    warnings: dict[str, list[str]] = {}
    for policy in T13_POLICIES:
        await client.config_set("maxmemory-policy", policy)
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", T13_PROCESS, server.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        warnings[policy] = [line for line in run.stderr.splitlines() if "maxmemory-policy" in line]
    await client.aclose()
    for policy, lines in warnings.items():
        if policy == "noeviction":
            assert lines == [], lines
        else:
            assert len(lines) == 1, (policy, lines)
            assert lines[0].startswith("WARNING") and policy in lines[0], lines


T13_MESSAGES = chaos_size(2000, 10000)
T13_LEASE = 2.0
T13_IDLE_BACKOFF = 0.2
# The plan's "stranded" bound: present but not handed out within lease + idle_backoff + 1 s.
T13_NEW_WORK_WITHIN = T13_LEASE + T13_IDLE_BACKOFF + 1.0


async def test_t13_worker_survives_evicted_keys(
    fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path, tmp_path: Path
) -> None:
    """T13, forced eviction: allkeys-lru with a small maxmemory makes queue keys vanish.

    Pass: the worker keeps running and hands out new messages within lease +
    idle_backoff + 1 s, plus the time the surviving backlog ahead of them
    takes, once eviction stops (stale hints of evicted messages must not hold
    them up); its log stays bounded (one warning about the policy, at most
    one line per message lost to eviction, plus a few); the audit and
    status() report the damage instead of raising.
    """
    server = fault_server("redis", config={"maxmemory": "4mb", "maxmemory-policy": "allkeys-lru"})
    name = f"t13-{uuid.uuid4().hex[:8]}"
    worker_log = tmp_path / "worker.log"
    worker = worker_process(
        url=server.url,
        queue=name,
        concurrency=4,
        sleep_min=0.01,
        sleep_max=0.03,
        lock_timeout=T13_LEASE,
        idle_backoff=T13_IDLE_BACKOFF,
        log_file=str(worker_log),
    )
    client = server.client()
    accepted: list[str] = []
    producer_errors = 0
    async with Queue(name, server.url) as queue:
        # Faster than the worker drains, so that memory stays at the limit and
        # Redis keeps evicting (whichever queue keys were used least recently).
        for _ in range(T13_MESSAGES // 10):
            try:
                results = await queue.enqueue_many([T12_PAYLOAD] * 10)
            except VermilionError:
                producer_errors += 1
            else:
                accepted += [result.mid for result in results if result.ok]
            await asyncio.sleep(0.01)
        evicted = int((await info_fields(client, "stats"))["evicted_keys"])
        assert evicted > 0, "nothing was evicted: the fault did not happen"
        await client.config_set("maxmemory", "0")
        hints = await client.llen(QueueKeys.for_queue(name).key("ready"))
        messages_left = len(await stored_mids(client, name))
        after = [result.mid for result in await queue.enqueue_many([{"kind": "after"}] * 20)]

        async def handled_after() -> bool:
            return set(after) <= Truth.read(truth_log).handled()

        # The surviving messages ahead of the new ones: 30 ms each at most, four at a time.
        bound = T13_NEW_WORK_WITHIN + messages_left * 0.03 / 4
        t_after = await wait_for(handled_after, bound + 10)
        problems = await audit(client, name)
        status = await queue.status()
        content = await queue.content()
        live = await stored_mids(client, name)
    await client.aclose()
    alive = worker.alive()
    truth = Truth.read(truth_log)
    dropped = set(accepted) - truth.handled() - live
    lines = log_lines(worker_log)
    record(
        "t13-eviction",
        {
            "accepted": len(accepted),
            "producer_errors": producer_errors,
            "seconds_to_handle_new_messages": t_after,
            "bound_seconds": bound,
            "evicted_keys": evicted,
            "ready_hints_after_eviction": hints,
            "messages_after_eviction": messages_left,
            "dropped_mids": len(dropped),
            "stranded_live_mids": len(live),
            "audit_problems": problems[:10],
            "status": str(status),
            "content_entries": len(content),
            "log_lines": len(lines),
            "log_sample": lines[:20],
        },
    )
    assert alive, "the worker process exited"
    policy_lines = [line for line in lines if "maxmemory-policy" in line]
    assert len(policy_lines) == 1 and "allkeys-lru" in policy_lines[0], policy_lines
    assert len(lines) <= len(dropped) + len(live) + 20, lines[:40]
    assert t_after is not None and t_after <= bound, (
        f"new messages waited {t_after} s (bound {bound:.1f} s) behind {hints} ready hints"
        f" of which {hints - messages_left} or more were stale"
    )


# Protocol version 1's messages, leases, attempts, enqueued and due are parts of the
# records (and of the fresh entries of `ready`) now; seq is a field of `meta`.
T13_VANISHING = ("mids", "ready", "records", "locks", "meta", "notify")
T13_BACKLOG = 200
T13_IN_FLIGHT = 4


@pytest.mark.parametrize("part", T13_VANISHING)
async def test_t13_worker_survives_a_vanished_key(
    part: str, fault_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """T13, one key at a time: what eviction does, made deterministic (DEL of one part).

    Setup: 200 ready messages, 4 of them held in their handlers; then the part
    vanishes, the handlers return and 20 new messages arrive. Pass: the
    worker runs on without a single failed call (no error loop); the new
    messages are handed out within lease + idle_backoff + 1 s, plus a second
    for the valid backlog ahead of them; at most one log line per message of
    the queue; audit(), status() and content() report, none raises.
    """
    server = fault_server("redis")
    name = f"t13v-{uuid.uuid4().hex[:8]}"
    handled: list[str] = []
    release = asyncio.Event()

    async def handler(message: Message) -> None:
        handled.append(message.mid)
        if message.content == "held":
            await release.wait()

    client = server.client()
    async with Queue(name, server.url) as queue:
        await queue.enqueue_many(["held"] * T13_IN_FLIGHT + ["before"] * (T13_BACKLOG - T13_IN_FLIGHT))
        worker = AsyncWorker(
            queue,
            handler,
            concurrency=T13_IN_FLIGHT,
            lock_timeout=T13_LEASE / 2,
            idle_backoff=T13_IDLE_BACKOFF,
            monitor=None,
        )
        async with worker:

            async def held() -> bool:
                return len(handled) >= T13_IN_FLIGHT

            await eventually(held, 10, "the worker holds four messages")
            await client.delete(QueueKeys.for_queue(name).key(part))
            caplog.clear()
            release.set()
            after = {result.mid for result in await queue.enqueue_many(["after"] * 20)}

            async def new_work_handled() -> bool:
                return after <= set(handled)

            bound = T13_LEASE / 2 + T13_IDLE_BACKOFF + 1.0 + 1.0
            took = await wait_for(new_work_handled, bound + 10)
            problems = await audit(client, name)
            status = await queue.status()
            content = await queue.content()
            running = worker.running
            counts = worker.stats().counts
    await client.aclose()
    lines = [r for r in caplog.records if r.name == "vermilion" and r.levelno >= logging.WARNING]
    record(
        f"t13-vanished-{part}",
        {
            "seconds_to_handle_new_messages": took,
            "audit": problems[:5],
            "audit_problems": len(problems),
            "status": str(status),
            "content_entries": len(content),
            "log_lines": len(lines),
            "counts": counts,
        },
    )
    assert running
    assert {key: n for key, n in counts.items() if key.endswith("/error")} == {}, counts
    assert len(lines) <= T13_BACKLOG + len(after), [r.getMessage() for r in lines[:10]]
    assert took is not None and took <= bound, f"new messages waited {took} s (bound {bound} s)"


# -- T14: wrong-typed keys -----------------------------------------------------------------


async def t14_state(queue: Queue) -> dict[str, int]:
    """A queue with a message in every state; returns the lease tokens of the dequeued ones.

    ready-1, ready-2 ready; delayed-due (its delay over, not yet moved) and
    delayed-later; locked-live (lease running), locked-lapsed (lease over,
    not yet reclaimed); done-window (inside a de-dup window); failed (in the
    history); requeue (locked, with a pending requeue).
    """
    conn, keys = queue._protocol
    for mid in ("locked-live", "done-window", "failed", "requeue"):
        await queue.enqueue({"m": mid}, mid=mid)
    await queue.enqueue({"m": "lapsed"}, mid="locked-lapsed", lock_timeout=0.001)
    reply = await conn.dequeue(keys, 5, 3_600_000, 256)
    tokens = {leased.mid: leased.token for leased in reply.messages}
    assert set(tokens) == {"locked-live", "done-window", "failed", "requeue", "locked-lapsed"}
    done = OutcomeRequest("done-window", tokens["done-window"], "s", 3_600_000)
    failed = OutcomeRequest("failed", tokens["failed"], "f", 0, "boom")
    assert await conn.ack(keys, [done, failed], 100) == [True, True]
    await queue.enqueue({"m": "requeue-2"}, mid="requeue", can_requeue=True)
    await queue.enqueue_many([{"m": "ready-1"}, {"m": "ready-2"}], mids=["ready-1", "ready-2"])
    await queue.enqueue({"m": "due"}, mid="delayed-due", delay=0.05)
    await queue.enqueue({"m": "later"}, mid="delayed-later", delay=3600)

    async def settled() -> bool:  # the short delay and the 1 ms lease are over (server time)
        return await queue.message_status("delayed-due") == "queued"

    await eventually(settled, 5, "the short delay ended")
    return tokens


async def dump_keys(client: aioredis.Redis, keys: QueueKeys) -> dict[bytes, bytes | None]:
    return {key: await client.dump(key) for key in keys.keys}


async def key_contents(client: aioredis.Redis, keys: QueueKeys) -> dict[bytes, object]:
    """What each key holds, in a form that does not depend on how Redis laid it out.

    For comparing before and after a RESTORE: the DUMP of a set kept as a hash table
    (every set of strings on Redis 7.0, so `mids`) lists its members in bucket order,
    which a RESTORE of the same members need not reproduce.
    """
    contents: dict[bytes, object] = {}
    for key in keys.keys:
        kind = str(await client.type(key), "ascii")  # type: ignore[arg-type]
        if kind == "set":
            contents[key] = (kind, sorted(await client.smembers(key)))
        elif kind == "hash":
            contents[key] = (kind, sorted((await client.hgetall(key)).items()))
        else:
            contents[key] = (kind, await client.dump(key))
    return contents


async def restore_keys(client: aioredis.Redis, dumps: dict[bytes, bytes | None]) -> None:
    for key, value in dumps.items():
        if value is None:
            await client.delete(key)
        else:
            await client.restore(key, 0, value, replace=True)


ONE_NEW_MESSAGE = frozenset({"enqueue a new mid"})
"""The operations that take enqueue's one-new-message path (see enqueue.lua)."""
FAST_PATH_KEYS = frozenset({"mids", "ready", "notify"})
"""The keys that path touches, and so the only ones whose type it checks."""


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", ["locks", "records", "ready"])
async def test_t14_wrong_typed_key_fails_every_operation_before_any_write(
    target: str, kind: str, fault_server: ServerFactory
) -> None:
    """T14: one key of the queue holds a string; every operation fails cleanly.

    Each operation runs on the same damaged state (restored from DUMP before
    each). Pass: each raises a ProtocolError (no redis-py exception escapes)
    whose message names the queue, and every key of the queue, the damaged
    one included, is byte-identical afterwards (DUMP): the scripts fail before
    their first write. One exception, by design: enqueue's one-new-message path
    checks only the keys it writes, so with another key damaged it adds its
    message whole (and writes nothing else); the dequeue after it refuses. A
    worker polling the damaged queue keeps running, counts its failed polls and
    writes nothing either. clear() repairs.
    """
    server = fault_server(kind)
    name = f"t14-{target}-{uuid.uuid4().hex[:6]}"
    client = server.client()
    async with Queue(name, server.url) as queue:
        conn, keys = queue._protocol
        tokens = await t14_state(queue)
        await client.set(keys.key(target), b"not a " + target.encode())
        before = await dump_keys(client, keys)
        before_contents = await key_contents(client, keys)
        live, lapsed = tokens["locked-live"], tokens["locked-lapsed"]
        operations: dict[str, Callable[[], Awaitable[object]]] = {
            "enqueue a new mid": lambda: queue.enqueue("n", mid="new"),
            "enqueue a queued mid, can_update": lambda: queue.enqueue("n", mid="ready-1", can_update=True),
            "enqueue a delayed mid, reset_delay": lambda: queue.enqueue(
                "n", mid="delayed-later", reset_delay=True
            ),
            "enqueue a locked mid, can_requeue": lambda: queue.enqueue(
                "n", mid="locked-live", can_requeue=True
            ),
            "enqueue_many: a failed mid, then a new one": lambda: queue.enqueue_many(
                ["a", "b"], mids=["failed", "new-2"]
            ),
            "enqueue_many: a new mid, then a queued one": lambda: queue.enqueue_many(
                ["a", "b"], mids=["new-3", "ready-2"]
            ),
            "dequeue": lambda: conn.dequeue(keys, 10, 60_000, 256),
            "ack success": lambda: conn.ack(keys, [OutcomeRequest("locked-live", live, "s")], 100),
            "ack retry with backoff": lambda: conn.ack(
                keys, [OutcomeRequest("locked-live", live, "r", 1000)], 100
            ),
            "ack failure": lambda: conn.ack(keys, [OutcomeRequest("locked-live", live, "f", 0, "x")], 100),
            "ack of the lapsed lease": lambda: conn.ack(
                keys, [OutcomeRequest("locked-lapsed", lapsed, "s")], 100
            ),
            "extend": lambda: conn.extend(keys, [("locked-live", live, 60_000)]),
            "message_status": lambda: queue.message_status("ready-1"),
            "status": queue.status,
            "content": queue.content,
        }
        outcomes: dict[str, str] = {}
        failures: list[str] = []
        for label, operation in operations.items():
            await restore_keys(client, before)
            try:
                result = await operation()
            except Exception as exc:
                outcomes[label] = f"{type(exc).__name__}: {exc}"[:160]
                if not isinstance(exc, ProtocolError):
                    failures.append(f"{label}: raised {type(exc).__module__}.{type(exc).__name__}")
                elif name not in str(exc):
                    failures.append(f"{label}: the error does not name the queue: {exc}")
            else:
                outcomes[label] = f"succeeded: {result!r}"[:160]
                if not (label in ONE_NEW_MESSAGE and target not in FAST_PATH_KEYS):
                    failures.append(f"{label}: succeeded on a queue with a damaged {target!r} key")
            after = await key_contents(client, keys)
            changed = [
                key.decode().rsplit(":", 1)[1] for key in keys.keys if after[key] != before_contents[key]
            ]
            if label in ONE_NEW_MESSAGE and target not in FAST_PATH_KEYS:
                # Protocol v2's one-new-message path reads only the keys it writes: the
                # message is added whole, and the next dequeue refuses the damaged queue.
                if not {"mids", "ready"} <= set(changed) <= FAST_PATH_KEYS:
                    failures.append(f"{label}: wrote {changed}, not one whole message")
            elif changed:
                failures.append(f"{label}: wrote {changed}")

        # A worker on the damaged queue: polls fail, it runs on, writes nothing.
        await restore_keys(client, before)
        calls: list[str] = []

        async def handler(message: Message) -> None:
            calls.append(message.mid)

        async with AsyncWorker(queue, handler, idle_backoff=0.05, monitor=None) as worker:

            def polls() -> tuple[int, int]:
                counts = worker.stats().counts
                return counts.get("poll/error", 0), counts.get("sleep/end-of-queue", 0)

            async def polled_thrice() -> bool:
                return sum(polls()) >= 3

            await eventually(polled_thrice, 10, "the worker polled three times")
            running = worker.running
            failed_polls = polls()[0]
        if failed_polls == 0:
            failures.append("worker: no poll failed")
        after = await key_contents(client, keys)
        changed = [key.decode().rsplit(":", 1)[1] for key in keys.keys if after[key] != before_contents[key]]
        if changed:
            failures.append(f"worker: wrote {changed}")

        # clear() is the repair: it deletes the exact keys, whatever they hold.
        try:
            await queue.clear()
        except VermilionError as exc:
            failures.append(f"clear: raised {exc}")
        left = await queue_keys(client, name)
        if left != [keys.key("meta")]:
            failures.append(f"clear: left {left}")
    await client.aclose()
    record(f"t14-{kind}-{target}", {"outcomes": outcomes, "failures": failures})
    assert running and calls == []
    assert failures == [], "\n".join(failures)


# -- T15: Redis down at start and mid-run --------------------------------------------------

T15_DOWN_AT_START = chaos_seconds(10.0, 30.0)
T15_DOWN_MID_RUN = chaos_seconds(5.0, 30.0)
T15_RAMP = 3.0  # the backoff may start fast; from here on at most one attempt per second
T15_RECOVERY = 2.0  # first message handled within this long after Redis answers again
T15_GRACE = 0.5  # scheduling slack on a loaded 2-core machine, for the measured times
T15_CONNECT_TIMEOUT = 5.0  # a Queue built from a URL connects with this timeout
# Reconnecting is the client's business: one server kind in CI, both at full size.
T15_KINDS = KINDS if chaos_size(0, 1) else ("redis",)


def reconnect_figures(attempts: list[float], down: float, up: float) -> dict[str, Any]:
    """The worker's connection attempts while Redis was down, from the proxy's accept times."""
    during = [t for t in attempts if down <= t <= up]
    steady = [t for t in during if t >= down + T15_RAMP]
    # Gaps between attempts, counting the outage's start and end as bounds.
    gaps = [later - earlier for earlier, later in itertools.pairwise([down, *during, up])]
    steady_gaps = [later - earlier for earlier, later in itertools.pairwise(steady)]
    return {
        "down_seconds": round(up - down, 3),
        "attempts": len(during),
        "steady_attempts": len(steady),
        "steady_seconds": round(max(0.0, up - down - T15_RAMP), 3),
        "max_gap": round(max(gaps), 3),
        "steady_gaps": [round(gap, 3) for gap in steady_gaps],
    }


def check_reconnects(figures: dict[str, Any]) -> list[str]:
    problems = []
    if figures["steady_attempts"] > figures["steady_seconds"] * 1.0 + 1:
        problems.append(f"more than one attempt per second after {T15_RAMP} s: {figures}")
    if figures["max_gap"] > T15_RECOVERY + T15_GRACE:
        problems.append(f"the backoff is not capped at {T15_RECOVERY} s: {figures}")
    if len(figures["steady_gaps"]) >= 3 and statistics.pstdev(figures["steady_gaps"]) < 0.01:
        problems.append(f"the backoff is not jittered: {figures}")
    if figures["attempts"] == 0:
        problems.append("the worker never tried to reconnect")
    return problems


async def first_handled(truth_log: Path, mid: str, timeout: float) -> float | None:
    async def started() -> bool:
        return mid in Truth.read(truth_log).starts

    return await wait_for(started, timeout)


@pytest.mark.parametrize("kind", T15_KINDS)
async def test_t15_worker_started_while_redis_is_down_waits_for_it(
    kind: str,
    fault_proxy: Callable[[int], Awaitable[FaultProxy]],
    worker_process: WorkerFactory,  # after fault_proxy: workers stop before their proxy closes
    truth_log: Path,
) -> None:
    """T15, down at start: a worker starts with nothing behind its proxy; Redis comes later.

    Pass: the worker starts anyway ("queues fail fast, workers wait") and its
    loop never exits; its connection attempts back off to at most one per
    second, capped (no gap above 2 s) and jittered; the first message is
    handled within 2 s of Redis answering.
    """
    if binary(kind) is None:
        pytest.skip(f"no {kind} server binary here")
    server = FaultServer(kind)  # not started yet: Redis is down
    try:
        proxy = await fault_proxy(server.port)
        name = f"t15s-{uuid.uuid4().hex[:8]}"
        down = time.monotonic()
        try:
            worker = await asyncio.to_thread(worker_process, url=proxy.url, queue=name, concurrency=2)
        except RuntimeError as exc:
            pytest.fail(f"the worker could not start while Redis was down: {exc}")
        await asyncio.sleep(T15_DOWN_AT_START)  # the outage itself
        await asyncio.to_thread(server.start)
        up = time.monotonic()
        async with Queue(name, server.url) as queue:
            await queue.enqueue("first", mid="first")
            took = await first_handled(truth_log, "first", T15_RECOVERY + 10)
        alive = worker.alive()
    finally:
        server.stop()
    figures = reconnect_figures(proxy.accepted_at, down, up)
    record(f"t15-start-{kind}", {**figures, "first_handled_after_up": took, "alive": alive})
    assert alive, "the worker process exited"
    assert took is not None and took <= T15_RECOVERY + T15_GRACE, f"first message handled after {took} s"
    assert check_reconnects(figures) == []


@pytest.mark.parametrize("kind", T15_KINDS)
async def test_t15_worker_rides_out_redis_down_mid_run(
    kind: str,
    fault_server: ServerFactory,
    fault_proxy: Callable[[int], Awaitable[FaultProxy]],
    worker_process: WorkerFactory,  # after fault_proxy: workers stop before their proxy closes
    truth_log: Path,
) -> None:
    """T15, down mid-run: Redis is killed for 5 s [30 s full], then restarted on its port.

    Pass: meanwhile enqueue fails fast (a VermilionConnectionError, well
    within the connect timeout, that claims an unknown outcome only for the
    first call, the one whose pooled connection broke); the worker's
    reconnect attempts back off to at most one per second, capped and
    jittered; it never exits and handles the first message within 2 s of
    Redis answering again.
    """
    server = fault_server(kind)
    proxy = await fault_proxy(server.port)
    name = f"t15m-{uuid.uuid4().hex[:8]}"
    # In a thread: the proxy runs in this event loop, and the worker connects through it.
    worker = await asyncio.to_thread(worker_process, url=proxy.url, queue=name, concurrency=2)
    producer_errors: list[tuple[float, BaseException]] = []
    async with Queue(name, server.url) as queue:
        await queue.enqueue("warm-up", mid="warm-up")
        assert await first_handled(truth_log, "warm-up", 10) is not None
        server.kill()
        down = time.monotonic()
        while time.monotonic() - down < T15_DOWN_MID_RUN:  # the outage, producing all along
            started = time.monotonic()
            try:
                await queue.enqueue("lost")
            except VermilionError as exc:
                producer_errors.append((time.monotonic() - started, exc))
            else:
                raise AssertionError("an enqueue succeeded while Redis was down")
            await asyncio.sleep(0.5)
        await asyncio.to_thread(server.start)
        up = time.monotonic()
        await queue.enqueue("first", mid="first")
        took = await first_handled(truth_log, "first", T15_RECOVERY + 10)
    alive = worker.alive()
    figures = reconnect_figures(proxy.accepted_at, down, up)
    slowest = max(seconds for seconds, _ in producer_errors)
    kinds = sorted({type(exc).__name__ for _, exc in producer_errors})
    record(
        f"t15-mid-run-{kind}",
        {
            **figures,
            "first_handled_after_up": took,
            "alive": alive,
            "producer_failures": len(producer_errors),
            "producer_slowest_failure": slowest,
            "producer_errors": kinds,
        },
    )
    assert alive, "the worker process exited"
    # The first call may find its pooled connection broken after sending: that
    # outcome is unknown. Every later one finds nothing listening: nothing sent.
    assert all(isinstance(exc, VermilionConnectionError) for _, exc in producer_errors), kinds
    assert not any(isinstance(exc, OutcomeUnknownError) for _, exc in producer_errors[1:]), kinds
    assert slowest <= 1.0, f"an enqueue took {slowest} s to fail while nothing listened"
    assert took is not None and took <= T15_RECOVERY + T15_GRACE, f"first message handled after {took} s"
    assert check_reconnects(figures) == []


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: connection attempts hang (SYNs dropped)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_t15_enqueue_fails_within_its_connect_timeout() -> None:
    """T15, producers: with Redis down, enqueue fails fast and never hangs.

    Nothing listening: a VermilionConnectionError at once (under 1 s). A host
    that does not answer (connects hang): within the connect timeout of a
    Queue built from a URL (5 s), plus 1 s.
    """
    refused_port = free_port()  # nothing listens there
    async with Queue("t15-refused", f"redis://127.0.0.1:{refused_port}/0") as queue:
        started = time.monotonic()
        with pytest.raises(VermilionConnectionError) as refused:
            await queue.enqueue("x")
        refused_after = time.monotonic() - started
    with unanswered_port() as port:
        async with Queue("t15-hanging", f"redis://127.0.0.1:{port}/0") as queue:
            started = time.monotonic()
            with pytest.raises(VermilionConnectionError) as hanging:
                await queue.enqueue("x")
            hanging_after = time.monotonic() - started
    record(
        "t15-producer",
        {
            "refused_after": refused_after,
            "refused_error": repr(refused.value),
            "hanging_after": hanging_after,
            "hanging_error": repr(hanging.value),
        },
    )
    assert refused_after <= 1.0
    assert hanging_after <= T15_CONNECT_TIMEOUT + 1.0, f"enqueue took {hanging_after:.1f} s to fail"


# -- T17: big payloads ---------------------------------------------------------------------

T17_CAP = chaos_size(16, 64) * MIB
T17_SIZES = [1024, MIB, 16 * MIB] + ([64 * MIB] if T17_CAP >= 64 * MIB else [])
T17_P99_MS = 300.0

# A producer on a small queue that times each enqueue until a line arrives on
# stdin, then prints the latencies (ms) as JSON.
T17_SMALL_PRODUCER = """
import asyncio, json, sys, time
from vermilion import Queue

async def main(url, name):
    latencies = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_reader(sys.stdin.fileno(), stop.set)
    async with Queue(name, url) as queue:
        await queue.enqueue("warm-up")
        print("ready", flush=True)
        while not stop.is_set():
            started = time.perf_counter()
            await queue.enqueue({"n": len(latencies)})
            latencies.append((time.perf_counter() - started) * 1000)
    print(json.dumps(latencies), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def bin_content(size: int, seed: int) -> bytes:
    """Random bytes whose msgpack encoding (a bin) is exactly ``size`` bytes."""
    header = 2 if size - 2 < 256 else 3 if size - 3 < 65536 else 5
    content = random.Random(seed).randbytes(size - header)
    assert len(msgpack.packb(content)) == size
    return content


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


@contextlib.asynccontextmanager
async def small_producer(url: str, name: str) -> AsyncIterator[list[float]]:
    """Run T17_SMALL_PRODUCER in its own process; the list fills with its latencies at exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        T17_SMALL_PRODUCER,
        url,
        name,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=64 * MIB,  # the latencies come back as one JSON line
    )
    assert process.stdin is not None and process.stdout is not None
    latencies: list[float] = []
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.strip() == b"ready", line
        yield latencies
        process.stdin.write(b"stop\n")
        await process.stdin.drain()
        latencies += json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await process.wait()


async def test_t17_big_payloads_round_trip_and_the_cap_writes_nothing(
    fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path, sends: list[int]
) -> None:
    """T17: 1 KiB, 1 MiB, 16 MiB [and 64 MiB full], the last one at the cap; then cap + 1.

    Pass: every payload reaches the handler byte-identical (SHA-256); the
    over-cap enqueue raises ValueError before sending anything (0 keys, no
    command); the peak RSS (VmHWM) of the worker that handles the largest
    payload stays within 3 x that payload + 50 MiB; a small queue's enqueue
    p99 stays within 300 ms while the largest payload goes through.

    The largest payload goes to a fresh worker: what a payload costs is then
    not mixed with what the allocator kept of the earlier ones (glibc keeps
    freed heap below its dynamic trim threshold, up to 32 MiB). The peak of
    the first worker, which handled the smaller ones, is recorded too.
    """
    server = fault_server("redis")
    name = f"t17-{uuid.uuid4().hex[:8]}"
    options = {"url": server.url, "queue": name, "concurrency": 4, "max_payload_bytes": T17_CAP}
    worker = worker_process(**options, log_digest=True, lock_timeout=30)
    baseline_rss = proc_memory(worker.pid)["VmRSS"]
    first_worker_peak = 0
    client = server.client()
    digests: dict[str, str] = {}
    seconds: dict[int, float] = {}
    latencies: list[float] = []
    async with Queue(name, server.url, max_payload_bytes=T17_CAP) as queue:
        for index, size in enumerate(T17_SIZES):
            content = bin_content(size, index)
            mid = f"size-{size}"
            digests[mid] = hashlib.sha256(content).hexdigest()
            largest = size == T17_SIZES[-1]
            if largest:
                first_worker_peak = proc_memory(worker.pid)["VmHWM"]
                await asyncio.to_thread(worker.stop)
                worker = worker_process(**options, log_digest=True, lock_timeout=30)
            async with contextlib.AsyncExitStack() as stack:
                if largest:
                    latencies = await stack.enter_async_context(small_producer(server.url, f"{name}-small"))
                started = time.monotonic()
                await queue.enqueue(content, mid=mid)
                del content

                async def acked(mid: str = mid) -> bool:
                    return await queue.message_status(mid) is None

                await eventually(acked, 120, f"the {size}-byte message was handled")
                seconds[size] = time.monotonic() - started

        over_cap = bin_content(T17_CAP + 1, 99)
        before = await dump_keys(client, QueueKeys.for_queue(name))
        sends.clear()
        with pytest.raises(ValueError, match="max_payload_bytes") as refused:
            await queue.enqueue(over_cap, mid="over-cap")
        sent_for_over_cap = len(sends)
        after = await dump_keys(client, QueueKeys.for_queue(name))
    await client.aclose()
    peak_rss = proc_memory(worker.pid)["VmHWM"]
    received = start_digests(truth_log)
    record(
        "t17",
        {
            "cap": T17_CAP,
            "sizes": T17_SIZES,
            "seconds_per_size": seconds,
            "worker_baseline_rss_mib": round(baseline_rss / MIB, 1),
            "worker_peak_rss_mib": round(peak_rss / MIB, 1),
            "first_worker_peak_rss_mib": round(first_worker_peak / MIB, 1),
            "rss_bound_mib": round((3 * T17_SIZES[-1] + 50 * MIB) / MIB, 1),
            "small_enqueues": len(latencies),
            "small_p99_ms": percentile(latencies, 0.99) if latencies else None,
            "small_max_ms": max(latencies, default=None),
            "over_cap_error": str(refused.value),
            "commands_sent_for_over_cap": sent_for_over_cap,
        },
    )
    assert {mid: received.get(mid) for mid in digests} == {mid: [digest] for mid, digest in digests.items()}
    assert after == before  # every key of the queue byte-identical: no key written
    assert sent_for_over_cap == 0  # refused before anything was sent
    assert peak_rss <= 3 * T17_SIZES[-1] + 50 * MIB, f"worker peak RSS {peak_rss / MIB:.0f} MiB"
    assert len(latencies) >= 10, "the small producer hardly ran"
    assert percentile(latencies, 0.99) <= T17_P99_MS


# -- T18: hostile stored bytes -------------------------------------------------------------

T18_CAP = MIB  # the plan's "default 1 MiB cap" (vermilion's own default is 16 MiB)
T18_COPIES = chaos_size(1, 10)
T18_RSS_GROWTH = min(80 * T18_CAP, 100 * MIB)


def t18_cases() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(bytes that must fail to decode, bytes that decode and must round-trip)."""
    random_bytes = random.Random(18).randbytes(4096)
    with pytest.raises(ValueError):  # a precondition: these random bytes are not msgpack
        msgpack.unpackb(random_bytes)
    n_maps = 1_000_000  # "1 MiB of empty maps": a million, one byte each (1 MB, under the cap)
    hostile = {
        "truncated": msgpack.packb({"kind": "x", "data": "y" * 100})[:-3],
        "array-2-32": b"\xdd\xff\xff\xff\xff",
        "bin-4-gib": b"\xc6\xff\xff\xff\xff",
        "nested-100000": b"\x91" * 100_000 + b"\xc0",
        "empty-maps-stream": b"\x80" * n_maps,  # a million top-level maps: extra data
        "ext-42": msgpack.packb(msgpack.ExtType(42, b"payload")),
        "invalid-utf8-str": b"\xa3\xff\xfe\xfd",
        "random": random_bytes,
        "over-cap": msgpack.packb(b"x" * T18_CAP),
    }
    decodable = {
        "int-keys": msgpack.packb({1: 2, 3: [4]}),  # strict_map_key=False: it round-trips
        "empty-maps-array": b"\xdd" + n_maps.to_bytes(4, "big") + b"\x80" * n_maps,  # ~70x expansion
    }
    return hostile, decodable


async def replace_fresh_payloads(client: aioredis.Redis, name: str, raw: dict[str, bytes]) -> None:
    """Give each fresh message of `ready` named in ``raw`` those bytes as its payload, by hand
    (keeping its place, enqueue time and lease): what writing `messages` was in version 1."""
    key = QueueKeys.for_queue(name).key("ready")
    entries = await client.lrange(key, 0, -1)
    rewritten = []
    for entry_bytes in entries:
        entry = decode_entry(entry_bytes)
        if entry.kind != POINTER and entry.mid in raw:
            assert entry.enqueued_ms is not None
            entry_bytes = encode_fresh(entry.mid.encode(), entry.enqueued_ms, raw[entry.mid], entry.lock_ms)
        rewritten.append(entry_bytes)
    assert {decode_entry(e).mid for e in rewritten} >= set(raw), "a placeholder is not in ready"
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.rpush(key, *rewritten)
        await pipe.execute()


async def test_t18_hostile_stored_bytes_fail_once_without_the_handler(
    fault_server: ServerFactory, worker_process: WorkerFactory, truth_log: Path, tmp_path: Path
) -> None:
    """T18: raw bytes written straight in as the payloads (of the fresh entries in `ready`),
    under a 1 MiB decode cap.

    Pass: each hostile value ends `failed` with a decode reason after one
    attempt (one "cannot be decoded" log line) and 0 handler calls; valid
    msgpack that only looks odd (int map keys; an array of a million empty
    maps, within the cap) is handled once, byte-identical; normal messages
    before and after are handled; the worker lives; its RSS grows by at most
    min(80 x cap, 100 MiB).
    """
    server = fault_server("redis")
    name = f"t18-{uuid.uuid4().hex[:8]}"
    worker_log = tmp_path / "worker.log"
    worker = worker_process(
        url=server.url,
        queue=name,
        concurrency=4,
        max_payload_bytes=T18_CAP,
        log_digest=True,
        log_file=str(worker_log),
    )
    hostile, decodable = t18_cases()
    client = server.client()
    async with Queue(name, server.url, max_payload_bytes=T18_CAP) as queue:
        before = [result.mid for result in await queue.enqueue_many([{"kind": "normal"}] * 20)]

        async def handled(mids: list[str]) -> bool:
            return set(mids) <= Truth.read(truth_log).handled()

        await eventually(lambda: handled(before), 20, "normal messages were handled")
        baseline_rss = proc_memory(worker.pid)["VmRSS"]

        # The worker waits (SIGSTOP) while the raw bytes replace the placeholders.
        raw: dict[str, bytes] = {}
        for copy in range(T18_COPIES):
            raw |= {f"{case}-{copy}": data for case, data in {**hostile, **decodable}.items()}
        worker.pause()
        try:
            await queue.enqueue_many(["placeholder"] * len(raw), mids=list(raw))
            await replace_fresh_payloads(client, name, raw)
            after = [result.mid for result in await queue.enqueue_many([{"kind": "normal"}] * 20)]
        finally:
            worker.resume()

        await eventually(lambda: handled(after), 60, "normal messages after the hostile ones were handled")

        async def settled() -> bool:
            statuses = [await queue.message_status(mid) for mid in raw]
            return all(status in (None, "failed") for status in statuses)

        await eventually(settled, 30, "every hostile message settled")
        statuses = {mid: await queue.message_status(mid) for mid in raw}
        reasons = {failure.mid: failure.reason for failure in await queue.failed(limit=10_000)}
    await client.aclose()
    alive = worker.alive()
    growth = proc_memory(worker.pid)["VmHWM"] - baseline_rss
    truth = Truth.read(truth_log)
    digests = start_digests(truth_log)
    lines = log_lines(worker_log)
    failing = [mid for mid in raw if mid.rsplit("-", 1)[0] in hostile]
    passing = [mid for mid in raw if mid.rsplit("-", 1)[0] in decodable]
    decode_lines = {
        mid: sum(1 for line in lines if f"message '{mid}'" in line and "decoded" in line) for mid in raw
    }
    record(
        "t18",
        {
            "cap": T18_CAP,
            "copies": T18_COPIES,
            "reasons": {mid: reasons.get(mid) for mid in failing if mid.endswith("-0")},
            "statuses": {mid: statuses[mid] for mid in raw if mid.endswith("-0")},
            "worker_baseline_rss_mib": round(baseline_rss / MIB, 1),
            "worker_rss_growth_mib": round(growth / MIB, 1),
            "rss_growth_bound_mib": round(T18_RSS_GROWTH / MIB, 1),
            "log_lines": len(lines),
        },
    )
    assert alive
    assert {mid: statuses[mid] for mid in failing} == dict.fromkeys(failing, "failed")
    assert {mid: truth.starts.get(mid, []) for mid in failing} == {
        mid: [] for mid in failing
    }  # 0 handler calls
    assert {mid: decode_lines[mid] for mid in failing} == dict.fromkeys(failing, 1)  # one attempt each
    assert all("decode" in reasons[mid] or "max_payload_bytes" in reasons[mid] for mid in failing), reasons
    assert {mid: statuses[mid] for mid in passing} == dict.fromkeys(passing)  # handled, gone
    expected = {mid: [hashlib.sha256(decodable[mid.rsplit("-", 1)[0]]).hexdigest()] for mid in passing}
    assert {mid: digests.get(mid) for mid in passing} == expected
    assert growth <= T18_RSS_GROWTH, f"worker RSS grew {growth / MIB:.0f} MiB"


# -- T19: bad API input writes nothing -----------------------------------------------------

T19_SETTINGS = settings(
    max_examples=chaos_size(150, 2000),
    deadline=None,
    database=None,  # no .hypothesis directory in the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NAME_CHARS = string.ascii_letters + string.digits + "_.:-"
MAX_SECONDS = 10 * 365 * 24 * 3600.0
JUNK = st.one_of(st.none(), st.booleans(), st.binary(max_size=8), st.lists(st.integers(), max_size=2))
QUEUE_NAMES = st.one_of(
    st.text(alphabet=NAME_CHARS, min_size=1, max_size=8),
    st.text(alphabet=NAME_CHARS, min_size=195, max_size=205),
    st.text(alphabet=NAME_CHARS + "*?[]{}\\ \t\n\x00\x7fé🙂", max_size=12),
    st.text(max_size=12),
    st.integers(),
    st.floats(),
    JUNK,
)
MIDS = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="aé🙂", min_size=250, max_size=1100),
    st.builds(  # a lone surrogate: a str that is not Unicode text
        lambda a, s, b: a + s + b,
        st.text(max_size=3),
        st.sampled_from(["\ud800", "\udfff"]),
        st.text(max_size=3),
    ),
    st.integers(),
    JUNK,
)
DURATIONS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2.0, max_value=2.0),
    st.floats(min_value=MAX_SECONDS - 2, max_value=MAX_SECONDS + 2),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.timedeltas(),
    st.text(max_size=4),
    JUNK,
)


def valid_queue_name(name: object) -> bool:
    return (
        isinstance(name, str) and 0 < len(name) <= 200 and re.fullmatch(r"[A-Za-z0-9_.:-]+", name) is not None
    )


def valid_mid(mid: object) -> bool:
    if not isinstance(mid, str) or not mid:
        return False
    try:
        return len(mid.encode()) <= 1024
    except UnicodeEncodeError:
        return False


def valid_duration(value: object, *, allow_zero: bool = True, allow_none: bool = False) -> bool:
    if value is None:
        return allow_none
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        return False
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        return False
    return seconds <= MAX_SECONDS


def refused(exc: BaseException, argument: str) -> bool:
    return isinstance(exc, (TypeError, ValueError)) and argument in str(exc)


def would_be_keys(name: object) -> list[str]:
    """The keys a queue of this name would have (for names vermilion refuses too)."""
    return [f"vermilion:{{{name}}}:v2:{part}" for part in KEY_PARTS]


@pytest.fixture
async def t19_client(fault_server: ServerFactory) -> AsyncIterator[tuple[str, aioredis.Redis]]:
    server = fault_server("redis")
    client = server.client()
    yield server.url, client
    await client.aclose()


@given(name=QUEUE_NAMES)
@T19_SETTINGS
async def test_t19_bad_queue_names_are_refused_before_anything_is_sent(
    t19_client: tuple[str, aioredis.Redis], sends: list[int], name: Any
) -> None:
    """T19: a queue name is valid exactly when the docs say; a bad one raises, naming it, sending nothing."""
    url, client = t19_client
    sends.clear()
    error: BaseException | None = None
    try:
        queue = Queue(name, url)
    except (TypeError, ValueError) as exc:
        error = exc
    else:
        assert queue.name == name
        await queue.aclose()
    if error is not None:
        with pytest.raises((TypeError, ValueError), match="queue name"):
            await clear_queues(client, name)
    event("valid" if error is None else f"refused: {type(error).__name__}")
    if valid_queue_name(name):
        assert error is None
    else:
        assert error is not None and refused(error, "queue name"), error
        assert isinstance(error, TypeError) == (not isinstance(name, str))
        assert sends == [], "a command was sent for a refused queue name"
        assert await client.exists(*would_be_keys(name)) == 0


@given(mid=MIDS)
@T19_SETTINGS
async def test_t19_bad_mids_are_refused_before_anything_is_sent(
    t19_client: tuple[str, aioredis.Redis], sends: list[int], mid: Any
) -> None:
    """T19: enqueue, enqueue_many and message_status refuse a bad mid, naming it, sending nothing."""
    url, client = t19_client
    async with Queue("t19-mids", url) as queue:
        calls: dict[str, tuple[str, Callable[[], Awaitable[object]]]] = {
            "enqueue": ("mid", lambda: queue.enqueue("x", mid=mid)),
            "enqueue_many": ("mids[1]", lambda: queue.enqueue_many(["x", "y"], mids=["ok-mid", mid])),
            "message_status": ("mid", lambda: queue.message_status(mid)),
        }
        for call, (argument, operation) in calls.items():
            before = await dump_keys(client, QueueKeys.for_queue(queue.name))
            sends.clear()
            error: BaseException | None = None
            try:
                await operation()
            except (TypeError, ValueError) as exc:
                error = exc
            event(f"{call}: " + ("valid" if error is None else f"refused: {type(error).__name__}"))
            if valid_mid(mid) or (mid is None and call != "message_status"):  # None: a random mid
                assert error is None, (call, error)
            else:
                assert error is not None and refused(error, argument), (call, error)
                assert sends == [], f"{call} sent a command for a refused mid"
                assert await dump_keys(client, QueueKeys.for_queue(queue.name)) == before, call


@given(value=DURATIONS, which=st.sampled_from(["delay", "lock_timeout"]))
@T19_SETTINGS
async def test_t19_bad_enqueue_durations_are_refused_before_anything_is_sent(
    t19_client: tuple[str, aioredis.Redis], sends: list[int], value: Any, which: str
) -> None:
    """T19: enqueue's delay and lock_timeout: a bad one raises, naming it, sending nothing."""
    url, client = t19_client
    async with Queue("t19-durations", url) as queue:
        before = await dump_keys(client, QueueKeys.for_queue(queue.name))
        sends.clear()
        error: BaseException | None = None
        try:
            await queue.enqueue("x", **{which: value})
        except (TypeError, ValueError) as exc:
            error = exc
    event(f"{which}: " + ("valid" if error is None else f"refused: {type(error).__name__}"))
    if valid_duration(value, allow_zero=which == "delay", allow_none=which == "lock_timeout"):
        assert error is None, error
    else:
        assert error is not None and refused(error, which), error
        assert sends == [], f"a command was sent for a refused {which}"
        assert await dump_keys(client, QueueKeys.for_queue("t19-durations")) == before


WORKER_DURATIONS: dict[str, dict[str, bool]] = {
    "lock_timeout": {"allow_zero": False},
    "idle_backoff": {},
    "throttle": {"allow_none": True},
    "handler_timeout": {"allow_zero": False, "allow_none": True},
    "stop_timeout": {},
}


@given(
    value=st.one_of(DURATIONS, st.integers(min_value=-3, max_value=1003)),
    which=st.sampled_from([*WORKER_DURATIONS, "concurrency", "max_attempts"]),
)
@T19_SETTINGS
async def test_t19_bad_worker_options_are_refused(
    t19_client: tuple[str, aioredis.Redis], sends: list[int], value: Any, which: str
) -> None:
    """T19: AsyncWorker's durations, concurrency and max_attempts: a bad one raises, naming it."""
    url, _ = t19_client

    async def handler(message: Message) -> None:
        return None

    async with Queue("t19-worker", url) as queue:
        sends.clear()
        error: BaseException | None = None
        try:
            AsyncWorker(queue, handler, **{which: value})
        except (TypeError, ValueError) as exc:
            error = exc
    event(f"{which}: " + ("valid" if error is None else f"refused: {type(error).__name__}"))
    if which in WORKER_DURATIONS:
        valid = valid_duration(value, **WORKER_DURATIONS[which])
    else:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        valid = (is_int and 1 <= value <= (1000 if which == "concurrency" else value)) or (
            which == "max_attempts" and value is None
        )
    if valid:
        assert error is None, error
    else:
        assert error is not None and refused(error, which), error
    assert sends == []
