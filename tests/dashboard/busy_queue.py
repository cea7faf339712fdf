"""A busy queue for the browser tests and the screenshot: a producer and a worker in one process.

Usage: ``python -m tests.dashboard.busy_queue URL QUEUE``. Enqueues about 40
messages a second (one in ten fails), handles them with a worker announcing
itself every half second, prints ``ready`` once started, and runs until
SIGTERM.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys

from vermilion import AsyncWorker, Failure, Message, Queue, Retry, Success

RATE = 40.0  # messages enqueued per second


async def handle(message: Message) -> Success | Retry | Failure:
    await asyncio.sleep(random.uniform(0.002, 0.03))
    content = message.content
    if isinstance(content, dict) and "fail" in content:
        return Failure(str(content["fail"]))
    if message.attempt == 1 and random.random() < 0.05:
        return Retry(backoff=0.2)
    return Success()


async def produce(queue: Queue) -> None:
    n = 0
    while True:
        n += 1
        content: object = (
            {"order": n, "fail": f"card declined for order {n}"} if n % 10 == 0 else {"order": n}
        )
        await queue.enqueue(content)
        # An uneven load, so that the plots have something to show.
        await asyncio.sleep(random.expovariate(RATE * (1.5 if (n // 200) % 2 else 0.6)))


async def main(url: str, name: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Queue(name, url) as queue, AsyncWorker(queue, handle, concurrency=8, presence_interval=0.5):
        producer = asyncio.create_task(produce(queue))
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await stop.wait()
        producer.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
