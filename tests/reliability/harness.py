"""Worker processes, their ground-truth log, and the audit of a queue's keys."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from tests.layout import OVERRIDES, POINTER, decode_entry, decode_record
from vermilion import Queue
from vermilion._keys import KEY_PARTS, QueueKeys
from vermilion._scripts import _read as read_lua, _with_includes as with_includes

WORKER_PROC = Path(__file__).with_name("worker_proc.py")


class WorkerProcess:
    """One worker_proc.py subprocess; all of a test's workers share one log file."""

    def __init__(self, log: Path, **config: Any) -> None:
        self.config = {"log": str(log), **config}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER_PROC), json.dumps(self.config)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.process.stdout.readline()  # blocks until "ready" or exit
        if line.strip() != b"ready" or time.monotonic() > deadline:
            self.process.kill()
            self.process.wait()  # reaped and closed here, not by a later test's garbage collection
            self.process.stdout.close()
            raise RuntimeError(f"worker did not start: {line!r}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL after ``timeout``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def whole_lines(path: Path) -> list[str]:
    """The lines of a log that a worker process appends to, without a last one still being
    written (a reader can see part of a write in progress; it is whole on the next read)."""
    text = path.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


@dataclass
class Truth:
    """What the worker processes logged: the ground truth of handling."""

    starts: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: collections.defaultdict(list))
    ends: dict[str, list[tuple[int, int, str]]] = field(default_factory=lambda: collections.defaultdict(list))

    @classmethod
    def read(cls, path: Path) -> Truth:
        truth = cls()
        if not path.exists():
            return truth
        for line in whole_lines(path):
            parts = line.split()
            if parts[0] == "start":
                truth.starts[parts[1]].append((int(parts[2]), int(parts[3])))
            elif parts[0] == "end":
                truth.ends[parts[1]].append((int(parts[2]), int(parts[4]), parts[3]))
        return truth

    def handled(self) -> set[str]:
        return {mid for mid, ends in self.ends.items() if ends}

    def duplicates(self) -> dict[str, int]:
        """Mids whose handling ended more than once (a retry's two ends are not duplicates)."""
        extra = {}
        for mid, ends in self.ends.items():
            finals = [end for end in ends if end[2] != "Retry"]
            if len(finals) > 1:
                extra[mid] = len(finals) - 1
        return extra


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# One read-only script that reads every part the audit checks, and the counts
# of counts.lua, in one atomic step. A script flagged no-writes also runs while
# memory is over maxmemory (T12), where MULTI refuses to queue commands.
_SNAPSHOT_SOURCE = "\n".join(
    [
        "#!lua flags=no-writes",
        read_lua("_common"),
        "local function counts()",
        with_includes(read_lua("counts").partition("\n")[2]),
        "end",
        "local function history()",
        "  local total = 0",
        "  for _, v in ipairs(redis.call('HVALS', K_ERRORS)) do total = total + #v end",
        "  return {redis.call('HKEYS', K_ERRORS), total, redis.call('HGET', K_META, 'failed_bytes') or ''}",
        "end",
        "return {redis.call('SMEMBERS', K_MIDS), redis.call('LRANGE', K_READY, 0, -1),",
        "  redis.call('HGETALL', K_RECORDS), redis.call('ZRANGE', K_DELAYED, 0, -1),",
        "  redis.call('ZRANGE', K_LOCKS, 0, -1), redis.call('ZRANGE', K_DONE, 0, -1),",
        "  redis.call('ZRANGE', K_FAILED, 0, -1), redis.call('HKEYS', K_REQUEUE), counts(), history()}",
    ]
)


def locks_key(name: str) -> str:
    """The name of a queue's lease sorted set, for tests that read it directly."""
    return QueueKeys.for_queue(name).key("locks").decode()


async def audit(client: aioredis.Redis, name: str, *, atomic: bool = False) -> list[str]:
    """Check the invariants of _common.lua on a queue's keys; returns the violations.

    With ``atomic=True`` the parts and the counts are read by one read-only script,
    a snapshot that workers and producers cannot change halfway: use it while
    the queue is under load.
    """
    keys = QueueKeys.for_queue(name)
    counts: list[Any] | None = None
    if atomic:
        snapshot = await client.execute_command(  # type: ignore[no-untyped-call]
            "EVAL_RO", _SNAPSHOT_SOURCE, len(keys.keys), *keys.keys
        )
        (
            raw_mids,
            raw_ready,
            flat_records,
            raw_delayed,
            raw_locks,
            raw_done,
            raw_failed,
            raw_requeue,
            counts,
            (raw_errors, error_bytes, failed_bytes),
        ) = snapshot
        records = dict(zip(flat_records[::2], flat_records[1::2], strict=True))
    else:
        raw_mids = await client.smembers(keys.key("mids"))
        raw_ready = await client.lrange(keys.key("ready"), 0, -1)
        records = await client.hgetall(keys.key("records"))
        raw_delayed = await client.zrange(keys.key("delayed"), 0, -1)
        raw_locks = await client.zrange(keys.key("locks"), 0, -1)
        raw_done = await client.zrange(keys.key("done"), 0, -1)
        raw_failed = await client.zrange(keys.key("failed"), 0, -1)
        raw_requeue = await client.hkeys(keys.key("requeue"))
        raw_errors = await client.hkeys(keys.key("errors"))
        error_bytes = sum(len(value) for value in await client.hvals(keys.key("errors")))
        failed_bytes = await client.hget(keys.key("meta"), "failed_bytes") or ""
    problems = layout_problems(
        set(raw_mids), raw_ready, records, set(raw_delayed), set(raw_locks), set(raw_done), set(raw_failed)
    )
    problems += history_problems(set(raw_failed), set(raw_errors), error_bytes, int(failed_bytes or 0))
    live_count = len(set(raw_mids) - set(raw_done) - set(raw_failed))
    strays = set(raw_requeue) - (set(raw_mids) - set(raw_failed))
    if strays:
        problems.append(f"pending requeues of mids neither live nor done: {sorted(strays)[:5]}")
    prefix = f"vermilion:{{{name}}}:v2:"
    async for key in client.scan_iter(match=f"vermilion:{{{name}}}:*", count=1000):
        text = _text(key)
        part = text[len(prefix) :] if text.startswith(prefix) else None
        if part is not None and (part == "workers" or part.startswith("worker:")):
            problems.extend(await presence_problems(client, text, part))
        elif part not in KEY_PARTS:
            problems.append(f"unknown key {text!r}")
    if counts is not None:
        live = sum(int(count) for count in counts[:3])
        if live != live_count:
            problems.append(f"counts {counts} do not add up to {live_count} live messages")
        return problems
    async with Queue(name, redis=client) as queue:
        status = await queue.status()
    if status.nqueued + status.nlocked + status.nbackoff != live_count:
        problems.append(f"status counts {status} do not add up to {live_count} live messages")
    return problems


async def presence_problems(client: aioredis.Redis, key: str, part: str) -> list[str]:
    """A worker's presence record must be a string that expires; the index, a sorted set."""
    kind = _text(await client.type(key))
    if part == "workers":
        return [] if kind in ("zset", "none") else [f"presence index {key!r} is a {kind}"]
    if kind == "none":
        return []  # expired since the SCAN
    ttl = await client.pttl(key)
    return [] if kind == "string" and ttl > 0 else [f"presence record {key!r}: a {kind}, TTL {ttl} ms"]


def history_problems(
    failed: set[bytes], errors: set[bytes], error_bytes: int, failed_bytes: int
) -> list[str]:
    """The failure history's invariants: a record for exactly each failed mid, and
    ``meta``'s byte total equal to their lengths."""
    problems: list[str] = []
    if failed != errors:
        problems.append(
            f"failed mids without a record or records without a failure: {sorted(failed ^ errors)[:5]}"
        )
    if failed_bytes != error_bytes:
        problems.append(f"meta failed_bytes is {failed_bytes}, the failure records hold {error_bytes} bytes")
    return problems


def layout_problems(
    mids: set[bytes],
    ready_entries: list[bytes],
    records: dict[bytes, bytes],
    delayed: set[bytes],
    locks: set[bytes],
    done: set[bytes],
    failed: set[bytes],
) -> list[str]:
    """The invariants of lua/_common.lua that these contents break (empty: none)."""
    problems: list[str] = []
    if (done | failed) - mids:
        problems.append(f"done or failed mids missing from mids: {sorted((done | failed) - mids)[:5]}")
    if done & failed:
        problems.append(f"mids both done and failed: {sorted(done & failed)[:5]}")
    live = mids - done - failed
    entries = [decode_entry(raw) for raw in ready_entries]
    ready_list = [entry.mid.encode() for entry in entries]
    ready = set(ready_list)
    if len(ready) != len(ready_list):
        dupes = [m for m, n in collections.Counter(ready_list).items() if n > 1]
        problems.append(f"mids twice in ready: {dupes[:5]}")
    for mid in live:
        places = (mid in ready) + (mid in delayed) + (mid in locks)
        if places != 1:
            problems.append(f"live mid {mid!r} is in {places} of ready/delayed/locks")
    for place, members in (("ready", ready), ("delayed", delayed), ("locks", locks)):
        if members - live:
            problems.append(f"{place} holds mids not live: {sorted(members - live)[:5]}")
    states = {b"r": ready, b"d": delayed, b"l": locks}
    for mid, raw in records.items():
        found = decode_record(raw)
        if mid not in states[found.state.encode()]:
            problems.append(f"record of {mid!r} says {found.state!r}, which its place does not")
        if (found.token != 0) != (found.state == "l"):
            problems.append(f"record of {mid!r} in state {found.state!r} has token {found.token}")
    problems.extend(
        f"delayed or leased mid {mid!r} has no record" for mid in (delayed | locks) - records.keys()
    )
    for entry in entries:
        mid = entry.mid.encode()
        held = decode_record(records[mid]) if mid in records else None
        if entry.kind == POINTER and (held is None or held.flags & OVERRIDES):
            problems.append(f"pointer to {mid!r} without its record")
        if entry.kind != POINTER and held is not None and not held.flags & OVERRIDES:
            problems.append(f"fresh entry of {mid!r} beside a record that does not override it")
    return problems


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll until ``predicate`` holds; returns the seconds it took, fails after ``timeout``."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def record(name: str, figures: dict[str, Any]) -> None:
    """Keep a run's figures as JSON where VERMILION_RELIABILITY_RESULTS points (for the docs)."""
    directory = os.environ.get("VERMILION_RELIABILITY_RESULTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str))
