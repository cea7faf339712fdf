"""The bounded explicit-state checker (explorer.py and its parts beside it) against the real scripts.

CI bound: W=2 workers, M=3 mids, depth D=8. To stay within about three minutes on
a 2-core box (166 s measured on 2026-12-08, 503 s before a state's steps went to the
server in one batch and the fingerprint's renamings were compared part by part) the
operation set is reduced: the enqueue variants (can_update,
can_requeue, delayed) are offered for the first mid only (the other two get the
plain enqueue, and are interchangeable: symmetry-reduced), and extend is left
out. Every ack outcome ('s', 's500', 'r', 'r100', 'f'), stale acks, crashes,
dequeues of 1 and of 2, replay and purge of failed mids (each, and all), clock
ticks and jumps to the next event are kept.
`nox -s checker` runs a larger bound.

The schedule script is explored in a run of its own, at depth 6 with three slots (every
slot enqueues mid "a"): added to the CI bound it would multiply its states (about +40% at
depth 7 with two slots); on its own it adds about 11 s.

Flow control is explored beside it at smaller bounds (each under ten seconds):
a bounded queue (max_size 2) with the same operations at depth 6.
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from vermilion._scripts import SCRIPTS

from .explorer import Explorer, Stats
from .fingerprint import token_ranks
from .least import assemble
from .state import Violation

CI_DEPTH = 8
# The new states of each depth at the CI bound: the search is deterministic (no set or hash
# order decides what it explores), so any change to them is a change of what is explored.
CI_FRONTIERS = [5, 23, 94, 361, 1932, 9478, 46219, 222194]
MUTATION_DEPTH = 6
SCHEDULE_DEPTH = 6
SCHEDULE_SLOTS = 3
BOUNDED_DEPTH = 6
PRIORITY_DEPTH = 5
RATE_DEPTH = 6
RATE_LIMIT = (1, 2)  # one message per 2 ms window
PER_KEY_DEPTH = 5


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
    schedule_slots: int = 0,
    max_size: int | None = None,
    with_priorities: bool = False,
    rate_limit: tuple[int, int] | None = None,
    max_per_key: int | None = None,
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
        schedule_slots=schedule_slots,
        max_size=max_size,
        with_priorities=with_priorities,
        rate_limit=rate_limit,
        max_per_key=max_per_key,
    )


def _explore(explorer: Explorer) -> Stats:
    """Run the whole search, its keys cleaned up."""
    try:
        return explorer.explore()
    finally:
        explorer.cleanup()


def _violation(explorer: Explorer) -> Violation:
    """The violation the explorer must find (a mutated script), its keys cleaned up."""
    try:
        with pytest.raises(Violation) as caught:
            explorer.explore()
    finally:
        explorer.cleanup()
    return caught.value


def _report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        sys.stdout.write(f"\n{text}\n")


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 3 min on a quiet machine; 5 times that before it times out
def test_ci_bound_holds(client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    stats = _explore(_explorer(client, CI_DEPTH))
    _report(capsys, f"checker W=2 M=3 D={CI_DEPTH}: {stats}")
    assert stats.depth_reached == CI_DEPTH
    assert stats.states > 100_000  # the search really ran (about 280k states at this bound)
    assert stats.per_depth == CI_FRONTIERS


def test_fingerprint_is_the_least_by_repr(client: redis.Redis) -> None:
    """The part-by-part comparison of the renamings picks the fingerprint that the least by
    repr of the whole ones picks, on every state of the first four depths (the states
    explored depend on that choice: see least.least)."""
    explorer = _explorer(client, 4)
    compared = 0
    try:
        explorer.delete_keys()
        frontier = [explorer._initial_state()]
        seen: set[Any] = set()
        for _ in range(4):
            frontier = explorer._expand(frontier, seen, Stats(), time.monotonic())
            for s in frontier:
                rank = token_ranks(s)
                whole = [assemble(list(explorer.canon.parts(s, ren, rank))) for ren in explorer.canon.perms]
                assert explorer.fingerprint(s) == min(whole, key=repr), s.path
                compared += whole[0] != whole[1]
    finally:
        explorer.cleanup()
    assert compared > 300  # most states are not symmetric: the choice was made


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
    _report_violation(capsys, name, _explorer(client, MUTATION_DEPTH, sources=_mutated(name, old, new)))


def _report_violation(capsys: pytest.CaptureFixture[str], name: str, explorer: Explorer) -> None:
    """Explore, expecting a violation with its counter-example, and show it."""
    caught = _violation(explorer)
    assert caught.steps, "a counter-example names its operations"
    _report(capsys, f"counter-example for the {name} mutation ({len(caught.steps)} steps):\n{caught}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schedule_bound_holds(client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """Every sequence of six operations, schedule calls among them, holds every check."""
    explorer = _explorer(client, SCHEDULE_DEPTH, schedule_slots=SCHEDULE_SLOTS)
    try:
        stats = explorer.explore()
    finally:  # the keys go, whatever the search found
        explorer.cleanup()
    _report(capsys, f"checker W=2 M=3 D={SCHEDULE_DEPTH} with {SCHEDULE_SLOTS} schedule slots: {stats}")
    assert stats.depth_reached == SCHEDULE_DEPTH
    assert stats.states > 15_000  # the search really ran (about 19k states at this bound)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("old", "new"),
    [
        # A covered slot is enqueued again (the watermark is not consulted).
        ("if slot <= watermark or slot > now then", "if slot > now then"),
        # A slot whose mid the queue knows is not covered.
        ("  else\n    watermark = slot\n    reply[#reply + 1] = 0", "  else\n    reply[#reply + 1] = 0"),
    ],
    ids=["covered-slot-again", "known-slot-not-covered"],
)
def test_schedule_mutation_is_caught(
    client: redis.Redis, capsys: pytest.CaptureFixture[str], old: str, new: str
) -> None:
    sources = _mutated("schedule", old, new)
    _report_violation(
        capsys, "schedule", _explorer(client, 5, sources=sources, schedule_slots=SCHEDULE_SLOTS)
    )


@pytest.mark.timeout(600)
def test_bounded_queue_holds(client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """max_size 2 with three mids: every enqueue that would pass the bound is 'full' and writes nothing."""
    stats = _explore(_explorer(client, BOUNDED_DEPTH, max_size=2))
    _report(capsys, f"checker W=2 M=3 D={BOUNDED_DEPTH} max_size=2: {stats}")
    assert stats.depth_reached == BOUNDED_DEPTH


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("old", "new"),
    [
        # A new life ignores the bound.
        ("  if not admit() then return 'full' end\n  return add_fresh", "  return add_fresh"),
        # A batch admits one message too many.
        (
            "if room and room < admitted then admitted = math.max(room, 0) end",
            "if room and room < admitted then admitted = room + 1 end",
        ),
    ],
    ids=["new-life", "batch"],
)
def test_bound_mutation_is_caught(client: redis.Redis, old: str, new: str) -> None:
    caught = _violation(_explorer(client, BOUNDED_DEPTH, sources=_mutated("enqueue", old, new), max_size=2))
    assert re.search(r"max_size|'full'|changed the keys", str(caught)), caught


@pytest.mark.timeout(600)
def test_priorities_hold(client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """Levels 1 and 2 beside the default one: priority places in `delayed` stay consistent
    through retries, delays, lapsed leases and held-back suspects; nothing lost or doubled."""
    stats = _explore(_explorer(client, PRIORITY_DEPTH, with_priorities=True))
    _report(capsys, f"checker W=2 M=3 D={PRIORITY_DEPTH} priorities: {stats}")
    assert stats.depth_reached == PRIORITY_DEPTH


def test_priority_mutation_is_caught(client: redis.Redis) -> None:
    """A priority message handed out but left in `delayed` is caught (two places at once)."""
    mutation = _mutated("dequeue", "  redis.call('ZREM', K_DELAYED, mid)\n  local raw", "  local raw")
    caught = _violation(_explorer(client, PRIORITY_DEPTH - 2, sources=mutation, with_priorities=True))
    assert "places" in str(caught), caught


@pytest.mark.timeout(600)
def test_rate_limit_holds(client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """One hand-out per 2 ms window across both workers, and none while a RateLimited
    outcome ('p2': retry, and pause the queue 2 ms) holds the queue."""
    stats = _explore(_explorer(client, RATE_DEPTH, rate_limit=RATE_LIMIT))
    _report(capsys, f"checker W=2 M=3 D={RATE_DEPTH} rate limit {RATE_LIMIT}: {stats}")
    assert stats.depth_reached == RATE_DEPTH


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("if allowed < max_messages then", "if false then"),
        ("if pause_end and pause_end > now then", "if false then"),
    ],
    ids=["limit", "pause"],
)
def test_rate_mutation_is_caught(client: redis.Redis, old: str, new: str) -> None:
    caught = _violation(
        _explorer(client, RATE_DEPTH, sources=_mutated("dequeue", old, new), rate_limit=RATE_LIMIT)
    )
    assert "dequeue handed out" in str(caught), caught


@pytest.mark.timeout(600)
def test_per_key_limit_holds(client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """max_per_key 1, every mid also enqueued with key K: never two of K leased at once, and
    meta's count of K's leases is exact through acks, retries, crashes and lapsed leases."""
    stats = _explore(_explorer(client, PER_KEY_DEPTH, max_per_key=1))
    _report(capsys, f"checker W=2 M=3 D={PER_KEY_DEPTH} max_per_key=1: {stats}")
    assert stats.depth_reached == PER_KEY_DEPTH


@pytest.mark.parametrize(
    ("name", "old", "new", "fragment"),
    [
        ("dequeue", "elseif k and key_is_full(k) then", "elseif false then", "leased at once"),
        ("ack", "if #freed > 0 then\n  count_held(freed, -1)", "if #freed > 0 then\n", "held:K is"),
    ],
    ids=["limit", "slot-freed"],
)
def test_per_key_mutation_is_caught(
    client: redis.Redis, name: str, old: str, new: str, fragment: str
) -> None:
    caught = _violation(_explorer(client, PER_KEY_DEPTH, sources=_mutated(name, old, new), max_per_key=1))
    assert fragment in str(caught), caught
