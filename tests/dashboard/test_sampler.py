"""The dashboard's sampler on a real Redis: which queues one sample reads.

Other tests' queues share the server, so the assertions hold whatever else it
holds: they are about counts of reads, not about which foreign queues are read.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import redis.asyncio as aioredis

from tests.conftest import QueueFactory
from vermilion import Queue
from vermilion.dashboard._sampler import QueueSample, Sampler

MAX_READS = 3


class CountingSampler(Sampler):
    """A sampler that counts its reads of each queue."""

    def __init__(self, redis: aioredis.Redis, max_reads: int) -> None:
        # A long interval: the names are read at the first sample only (then every 5
        # intervals), so that every sample of a test reads from the same set of queues.
        super().__init__(redis, None, interval=10.0, history=600.0, owns_client=False, max_reads=max_reads)
        self.reads: Counter[str] = Counter()

    async def _read(self, queue: Queue) -> tuple[QueueSample, str | None]:
        self.reads[queue.name] += 1
        return await super()._read(queue)


async def test_a_sample_reads_the_watched_queues_and_at_most_max_reads_others(
    make_queue: QueueFactory, redis: aioredis.Redis
) -> None:
    ours = [await make_queue() for _ in range(6)]
    for queue in ours:
        await queue.enqueue("x")
    watched = ours[0].name
    sampler = CountingSampler(redis, MAX_READS)

    await sampler.sample()  # the first: every queue is unread, MAX_READS of them are read
    assert sum(sampler.reads.values()) == MAX_READS
    total = len(sampler._queues)
    assert total >= len(ours)

    # Unread queues come first: all are read within ceil(total / MAX_READS) samples.
    sampler.watch(watched)
    for _ in range(math.ceil(total / MAX_READS) - 1):
        await sampler.sample()
    assert all(queue.name in sampler.latest for queue in ours)
    assert set(sampler.reads) == set(sampler._queues)

    # Then the unwatched ones in turn, MAX_READS a sample; the watched one at every sample.
    sampler.reads.clear()
    rounds = math.ceil((total - 1) / MAX_READS)
    for _ in range(rounds):
        sampler.watch(watched)  # as the page's poll of the queue's detail does
        await sampler.sample()
    assert sampler.reads.pop(watched) == rounds
    assert set(sampler.reads) == set(sampler._queues) - {watched}, "an unwatched queue missed its turn"
    assert sum(sampler.reads.values()) == rounds * MAX_READS


async def test_a_watch_lapses_when_no_page_asks_for_the_queue(
    make_queue: QueueFactory, redis: aioredis.Redis
) -> None:
    queue = await make_queue()
    await queue.enqueue("x")
    # No reads besides the watched queues: what is read is what is watched.
    sampler = Sampler(redis, None, interval=0.1, history=60.0, owns_client=False, max_reads=0)
    await sampler.sample()  # learns the queue names, reads nothing
    assert sampler.latest == {}
    sampler.watch(queue.name)
    now = time.monotonic()
    assert sampler._due(now) == [queue.name]
    assert sampler._due(now + 4.9) == [queue.name]  # the page polls within 5 s (3 intervals at most)
    assert sampler._due(now + 5.1) == []
    assert sampler._watched == {}  # forgotten, not kept forever
