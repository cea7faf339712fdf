"""A worker process for crash tests: prints each mid it starts, then hangs.

Usage: python crash_worker.py URL QUEUE LOCK_TIMEOUT [PRESENCE_INTERVAL]
Prints "ready WORKER_ID" once it runs.
"""

from __future__ import annotations

import asyncio
import sys

from vermilion import AsyncWorker, Message, Queue


async def main(url: str, name: str, lock_timeout: float, presence_interval: float) -> None:
    async def handler(message: Message) -> None:
        print(f"started {message.mid} attempt {message.attempt}", flush=True)
        await asyncio.sleep(3600)

    async with (
        Queue(name, url) as queue,
        AsyncWorker(
            queue, handler, lock_timeout=lock_timeout, monitor=None, presence_interval=presence_interval
        ) as worker,
    ):
        print(f"ready {worker.id}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    presence_interval = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), presence_interval))
