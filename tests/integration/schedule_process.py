"""A scheduler process for crash tests: runs the every-second schedule "crash" until killed.

Usage: python schedule_process.py URL QUEUE
Prints "ready" once its first pass reached Redis.
"""

from __future__ import annotations

import asyncio
import sys

from vermilion import Queue, schedule


async def main(url: str, name: str) -> None:
    async with Queue(name, url) as queue:
        item = schedule(queue, "crash", cron="* * * * * *")
        await item.tick()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await item.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
