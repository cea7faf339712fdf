"""A bounded, exhaustive, explicit-state checker of the real protocol-version-2 scripts.

A state is the content of a queue's keys (a DUMP of each, plus the test clock)
and what the workers believe: the
leases each holds, the stale leases it once held, and a model of every mid's
life derived from the scripts' replies only. From each state, every operation
of a bounded alphabet is run against the real server (EVALSHA of the real
scripts, or of mutated sources); the successor is checked, and is explored
further unless a state with the same canonical fingerprint was seen (times
relative to the clock, lease tokens by rank). The search is breadth-first, so
the first violation found has a shortest operation sequence. The operations of a
state go to the server in one batch, each restoring the state first (wire.py).

The parts, one module each: bounds.py (what a run explores), keys.py (the decoding of the
stored keys), state.py (the state and the model of the replies), ops.py (the operations a
state offers and their script calls), transition.py (the step and its checks of the reply)
with after.py (the checks particular to an operation), checks.py (the invariants and the
model, checked in every state reached), fingerprint.py (the symmetry reduction) with
least.py, wire.py (the batches on the server); here the search itself.

Run directly: ``python -m tests.checker.explorer`` (bounds from CHECKER_W,
CHECKER_M, CHECKER_D).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import redis

from vermilion._keys import KEY_PARTS, QueueKeys, schedules_key
from vermilion._scripts import SCRIPTS

from .bounds import MIDS, SCHEDULE_SLOTS, START_CLOCK, Bounds
from .checks import check_invariants, check_model
from .fingerprint import Canon
from .keys import Keys, read_commands
from .ops import call, ops
from .state import State, Stats, Violation
from .transition import step
from .wire import Call, Job, Result, Wire

__all__ = ["Explorer", "Stats", "explore", "main"]

PARTS = KEY_PARTS


class Explorer:
    def __init__(
        self,
        workers: int = 2,
        mids: int = 3,
        depth: int = 8,
        *,
        sources: dict[str, bytes | str] | None = None,
        enqueue_variants_for: int | None = None,
        with_extend: bool = True,
        with_stale_acks: bool = True,
        with_clear: bool = True,
        with_dequeue2: bool = True,
        with_history: bool = True,
        schedule_slots: int = 0,
        max_size: int | None = None,
        with_priorities: bool = False,
        rate_limit: tuple[int, int] | None = None,
        max_per_key: int | None = None,
        queue: str | None = None,
        client: redis.Redis | None = None,
        max_seconds: float | None = None,
        progress: Callable[[Stats], None] | None = None,
    ) -> None:
        self.progress = progress
        self.D = depth
        self.bounds = Bounds(
            workers=workers,
            mids=MIDS[:mids],
            variants_for=mids if enqueue_variants_for is None else enqueue_variants_for,
            with_extend=with_extend,
            with_stale_acks=with_stale_acks,
            with_clear=with_clear,
            with_dequeue2=with_dequeue2,
            with_history=with_history,
            slots=SCHEDULE_SLOTS[:schedule_slots],
            max_size=max_size,
            with_priorities=with_priorities,
            rate_limit=rate_limit,
            max_per_key=max_per_key,
        )
        self.canon = Canon(self.bounds)
        self.max_seconds = max_seconds
        self.r = client or redis.Redis(host="127.0.0.1", port=6379)
        self.queue = queue or f"checker-{uuid.uuid4().hex[:12]}"
        qk = QueueKeys.for_queue(self.queue).with_test_clock()
        self.all_keys = list(qk.keys)
        assert len(self.all_keys) == 12
        self.data_keys = self.all_keys[:11]
        self.clock_key = self.all_keys[11]
        self.k = dict(zip(PARTS, self.data_keys, strict=True))
        # The schedule's watermarks are kept (dumped and restored) beside the queue's keys.
        self.schedules_key = schedules_key(self.queue)
        self.data_keys.append(self.schedules_key)
        # Every script takes the queue's keys and the clock; schedule also its own key between.
        queue_keys = (12, *self.all_keys)
        self.all_keys.insert(11, self.schedules_key)
        script_keys = {"schedule": (13, *self.all_keys)}
        srcs: dict[str, bytes | str] = {
            name: SCRIPTS[name].source
            for name in ("enqueue", "dequeue", "ack", "extend", "clear", "replay", "purge", "schedule")
        }
        if sources:
            srcs.update(sources)
        self.wire = Wire(
            self.r,
            srcs,
            data_keys=self.data_keys,
            clock_key=self.clock_key,
            script_keys=script_keys,
            queue_keys=queue_keys,
            reads=read_commands(self.k, self.schedules_key, rate_limit, max_per_key),
        )

    # -- redis plumbing --

    def delete_keys(self) -> None:
        self.r.delete(*self.all_keys)

    def cleanup(self) -> None:
        """Delete this queue's keys and close the connections."""
        try:
            self.wire.drain()
            self.delete_keys()
        finally:
            self.wire.close()
            self.r.close()

    def fingerprint(self, s: State) -> tuple[Any, ...]:
        """The canonical form of a state (fingerprint.py)."""
        return self.canon.of(s)

    # -- search --

    def explore(self) -> Stats:
        t0 = time.monotonic()
        stats = Stats()
        self.delete_keys()
        try:
            init = self._initial_state()
            seen = {self.fingerprint(init)}
            frontier = [init]
            stats.states = 1
            for depth in range(1, self.D + 1):
                frontier = self._expand(frontier, seen, stats, t0)
                stats.states += len(frontier)
                stats.per_depth.append(len(frontier))
                stats.depth_reached = depth
                if self.progress:
                    stats.seconds = time.monotonic() - t0
                    self.progress(stats)
                if not frontier:
                    break
        finally:
            self.wire.drain()
            self.delete_keys()
            stats.seconds = time.monotonic() - t0
        return stats

    def _initial_state(self) -> State:
        """The empty queue (with the flow-control settings explored in its meta)."""
        b = self.bounds
        self.r.set(self.clock_key, str(START_CLOCK))
        empty = Keys(frozenset(), (), {}, {}, {}, {}, {}, {}, {}, 0, None, None, None, 0)
        dumps: tuple[bytes | None, ...] = tuple([None] * len(self.data_keys))
        if b.max_size is not None:
            self.r.hset(self.k["meta"], "max_size", str(b.max_size))
        if b.max_per_key is not None:
            self.r.hset(self.k["meta"], "max_per_key", str(b.max_per_key))
        if b.rate_limit is not None:
            per_window, interval = b.rate_limit
            self.r.hset(self.k["meta"], mapping={"rate_limit": per_window, "rate_interval_ms": interval})
        if b.max_size is not None or b.rate_limit is not None or b.max_per_key is not None:
            dumps = self.wire.dump()
        return State(
            dumps,
            START_CLOCK,
            empty,
            tuple(() for _ in range(b.workers)),
            tuple(frozenset() for _ in range(b.workers)),
            {},
            (),
        )

    def _jobs(self, frontier: list[State]) -> Iterator[Job]:
        """Each state's scripted operations, for the wire; the state and every call (None
        for an operation that runs no script) ride along."""
        for s in frontier:
            assert s.dumps is not None
            offered = ops(self.bounds, s)
            calls = [call(self.bounds, s, op) for op in offered]
            yield Job(s.dumps, s.clock, [c for c in calls if c is not None], (s, offered, calls))

    def _expand(self, frontier: list[State], seen: set[Any], stats: Stats, t0: float) -> list[State]:
        """The next depth's frontier: the successors of `frontier` not seen before, each
        checked; in the frontier's order, each state's successors in the order of ops()."""
        nxt: list[State] = []
        for job, results in self.wire.run(self._jobs(frontier)):
            s, offered, calls = job.tag
            for op, result in zip(offered, _align(calls, results), strict=True):
                child = self._checked_step(s, op, result)
                stats.transitions += 1
                fp = self.fingerprint(child)
                if fp not in seen:
                    seen.add(fp)
                    nxt.append(child)
            if self.max_seconds and time.monotonic() - t0 > self.max_seconds:
                raise RuntimeError(f"time budget exceeded at depth {len(stats.per_depth) + 1}: {stats}")
        return nxt

    def _checked_step(self, s: State, op: tuple[str, Any], result: Result | None) -> State:
        """The successor, every check passed; else the violation with its path."""
        child = None
        try:
            child = step(self.bounds, s, op, result)
            check_invariants(child)
            check_model(child)
        except Violation as exc:
            last = f"{op[0]}{op[1]!r}" if child is None else child.path[-1]
            path = [*s.path, last + "  <- FAILED HERE"]
            raise Violation(
                f"{exc}\nafter {len(path)} steps (shortest, breadth-first):\n  " + "\n  ".join(path),
                tuple(path),
            ) from None
        return child


def _align(calls: list[Call | None], results: list[Result]) -> list[Result | None]:
    """The results of the scripted calls, in place among the calls (None where no script ran)."""
    fetched = iter(results)
    return [None if c is None else next(fetched) for c in calls]


def explore(workers: int = 2, mids: int = 3, depth: int = 8, **kw: Any) -> Stats:
    explorer = Explorer(workers, mids, depth, **kw)
    try:
        return explorer.explore()
    finally:
        explorer.cleanup()


def main() -> int:
    w = int(os.environ.get("CHECKER_W", "2"))
    m = int(os.environ.get("CHECKER_M", "3"))
    d = int(os.environ.get("CHECKER_D", "10"))
    variants = int(os.environ.get("CHECKER_VARIANTS", "1"))
    extend = os.environ.get("CHECKER_EXTEND", "0") == "1"
    slots = int(os.environ.get("CHECKER_SLOTS", "0"))
    print(f"exploring W={w} M={m} D={d} ...", flush=True)
    print(f"enqueue variants for {variants} mid(s), extend {'on' if extend else 'off'}", flush=True)
    url = os.environ.get("VERMILION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    stats = explore(
        w,
        m,
        d,
        enqueue_variants_for=variants,
        with_extend=extend,
        schedule_slots=slots,
        client=redis.Redis.from_url(url),
        progress=lambda st: print(f"  {st}", flush=True),
    )
    print(stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
