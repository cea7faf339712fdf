"""A worker process for fault tests, with a ground-truth log of its own.

Usage: python worker_proc.py CONFIG_JSON

CONFIG_JSON keys: url, queue, log (a file path), concurrency, lock_timeout,
sleep_min / sleep_max (seconds a handler sleeps), sleeps (a map of content
"kind" to the seconds its handler sleeps instead), outcomes (a map of content
"kind" to outcome: "success", "retry", "fail", "exit" (os._exit(1) in the
handler, after its sleep), "exit_at_once" (the same, before the sleep),
"dedup" (Success(backoff=5))), max_attempts, idle_backoff, failure_history
(the queue's failed-history bound), log_age (true: each start line also
carries the message's age in ms, Redis time from enqueue to hand-out, after
the pid), log_digest (true: each start line also carries the SHA-256 of the
content, last: of the bytes for bytes content, else of its msgpack encoding),
max_payload_bytes (the queue's payload cap, also the worker's decode cap),
log_file (a path: the "vermilion" logger's warnings and errors go there, one
"LEVEL message" line per record; with log_times true, "<unix time> LEVEL
message"), stats_file (a path: after a graceful stop
the worker's stats().counts go there as JSON), hold_until (a path: every
handler, after its sleep, waits until that file exists), clock_skew (seconds
added to time.time()/time_ns() and datetime.now()/utcnow()/today() in this
process, as faketime would; with the key given, even 0, a "clock <unix time>
<pid>" line, as the process sees it, is logged at start), die_at (a test hook: the process SIGKILLs
itself at one protocol step: "after_dequeue" (a dequeue reply that handed out
messages arrived, no handler started), "in_handler" (after the start line),
"before_ack" (an ack call is about to be sent), "after_ack" (an ack call's
reply arrived: the outcomes were applied)).

Every handling writes "start <mid> <attempt> <pid>" before the handler's work
and "end <mid> <attempt> <pid> <outcome>" after it, each with one unbuffered
O_APPEND write: a line is in the file once write() returns, so a SIGKILL
loses none that were written. That log, not Redis, says what was handled.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgpack

from vermilion import AsyncWorker, Failure, Message, Queue, Retry, Success
from vermilion._protocol import ScriptClient


def skew_clock(seconds: float) -> None:
    """Shift this process's wall clock by ``seconds`` (monotonic time is untouched)."""
    real_time, real_time_ns = time.time, time.time_ns
    shift = datetime.timedelta(seconds=seconds)

    class SkewedDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> SkewedDatetime:
            return super().now(tz) + shift

        @classmethod
        def utcnow(cls) -> SkewedDatetime:
            return super().utcnow() + shift

        @classmethod
        def today(cls) -> SkewedDatetime:
            return super().today() + shift

    time.time = lambda: real_time() + seconds
    time.time_ns = lambda: real_time_ns() + int(seconds * 1e9)
    datetime.datetime = SkewedDatetime  # type: ignore[misc]


def die_at(step: str) -> None:
    """Make this process SIGKILL itself at a protocol step (see the module docstring)."""

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if step == "after_dequeue":
        dequeue = ScriptClient.dequeue

        async def dequeue_then_die(self: ScriptClient, *args: Any, **kwargs: Any) -> Any:
            reply = await dequeue(self, *args, **kwargs)
            if reply.messages:
                die()
            return reply

        ScriptClient.dequeue = dequeue_then_die  # type: ignore[method-assign]
    elif step in ("before_ack", "after_ack"):
        ack = ScriptClient.ack

        async def ack_and_die(self: ScriptClient, *args: Any, **kwargs: Any) -> Any:
            if step == "before_ack":
                die()
            applied = await ack(self, *args, **kwargs)
            die()
            return applied

        ScriptClient.ack = ack_and_die  # type: ignore[method-assign]
    elif step != "in_handler":
        raise ValueError(f"unknown die_at step {step!r}")


class GroundTruth:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.pid = os.getpid()

    def write(self, line: str, extra: str = "") -> None:
        tail = f" {extra}" if extra else ""
        os.write(self.fd, f"{line} {self.pid}{tail}\n".encode())


async def main(config: dict[str, Any]) -> None:
    truth = GroundTruth(config["log"])
    if config.get("clock_skew") is not None:
        skew_clock(float(config["clock_skew"]))
        truth.write(f"clock {time.time():.3f}")
    if config.get("die_at"):
        die_at(config["die_at"])
    dies_in_handler = config.get("die_at") == "in_handler"
    hold_until = Path(config["hold_until"]) if config.get("hold_until") else None
    sleep_min = float(config.get("sleep_min", 0.0))
    sleep_max = float(config.get("sleep_max", 0.0))
    outcomes: dict[str, str] = config.get("outcomes", {})
    sleeps: dict[str, float] = {kind: float(value) for kind, value in config.get("sleeps", {}).items()}
    log_age = bool(config.get("log_age", False))
    log_digest = bool(config.get("log_digest", False))
    if config.get("log_file"):
        records = logging.FileHandler(config["log_file"])
        timed = "%(created).3f " if config.get("log_times") else ""
        records.setFormatter(logging.Formatter(f"{timed}%(levelname)s %(message)s"))
        records.setLevel(logging.WARNING)
        logging.getLogger("vermilion").addHandler(records)

    def extras(message: Message) -> str:
        fields = [f"{message.age * 1000:.0f}"] if log_age else []
        if log_digest:
            content = message.content
            data = content if isinstance(content, bytes) else msgpack.packb(content)
            fields.append(hashlib.sha256(data).hexdigest())
        return " ".join(fields)

    async def handler(message: Message) -> Success | Retry | Failure | None:
        truth.write(f"start {message.mid} {message.attempt}", extras(message))
        if dies_in_handler:
            os.kill(os.getpid(), signal.SIGKILL)
        kind = message.content.get("kind", "") if isinstance(message.content, dict) else ""
        action = outcomes.get(kind, "success")
        if action == "exit_at_once":
            os._exit(1)
        if kind in sleeps:
            await asyncio.sleep(sleeps[kind])
        elif sleep_max:
            await asyncio.sleep(random.uniform(sleep_min, sleep_max))
        while hold_until is not None and not hold_until.exists():  # noqa: ASYNC110 - another process's file
            await asyncio.sleep(0.02)
        if action == "exit":
            os._exit(1)
        result: Success | Retry | Failure | None = None
        if action == "retry" and message.attempt == 1:
            result = Retry(backoff=1.0)
        elif action == "fail":
            result = Failure("asked to fail")
        elif action == "dedup":
            result = Success(backoff=5.0)
        truth.write(f"end {message.mid} {message.attempt} {type(result).__name__}")
        return result

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    options: dict[str, Any] = {
        "concurrency": int(config.get("concurrency", 8)),
        "lock_timeout": float(config.get("lock_timeout", 2.0)),
        "monitor": None,
    }
    if config.get("max_attempts"):
        options["max_attempts"] = int(config["max_attempts"])
    if config.get("idle_backoff") is not None:
        options["idle_backoff"] = float(config["idle_backoff"])
    queue_options: dict[str, Any] = {}
    if config.get("failure_history") is not None:
        queue_options["failure_history"] = int(config["failure_history"])
    if config.get("max_payload_bytes") is not None:
        queue_options["max_payload_bytes"] = int(config["max_payload_bytes"])
    async with (
        Queue(config["queue"], config["url"], **queue_options) as queue,
        AsyncWorker(queue, handler, **options) as worker,
    ):
        print("ready", flush=True)  # noqa: T201 - the parent waits for this line
        await stop.wait()
    if config.get("stats_file"):
        Path(config["stats_file"]).write_text(json.dumps(worker.stats().counts))  # noqa: ASYNC240 - at exit


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
