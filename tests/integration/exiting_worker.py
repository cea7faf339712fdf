"""A worker process whose handler raises SystemExit or KeyboardInterrupt.

Usage: python exiting_worker.py URL QUEUE SystemExit|KeyboardInterrupt
"""

from __future__ import annotations

import asyncio
import logging
import sys

from vermilion import AsyncWorker, Message, Queue


async def main(url: str, name: str, raised: str) -> None:
    async def handler(message: Message) -> None:
        if raised == "SystemExit":
            raise SystemExit(3)
        raise KeyboardInterrupt

    async with Queue(name, url) as queue, AsyncWorker(queue, handler, lock_timeout=1.0, monitor=None):
        await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
