"""vermilion.testing: a message for unit tests, drain for integration tests, a server."""

from __future__ import annotations

import pytest

from tests.conftest import QueueFactory
from vermilion import Message, Queue, Retry, Success
from vermilion.testing import drain, embedded_server, make_message


def test_make_message_builds_what_a_worker_hands_out() -> None:
    """make_message fills every field a handler reads, with a random mid by default."""
    message = make_message({"n": 1}, attempt=2, queue="emails")
    assert (message.content, message.attempt, message.queue, message.lock_timeout) == (
        {"n": 1},
        2,
        "emails",
        30.0,
    )
    assert message.mid
    assert make_message(None).mid != make_message(None).mid
    assert make_message(None, mid="fixed").mid == "fixed"


@pytest.mark.parametrize(
    ("options", "error"),
    [({"attempt": 0}, ValueError), ({"mid": ""}, ValueError), ({"lock_timeout": 0}, ValueError)],
    ids=["attempt-0", "empty-mid", "zero-lock"],
)
def test_make_message_checks_its_arguments(options: dict[str, object], error: type[Exception]) -> None:
    """Bad fields are refused as the real API would refuse them."""
    with pytest.raises(error):
        make_message("x", **options)  # type: ignore[arg-type]


async def test_drain_runs_until_nothing_is_left(queue: Queue) -> None:
    """drain handles every message, retries included, and returns the worker's stats."""
    seen: list[int] = []

    async def handler(message: Message) -> Retry | None:
        seen.append(message.content)
        return Retry() if message.attempt == 1 and message.content % 2 else None

    await queue.enqueue_many(range(20))
    stats = await drain(queue, handler)
    assert sorted(set(seen)) == list(range(20))
    assert stats.counts["handler/success"] == 20
    assert stats.counts["handler/retry"] == 10
    assert (await queue.status()).ntotal == 0


async def test_drain_ignores_dedup_windows(queue: Queue) -> None:
    """Messages done inside their de-dup window do not keep drain waiting."""

    async def handler(message: Message) -> Success:
        return Success(backoff=60)

    await queue.enqueue("x")
    stats = await drain(queue, handler, timeout=10)
    assert stats.counts["handler/backoff"] == 1


async def test_drain_times_out(make_queue: QueueFactory) -> None:
    """A queue that cannot be drained in time raises TimeoutError."""
    queue = await make_queue()

    async def handler(message: Message) -> Retry:
        return Retry(backoff=30)

    await queue.enqueue("x")
    with pytest.raises(TimeoutError, match="not drained"):
        await drain(queue, handler, timeout=0.3)


async def test_embedded_server_serves_a_queue() -> None:
    """embedded_server yields the URL of a working server."""
    with embedded_server() as url:
        async with Queue("embedded", url) as queue:
            assert (await queue.enqueue("x")).ok
            assert await queue.size() == 1
