"""A worker process for fault tests, with a ground-truth log of its own.

Usage: python worker_proc.py CONFIG_JSON

CONFIG_JSON keys: url, queue, log (a file path), concurrency, lock_timeout,
sleep_min / sleep_max (seconds a handler sleeps), outcomes (a map of content
"kind" to outcome: "success", "retry", "fail", "exit" (os._exit(1) in the
handler), "dedup" (Success(backoff=5))), max_attempts, idle_backoff.

Every handling writes "start <mid> <attempt> <pid>" before the handler's work
and "end <mid> <attempt> <pid> <outcome>" after it, each with one unbuffered
O_APPEND write: a line is in the file once write() returns, so a SIGKILL
loses none that were written. That log, not Redis, says what was handled.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from typing import Any

from vermilion import AsyncWorker, Failure, Message, Queue, Retry, Success


class GroundTruth:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.pid = os.getpid()

    def write(self, line: str) -> None:
        os.write(self.fd, f"{line} {self.pid}\n".encode())


async def main(config: dict[str, Any]) -> None:
    truth = GroundTruth(config["log"])
    sleep_min = float(config.get("sleep_min", 0.0))
    sleep_max = float(config.get("sleep_max", 0.0))
    outcomes: dict[str, str] = config.get("outcomes", {})

    async def handler(message: Message) -> Success | Retry | Failure | None:
        truth.write(f"start {message.mid} {message.attempt}")
        if sleep_max:
            await asyncio.sleep(random.uniform(sleep_min, sleep_max))
        kind = message.content.get("kind", "") if isinstance(message.content, dict) else ""
        action = outcomes.get(kind, "success")
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
    async with Queue(config["queue"], config["url"]) as queue, AsyncWorker(queue, handler, **options):
        print("ready", flush=True)  # noqa: T201 - the parent waits for this line
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
