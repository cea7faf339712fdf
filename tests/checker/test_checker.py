"""The bounded explicit-state checker (explorer.py) against the real scripts.

CI bound: W=2 workers, M=3 mids, depth D=8. To stay within about four minutes on
a 2-core box the operation set is reduced: the enqueue variants (can_update,
can_requeue, delayed) are offered for the first mid only (the other two get the
plain enqueue, and are interchangeable: symmetry-reduced), and extend is left
out. Every ack outcome ('s', 's500', 'r', 'r100', 'f'), stale acks, crashes,
dequeues of 1 and of 2, replay and purge of failed mids (each, and all), clock
ticks and jumps to the next event are kept.
`nox -s checker` runs a larger bound.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest
import redis

from vermilion._scripts import SCRIPTS

from .explorer import Explorer, Violation

CI_DEPTH = 8
MUTATION_DEPTH = 6


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)
    yield r
    r.close()


def _explorer(
    client: redis.Redis,
    depth: int,
    *,
    sources: dict[str, bytes | str] | None = None,
) -> Explorer:
    return Explorer(
        2,
        3,
        depth,
        queue=f"checker-{uuid.uuid4().hex[:8]}",
        client=client,
        enqueue_variants_for=1,
        with_extend=False,
        sources=sources,
    )


def _report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        sys.stdout.write(f"\n{text}\n")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ci_bound_holds(client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    explorer = _explorer(client, CI_DEPTH)
    try:
        stats = explorer.explore()
    finally:
        explorer.cleanup()
    _report(capsys, f"checker W=2 M=3 D={CI_DEPTH}: {stats}")
    assert stats.depth_reached == CI_DEPTH
    assert stats.states > 100_000  # the search really ran (about 280k states at this bound)


def _mutated(name: str, old: str, new: str) -> dict[str, bytes | str]:
    source = SCRIPTS[name].source.decode()
    assert source.count(old) == 1, f"mutation target {old!r} not once in {name}.lua"
    return {name: source.replace(old, new)}


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        # The fence: any token matches the lease.
        ("ack", "token == o_token[i]", "true"),
        # The suspect rule: held-back suspects are handed out.
        ("dequeue", "if is_suspect and suspects_taken >= max_suspects then", "if false then"),
        # The failure history's byte bound is ignored.
        ("ack", "while count > max_count or bytes > max_bytes do", "while count > max_count do"),
        # A replay wakes no idle worker.
        ("replay", "wake_workers(woken)", "wake_workers(0)"),
    ],
    ids=["ack-fence", "dequeue-suspects", "history-byte-bound", "replay-wakes"],
)
def test_mutation_is_caught(
    client: redis.Redis, capsys: pytest.CaptureFixture[str], name: str, old: str, new: str
) -> None:
    explorer = _explorer(client, MUTATION_DEPTH, sources=_mutated(name, old, new))
    try:
        with pytest.raises(Violation) as caught:
            explorer.explore()
    finally:
        explorer.cleanup()
    assert caught.value.steps, "a counter-example names its operations"
    _report(
        capsys, f"counter-example for the {name} mutation ({len(caught.value.steps)} steps):\n{caught.value}"
    )
