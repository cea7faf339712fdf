"""A worker process for crash tests: prints each mid it starts, then hangs.

Usage: python crash_worker.py URL QUEUE LOCK_TIMEOUT
"""

from __future__ import annotations

import asyncio
import sys

from vermilion import AsyncWorker, Message, Queue


async def main(url: str, name: str, lock_timeout: float) -> None:
    async def handler(message: Message) -> None:
        print(f"started {message.mid} attempt {message.attempt}", flush=True)
        await asyncio.sleep(3600)

    async with (
        Queue(name, url) as queue,
        AsyncWorker(queue, handler, lock_timeout=lock_timeout, monitor=None),
    ):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
