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

from vermilion import Queue
from vermilion._keys import KEY_PARTS, QueueKeys
from vermilion._scripts import _read as read_lua

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


def _texts(values: Any) -> set[str]:
    return {_text(value) for value in values}


# One read-only script that reads every part the audit checks, and the counts
# of counts.lua, in one atomic step. A script flagged no-writes also runs while
# memory is over maxmemory (T12), where MULTI refuses to queue commands.
_SNAPSHOT_SOURCE = "\n".join(
    [
        "#!lua flags=no-writes",
        read_lua("_common"),
        "local function counts()",
        read_lua("counts").partition("\n")[2],
        "end",
        "return {redis.call('HKEYS', K_MESSAGES), redis.call('LRANGE', K_READY, 0, -1),",
        "  redis.call('ZRANGE', K_DELAYED, 0, -1), redis.call('ZRANGE', K_LOCKS, 0, -1),",
        "  redis.call('HKEYS', K_LEASES), redis.call('ZRANGE', K_DONE, 0, -1), counts()}",
    ]
)


async def audit(client: aioredis.Redis, name: str, *, atomic: bool = False) -> list[str]:
    """Check the invariants of _common.lua on a queue's keys; returns the violations.

    With ``atomic=True`` the parts and the counts are read by one read-only script,
    a snapshot that workers and producers cannot change halfway: use it while
    the queue is under load.
    """
    keys = QueueKeys.for_queue(name)
    problems: list[str] = []
    counts: list[Any] | None = None
    if atomic:
        snapshot = await client.execute_command(  # type: ignore[no-untyped-call]
            "EVAL_RO", _SNAPSHOT_SOURCE, len(keys.keys), *keys.keys
        )
        raw_messages, raw_ready, raw_delayed, raw_locks, raw_leases, raw_done, counts = snapshot
    else:
        raw_messages = await client.hkeys(keys.key("messages"))
        raw_ready = await client.lrange(keys.key("ready"), 0, -1)
        raw_delayed = await client.zrange(keys.key("delayed"), 0, -1)
        raw_locks = await client.zrange(keys.key("locks"), 0, -1)
        raw_leases = await client.hkeys(keys.key("leases"))
        raw_done = await client.zrange(keys.key("done"), 0, -1)
    messages = _texts(raw_messages)
    ready_list = [_text(m) for m in raw_ready]
    delayed = _texts(raw_delayed)
    locks = _texts(raw_locks)
    leases = _texts(raw_leases)
    done = _texts(raw_done)
    ready = set(ready_list)
    if len(ready) != len(ready_list):
        dupes = [m for m, n in collections.Counter(ready_list).items() if n > 1]
        problems.append(f"mids twice in ready: {dupes[:5]}")
    for mid in messages:
        places = (mid in ready) + (mid in delayed) + (mid in locks)
        if places != 1:
            problems.append(f"live mid {mid} is in {places} of ready/delayed/locks")
    for place, members in (("ready", ready), ("delayed", delayed), ("locks", locks)):
        strays = members - messages
        if strays:
            problems.append(f"{place} holds mids without a message: {sorted(strays)[:5]}")
    if leases != locks:
        problems.append(f"leases and locks differ: {sorted(leases ^ locks)[:5]}")
    if done & messages:
        problems.append(f"mids both done and live: {sorted(done & messages)[:5]}")
    prefix = f"vermilion:{{{name}}}:"
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        part = _text(key)[len(prefix) :]
        if part not in KEY_PARTS:
            problems.append(f"unknown key part {part!r}")
    if counts is not None:
        live = sum(int(count) for count in counts[:3])
        if live != len(messages):
            problems.append(f"counts {counts} do not add up to {len(messages)} live messages")
        return problems
    async with Queue(name, redis=client) as queue:
        status = await queue.status()
    if status.nqueued + status.nlocked + status.nbackoff != len(messages):
        problems.append(f"status counts {status} do not add up to {len(messages)} live messages")
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
