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

Run directly: ``python -m tests.checker.explorer`` (bounds from CHECKER_W,
CHECKER_M, CHECKER_D).
"""

from __future__ import annotations

import itertools
import os
import struct
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from vermilion._keys import KEY_PARTS, QueueKeys, schedules_key
from vermilion._scripts import SCRIPTS

from .least import assemble, least
from .wire import Call, Job, Result, Wire

__all__ = ["Explorer", "Stats", "explore", "main"]

MIDS = ("a", "b", "c", "d", "e")
START_CLOCK = 1_000_000
LOCK_MS = 1000
# The failure history's bounds: two entries, and fewer bytes than two whose payload is the
# update variant's (REASON and FAILURE_HEADER below): both bounds drop within depth 8.
MAX_FAILED = 2
MAX_FAILED_BYTES = 40
REASON = b"x"
UPDATED = "u" * 20
_FAILURE = struct.Struct(">BI5sI")
POINTER, FRESH, FRESH_WITH_LEASE = 0, 1, 2
SUSPECT, OVERRIDES = 1, 2
_RECORD = struct.Struct(">BB6s6sI5s7s")
# The schedule's slots (ms), each enqueueing mid "a": a few, right after the start, so
# that ticks reach them; one mid, so that it keeps b and c interchangeable.
SCHEDULE_SLOTS = (START_CLOCK + 1, START_CLOCK + 2, START_CLOCK + 3)
SCHEDULE_MID = "a"
PARTS = KEY_PARTS
KEYED_PAYLOAD = "\x00\x01Kp"  # key K ([>I2] length 1, then "K") before the payload "p"


# --- decoding -----------------------------------------------------------------------------


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def decode_entry(raw: bytes) -> tuple[int, str, int | None, int | None, bytes | None]:
    kind, n = raw[0], raw[1]
    at = 2
    if n == 255:
        n = _int(raw[2:4])
        at = 4
    mid = raw[at : at + n].decode()
    at += n
    if kind == POINTER:
        return (kind, mid, None, None, None)
    enqueued = _int(raw[at : at + 6])
    at += 6
    lock = None
    if kind == FRESH_WITH_LEASE:
        lock = _int(raw[at : at + 5])
        at += 5
    return (kind, mid, enqueued, lock, raw[at:])


@dataclass(frozen=True)
class Rec:
    state: str
    flags: int
    enqueued: int
    due: int
    attempts: int
    lock: int
    token: int
    payload: bytes


def failure_record(rec: Rec) -> bytes:
    """The failure record ack.lua must write for a leased record failed with REASON."""
    payload = rec.payload
    if rec.flags & 4:  # per-key concurrency: the record holds the key first, the failure record does not
        payload = payload[2 + int.from_bytes(payload[:2], "big") :]
    return _FAILURE.pack(1, rec.attempts, rec.lock.to_bytes(5, "big"), len(REASON)) + REASON + payload


def decode_record(raw: bytes) -> Rec:
    state, flags, enq, due, attempts, lock, token = _RECORD.unpack_from(raw)
    return Rec(chr(state), flags, _int(enq), _int(due), attempts, _int(lock), _int(token), raw[30:])


@dataclass
class Keys:
    """The decoded logical content of a queue's keys."""

    mids: frozenset[str]
    ready: tuple[tuple[int, str, int | None, int | None, bytes | None], ...]
    records: dict[str, Rec]
    delayed: dict[str, int]
    locks: dict[str, int]
    done: dict[str, int]
    requeue: dict[str, bytes]
    failed: dict[str, int]
    errors: dict[str, bytes]
    notify: int
    seq: int | None
    version: bytes | None
    failed_bytes: int | None = None
    failed_dropped: int = 0
    watermark: int | None = None  # of the schedule (schedule.lua), when it is explored

    def raw(self) -> tuple[Any, ...]:
        return (
            tuple(sorted(self.mids)),
            self.ready,
            tuple(sorted(self.records.items())),
            tuple(sorted(self.delayed.items())),
            tuple(sorted(self.locks.items())),
            tuple(sorted(self.done.items())),
            tuple(sorted(self.requeue.items())),
            tuple(sorted(self.failed.items())),
            tuple(sorted(self.errors.items())),
            self.notify,
            self.seq,
            self.version,
            self.failed_bytes,
            self.failed_dropped,
            self.watermark,
        )

    def live(self) -> set[str]:
        return set(self.mids) - set(self.done) - set(self.failed)

    def history(self) -> list[str]:
        """The failed mids oldest first, as the scripts see them (by time, then by mid)."""
        return [m for _, m in sorted((t, m) for m, t in self.failed.items())]


def _s(b: bytes) -> str:
    return b.decode()


# --- client state and model ---------------------------------------------------------------

# A lease a worker holds: (mid, token, suspect, life). A stale one: (mid, token, life).
Lease = tuple[str, int, int, int]
Stale = tuple[str, int, int]


@dataclass(frozen=True)
class MidModel:
    """What the replies say of one mid: 'unknown' | 'live' | 'done' | 'failed'."""

    status: str = "unknown"
    done_until: int = 0
    pending: bool = False
    life: int = 0


@dataclass
class State:
    dumps: tuple[bytes | None, ...] | None  # None until dump() is taken (new states only)
    clock: int
    keys: Keys
    leases: tuple[tuple[Lease, ...], ...]
    stale: tuple[frozenset[Stale], ...]
    model: dict[str, MidModel]
    path: tuple[str, ...]
    # Flow control with a rate limit: meta's (rate_window, rate_count, paused_until) after the step.
    flow: tuple[int, int, int] = (0, 0, 0)
    # Per-key concurrency: meta's held:K (the leases of key K) after the step.
    held: int = 0


class Violation(AssertionError):
    """A failed check; `steps` is the counter-example (shortest: the search is breadth-first)."""

    def __init__(self, message: str, steps: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.steps = steps


@dataclass
class Stats:
    states: int = 0
    transitions: int = 0
    seconds: float = 0.0
    depth_reached: int = 0
    per_depth: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"states={self.states} transitions={self.transitions} seconds={self.seconds:.1f} "
            f"depth={self.depth_reached} frontier-per-depth={self.per_depth}"
        )


# --- the explorer -------------------------------------------------------------------------


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
        self.W, self.M, self.D = workers, mids, depth
        self.mids = MIDS[:mids]
        # Enqueue variants (can_update, can_requeue, delayed) only for the first n mids.
        self.variants_for = mids if enqueue_variants_for is None else enqueue_variants_for
        self.with_extend = with_extend
        self.with_stale_acks = with_stale_acks
        self.with_clear = with_clear
        self.with_dequeue2 = with_dequeue2
        self.with_history = with_history
        self.slots = SCHEDULE_SLOTS[:schedule_slots]
        # Bounded queue (flow control): `meta`'s max_size, set before the first step.
        self.max_size = max_size
        # Priorities (flow control): every mid may also be enqueued at level 1, the first at 2.
        self.with_priorities = with_priorities
        # Rate limit (flow control): (messages per window, window in ms) in meta from the start,
        # and the RateLimited outcome 'p' (retry and pause the queue) offered to every lease.
        self.rate_limit = rate_limit
        # Per-key concurrency: max_per_key in meta, and every mid may also be enqueued with key K.
        self.max_per_key = max_per_key
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
        # Mids that get the same operations are interchangeable: canonical under their permutations.
        same = list(self.mids[self.variants_for :]) if self.variants_for < mids else []
        self._same = same
        if len(same) > 1:
            self._perms = [
                {**{m: m for m in self.mids}, **dict(zip(same, p, strict=True))}
                for p in itertools.permutations(same)
            ]
        else:
            self._perms = [{m: m for m in self.mids}]
        self.wire = Wire(
            self.r,
            srcs,
            data_keys=self.data_keys,
            clock_key=self.clock_key,
            script_keys=script_keys,
            queue_keys=queue_keys,
            reads=self._reads(),
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

    def _reads(self) -> list[list[Any]]:
        """The commands that read a step's outcome back: the keys (decoded by _decode),
        then meta's flow-control fields when they are explored."""
        k = self.k
        cmds: list[list[Any]] = [
            ["SMEMBERS", k["mids"]],
            ["LRANGE", k["ready"], 0, -1],
            ["HGETALL", k["records"]],
            *(["ZRANGE", k[part], 0, -1, "WITHSCORES"] for part in ("delayed", "locks", "done")),
            ["HGETALL", k["requeue"]],
            ["ZRANGE", k["failed"], 0, -1, "WITHSCORES"],
            ["HGETALL", k["errors"]],
            ["LLEN", k["notify"]],
            ["HMGET", k["meta"], "seq", "version", "failed_bytes", "failed_dropped"],
            ["HGET", self.schedules_key, "s"],  # the schedule's watermark
        ]
        if self.rate_limit:
            cmds.append(["HMGET", k["meta"], "rate_window", "rate_count", "paused_until"])
        if self.max_per_key:
            cmds.append(["HGET", k["meta"], "held:K"])
        return cmds

    @staticmethod
    def _decode(res: list[Any]) -> Keys:
        (mids, ready, records, delayed, locks, done, requeue, failed, errors, notify, meta) = res[:11]
        seq, version, failed_bytes, failed_dropped = meta
        watermark = res[11]

        def pairs(flat: list[bytes]) -> list[tuple[str, bytes]]:
            return [(_s(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]

        return Keys(
            mids=frozenset(_s(m) for m in mids),
            ready=tuple(decode_entry(e) for e in ready),
            records={m: decode_record(v) for m, v in pairs(records)},
            delayed={m: int(v) for m, v in pairs(delayed)},
            locks={m: int(v) for m, v in pairs(locks)},
            done={m: int(v) for m, v in pairs(done)},
            requeue=dict(pairs(requeue)),
            failed={m: int(v) for m, v in pairs(failed)},
            errors=dict(pairs(errors)),
            notify=int(notify),
            seq=None if seq is None else int(seq),
            version=version,
            failed_bytes=None if failed_bytes is None else int(failed_bytes),
            failed_dropped=int(failed_dropped or 0),
            watermark=None if watermark is None else int(watermark),
        )

    def _outcome(self, result: Result) -> tuple[Any, Keys, tuple[bytes | None, ...]]:
        """A scripted step's reply, the keys it left and their DUMPs."""
        if isinstance(result.reply, Exception):
            script, argv = result.call
            raise Violation(f"script {script} {list(argv)} raised: {result.reply}")
        return result.reply, self._decode(result.reads), result.dumps

    def fetch(self, s: State, ops: list[tuple[str, Any]]) -> list[Result | None]:
        """Run the scripted ones of `ops` from `s` (one batch): each op's result, None for
        an op that runs no script."""
        assert s.dumps is not None
        calls = [self.call(s, op) for op in ops]
        job = Job(s.dumps, s.clock, [c for c in calls if c is not None])
        (_, results), *_ = self.wire.run([job])
        return _align(calls, results)

    # -- fingerprint --

    def fingerprint(self, s: State) -> tuple[Any, ...]:
        """The canonical form of a state; the least over the symmetries (workers are
        interchangeable, and so are the mids that get the same operations)."""
        rank = _token_ranks(s)
        return assemble(least([self._fp_parts(s, ren, rank) for ren in self._perms]))

    def _record_fp(self, r: Rec, rank: dict[int, int], c: int) -> tuple[Any, ...]:
        due = r.due - c if self.with_priorities else 0
        return (r.state, r.flags, r.attempts, r.lock, rank[r.token], r.payload, due)

    def _fp_parts(self, s: State, ren: dict[str, str], rank: dict[int, int]) -> Iterator[Any]:
        """Sound abstractions only: lease tokens by rank (scripts compare them for equality,
        and new ones are always the largest); the scores of `delayed`, `locks` and `done`
        relative to the clock when in the future, by their order when past (only that
        order matters: ZRANGEBYSCORE); the data times (enqueued, due, failure time) left
        out, as no script branches on them; `notify` by whether it exists (the only thing
        a script reads of it). With priorities the hand-out compares ready times with the
        priority scores, so those times and scores are kept, relative to the clock.
        Collections keyed by mid are sorted by (renamed) mid: a mid is in each at most once.
        The parts one after the other, so that renamings can be compared part by part."""
        c = s.clock
        k = s.keys

        timed = self.with_priorities

        def zs(d: dict[str, int]) -> tuple[tuple[str, Any], ...]:
            if timed:
                return tuple(sorted([(ren[m], v - c) for m, v in d.items()]))
            past = sorted([(v, ren[m]) for m, v in d.items() if v <= c])
            out: list[tuple[str, Any]] = [(m, ("past", i)) for i, (_, m) in enumerate(past)]
            out += [(ren[m], v - c) for m, v in d.items() if v > c]
            return tuple(sorted(out))

        yield tuple(sorted([ren[m] for m in k.mids]))
        yield tuple(
            (kind, ren[mid], lock, p, (e or 0) - c if timed else 0) for kind, mid, e, lock, p in k.ready
        )
        yield tuple(sorted([(ren[m], self._record_fp(r, rank, c)) for m, r in k.records.items()]))
        yield zs(k.delayed)
        yield zs(k.locks)
        yield zs(k.done)
        yield tuple(sorted([(ren[m], v) for m, v in k.requeue.items()]))
        yield self._history_fp(k, ren)
        yield tuple(sorted([(ren[m], v) for m, v in k.errors.items()]))
        yield k.failed_bytes
        yield k.notify > 0
        yield k.seq is not None
        yield k.version
        yield self._schedule_fp(s)

        lives = {m: mm.life for m, mm in s.model.items()}
        yield tuple(
            sorted(
                [
                    (
                        tuple(
                            sorted([(ren[m], rank[t], sus, lf - lives.get(m, 0)) for m, t, sus, lf in held])
                        ),
                        tuple(sorted([(ren[m], rank[t], lf - lives.get(m, 0)) for m, t, lf in st])),
                    )
                    for held, st in zip(s.leases, s.stale, strict=True)
                ]
            )
        )
        yield tuple(
            sorted([(ren[m], *e) for m, mm in s.model.items() if (e := _model_fp(mm, c)) is not None])
        )
        extra: tuple[int, ...] = ()
        if self.max_per_key:
            extra += (s.held,)
        if self.rate_limit:
            window, count, paused = s.flow
            extra += (window * self.rate_limit[1] - c, count, max(paused - c, 0))
        if extra:
            yield extra

    @staticmethod
    def _history_fp(k: Keys, ren: dict[str, str]) -> tuple[tuple[str, ...], ...]:
        """The failed mids by failure time, oldest first (the order trimming and replay of
        all follow); mids failed in the same ms form one group. Within a group the scripts
        order by mid, which renaming symmetric mids does not keep: a group of two
        interchangeable mids stands for both orders (documented in the design notes)."""
        groups: dict[int, list[str]] = {}
        for m, t in k.failed.items():
            groups.setdefault(t, []).append(ren[m])
        return tuple(tuple(sorted(groups[t])) for t in sorted(groups))

    def _schedule_fp(self, s: State) -> tuple[int, int] | None:
        """How many slots are due, and how many the watermark covers (-1: none yet): the
        script compares slots with nothing else (its own `now` becomes the first watermark,
        which then covers exactly the slots due)."""
        if not self.slots:
            return None
        wm = s.keys.watermark
        covered = -1 if wm is None else sum(1 for t in self.slots if t <= wm)
        return (sum(1 for t in self.slots if t <= s.clock), covered)

    # -- checks --

    def check_invariants(self, s: State) -> None:
        k = s.keys
        bad: list[str] = []
        done, failed = set(k.done), set(k.failed)
        if done & failed:
            bad.append(f"mids both done and failed: {sorted(done & failed)}")
        entries: dict[str, list[tuple[Any, ...]]] = {}
        for e in k.ready:
            entries.setdefault(e[1], []).append(e)
        locations = set(entries) | set(k.delayed) | set(k.locks)
        if not (locations | done | failed) <= k.mids:
            bad.append(f"mids missing from `mids`: {sorted((locations | done | failed) - k.mids)}")
        live = k.live()
        for m in sorted(k.mids):
            n_ready = len(entries.get(m, []))
            places = n_ready + (m in k.delayed) + (m in k.locks)
            rec = k.records.get(m)
            if m in live:
                if places != 1:
                    bad.append(
                        f"live mid {m} in {places} places (ready entries {n_ready}, delayed {m in k.delayed}, locks {m in k.locks})"
                    )
                    continue
                if m in k.delayed and k.delayed[m] < 0:
                    # A ready message of a priority above 0 waits below every due time.
                    if rec is None or rec.state != "r" or rec.flags // 16 == 0:
                        bad.append(f"priority place of {m} (score {k.delayed[m]}) with record {rec}")
                elif m in k.delayed and (rec is None or rec.state != "d"):
                    bad.append(f"delayed mid {m} has record {rec}")
                if m in k.locks and (rec is None or rec.state != "l"):
                    bad.append(f"leased mid {m} has record {rec}")
                if n_ready == 1:
                    kind = entries[m][0][0]
                    if kind == POINTER and (rec is None or rec.state != "r" or rec.flags & OVERRIDES):
                        bad.append(f"pointer entry of {m} with record {rec}")
                    if (
                        kind != POINTER
                        and rec is not None
                        and not (rec.state == "r" and rec.flags & OVERRIDES)
                    ):
                        bad.append(f"fresh entry of {m} with a non-overriding record {rec}")
            else:
                if places:
                    bad.append(f"mid {m} done/failed yet in ready/delayed/locks")
                if rec is not None:
                    bad.append(f"mid {m} done/failed yet has record {rec}")
        for m in set(k.records) - k.mids:
            bad.append(f"record of unknown mid {m}")
        for m, rec in k.records.items():
            if (rec.token != 0) != (rec.state == "l"):
                bad.append(f"record of {m}: state {rec.state} with token {rec.token}")
            if rec.token and k.seq is not None and rec.token > k.seq:
                bad.append(f"record of {m}: token {rec.token} above seq {k.seq}")
        for m in k.requeue:
            if m not in live and m not in done:
                where = "failed" if m in failed else "nowhere"
                bad.append(f"requeue[{m}] exists while {m} is neither live nor done ({where})")
        if set(k.errors) != failed:
            bad.append(f"errors {sorted(k.errors)} are not the failed mids {sorted(failed)}")
        total = sum(len(v) for v in k.errors.values())
        if (k.failed_bytes or 0) != total:
            bad.append(f"meta failed_bytes {k.failed_bytes}, the failure records hold {total} bytes")
        if len(failed) > MAX_FAILED or total > MAX_FAILED_BYTES:
            bad.append(f"failure history of {len(failed)} entries, {total} bytes: beyond its bounds")
        if bad:
            raise Violation("invariant: " + "; ".join(bad))

    def check_model(self, s: State) -> None:
        k = s.keys
        m_live = {m for m, mm in s.model.items() if mm.status == "live"}
        if m_live != k.live():
            raise Violation(
                f"lost/phantom message: live mids per replies {sorted(m_live)}, per keys {sorted(k.live())}"
            )
        m_done = {m: mm.done_until for m, mm in s.model.items() if mm.status == "done"}
        if m_done != k.done:
            raise Violation(f"de-dup windows per replies {m_done}, per keys {k.done}")
        m_failed = {m for m, mm in s.model.items() if mm.status == "failed"}
        if m_failed != set(k.failed):
            raise Violation(f"failed mids per replies {sorted(m_failed)}, per keys {sorted(k.failed)}")
        m_pending = {m for m, mm in s.model.items() if mm.pending}
        if m_pending != set(k.requeue):
            raise Violation(f"pending requeues per replies {sorted(m_pending)}, per keys {sorted(k.requeue)}")
        # (5) at most one worker holds the current token of a mid.
        for m, rec in k.records.items():
            if rec.state != "l":
                continue
            holders = [
                w
                for w, held in enumerate(s.leases)
                if any(hm == m and t == rec.token for hm, t, _, _ in held)
            ]
            if len(holders) > 1:
                raise Violation(f"workers {holders} both hold the current lease of {m}")

    # -- successors --

    def ops(self, s: State) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for i, m in enumerate(self.mids):
            out.append(("enqueue", (m, "0", "0", "p")))
            if i < self.variants_for:
                out.append(("enqueue", (m, "0", "1", UPDATED)))
                out.append(("enqueue", (m, "0", "2", "q")))
                out.append(("enqueue", (m, "100", "0", "p")))
            if self.with_priorities:
                out.append(("enqueue", (m, "0", "8", "p")))  # level 1 (flags carry 8 * level)
                if i == 0:
                    out.append(("enqueue", (m, "0", "16", "p")))
            if self.max_per_key:
                out.append(
                    ("enqueue", (m, "0", "128", KEYED_PAYLOAD))
                )  # 128: the payload starts with its key
        for w in range(self.W):
            out.append(("dequeue", (w, 1)))
            if self.with_dequeue2:
                out.append(("dequeue", (w, 2)))
        for w, held in enumerate(s.leases):
            for lease in held:
                for outcome in ("s", "s500", "r", "r100", "f", *(("p2",) if self.rate_limit else ())):
                    out.append(("ack", (w, lease, outcome)))
                if self.with_extend:
                    out.append(("extend", (w, lease)))
        if self.with_stale_acks:
            for w, st in enumerate(s.stale):
                for stale in sorted(st):
                    out.append(("stale-ack", (w, stale)))
        for w, held in enumerate(s.leases):
            if held:
                out.append(("crash", w))
        if self.with_clear and s.keys.mids:
            out.append(("clear", None))
        if self.with_history:
            # Replay and purge of the failed mids only: of a mid not in the history they write
            # nothing (integration tests cover those answers), and offered in every state
            # they would cost more transitions than the rest together.
            for m in sorted(s.keys.failed):
                out.append(("replay", m))
                out.append(("purge", m))
            if len(s.keys.failed) > 1:
                out.append(("replay-all", None))
                out.append(("purge-all", None))
        if self.slots:
            out.append(("schedule", ()))
        out.append(("tick", 1))
        events = [
            v for d in (s.keys.delayed, s.keys.locks, s.keys.done) for v in d.values() if v + 1 > s.clock
        ]
        if events and min(events) + 1 > s.clock + 1:
            out.append(("jump", min(events) + 1))
        return out

    @staticmethod
    def _add_stale(stale: frozenset[Stale], item: Stale) -> frozenset[Stale]:
        # Tokens only grow: a worker's newest stale token of a mid dominates its older ones.
        others = {x for x in stale if x[0] != item[0]}
        same = [x for x in stale if x[0] == item[0]] + [item]
        return frozenset(others | {max(same, key=lambda x: x[1])})

    @staticmethod
    def _max_suspects(held: tuple[Lease, ...]) -> int:
        """A worker holding a suspect takes no other (the client's rule)."""
        return 0 if any(sus for _, _, sus, _ in held) else 1

    def call(self, s: State, op: tuple[str, Any]) -> Call | None:
        """The script an operation runs from `s`, and its argv; None if it runs none."""
        kind, arg = op
        if kind == "enqueue":
            m, delay, flags, payload = arg
            # With the default options the client sends the two-argument form (mid,
            # payload), which the script answers on its one-message path.
            return (
                "enqueue",
                [m, payload] if delay == "0" and flags == "0" else [delay, "", flags, m, payload],
            )
        if kind == "dequeue":
            w, n = arg
            return ("dequeue", [str(n), str(LOCK_MS), "256", str(self._max_suspects(s.leases[w]))])
        if kind in ("ack", "stale-ack"):
            m, token, outcome = self._acked(op)
            return (
                "ack",
                [str(MAX_FAILED), str(MAX_FAILED_BYTES), "1", m, str(token), outcome]
                + ([REASON.decode()] if outcome == "f" else []),
            )
        if kind == "clear":
            return ("clear", [])
        if kind in ("replay", "purge", "replay-all", "purge-all"):
            return (kind.removesuffix("-all"), self._history_argv(kind, arg))
        if kind == "schedule":
            return ("schedule", ["s", "p", *(x for t in self.slots for x in (str(t), SCHEDULE_MID))])
        if kind == "extend":
            _, (m, token, _, _) = arg
            return ("extend", [m, str(token), str(LOCK_MS)])
        return None

    @staticmethod
    def _acked(op: tuple[str, Any]) -> tuple[str, int, str]:
        """The mid, token and outcome of an ack (a stale ack's outcome is 's')."""
        kind, arg = op
        if kind == "ack":
            _, (m, token, _, _), outcome = arg
            return m, token, outcome
        _, (m, token, _) = arg
        return m, token, "s"

    def step(self, s: State, op: tuple[str, Any], result: Result | None = None) -> State:
        """The successor of `s` by `op`, checked against the model; `result` is the op's
        prefetched outcome (fetch()), fetched here if not given."""
        kind, arg = op
        model = dict(s.model)
        leases = list(s.leases)
        stale = list(s.stale)
        clock = s.clock
        label = ""
        before = s.keys
        reply: Any = None
        dumps: tuple[bytes | None, ...] | None
        if kind not in ("tick", "jump", "crash"):
            if result is None:
                (result,) = self.fetch(s, [op])
            assert result is not None
            reply, keys, dumps = self._outcome(result)

        if kind in ("tick", "jump"):
            clock = s.clock + 1 if kind == "tick" else arg
            label = f"clock={clock - START_CLOCK}"
            keys, dumps = s.keys, s.dumps  # the keys do not change: only the clock
        elif kind == "crash":
            label = f"crash(w{arg})"
            for m, t, _, lf in leases[arg]:
                stale[arg] = self._add_stale(stale[arg], (m, t, lf))
            leases[arg] = ()
            keys, dumps = s.keys, s.dumps
        elif kind == "enqueue":
            m, delay, flags, payload = arg
            label = f"enqueue({m}, delay={delay}, flags={flags}, {payload})"
            r = _s(reply[0])
            label += f"->{r}"
            mm = model.get(m, MidModel())
            can_requeue = flags == "2"
            can_update = flags == "1"
            fresh = mm.status in ("unknown", "failed") or (
                mm.status == "done" and mm.done_until <= clock and not mm.pending
            )
            expect: str | None = None
            full = self.max_size is not None and len(before.live()) >= self.max_size
            if fresh and full:
                expect = "full"
            elif fresh:
                expect = "added"
                model[m] = MidModel("live", 0, False, mm.life + 1)
            elif mm.status == "done" and mm.done_until > clock:
                if can_requeue and full and not mm.pending:
                    expect = "full"  # a requeue of a finished mid takes a place
                elif can_requeue:
                    expect = "already-queued" if mm.pending else "added"
                    model[m] = MidModel("done", mm.done_until, True, mm.life)
                else:
                    expect = "backoff"  # (6)
            elif mm.status == "done":  # expired, with a pending requeue
                expect = "updated" if can_update else "already-queued"
            else:  # live
                if r not in ("added", "updated", "already-queued", "locked"):
                    raise Violation(f"enqueue of live {m} answered {r}")
                if r == "added":
                    if not can_requeue or mm.pending:
                        raise Violation(f"enqueue of live {m} (flags {flags}) answered 'added'")
                    model[m] = MidModel("live", 0, True, mm.life)
            if self.max_size is not None and len(keys.live()) > max(self.max_size, len(before.live())):
                raise Violation(
                    f"enqueue of {m} left {len(keys.live())} live messages, max_size {self.max_size}"
                )
            if r in ("backoff", "locked", "already-queued", "full") and keys.raw() != before.raw():
                raise Violation(f"enqueue of {m} answered {r!r} yet changed the keys")  # (6)
            if expect is not None and r != expect:
                raise Violation(
                    f"enqueue of {m} in model state {mm} at clock {clock} answered {r!r}, expected {expect!r}"
                )
        elif kind == "dequeue":
            w, n = arg
            max_suspects = self._max_suspects(leases[w])
            label = f"dequeue(w{w}, n={n}, max_suspects={max_suspects})"
            now = int(reply[0])
            # Housekeeping: ended windows are forgotten or start their pending requeue.
            if (
                len(reply) > 5
                or before.locks
                or before.delayed
                or before.done
                or before.ready
                or before.notify
            ):
                for mid, mm in list(model.items()):
                    if mm.status == "done" and mm.done_until <= now:
                        model[mid] = (
                            MidModel("live", 0, False, mm.life + 1)
                            if mm.pending
                            else MidModel("unknown", 0, False, mm.life)
                        )
            msgs = reply[5:]
            if len(msgs) % 7 or len(msgs) // 7 > n:
                raise Violation(f"dequeue reply malformed: {reply}")
            if before.seq is not None and msgs and int(msgs[5]) != before.seq + 1:
                raise Violation(f"dequeue's first token {int(msgs[5])} is not seq {before.seq} + 1")
            suspects = 0
            got: list[Any] = []
            for i in range(0, len(msgs), 7):
                m, token, sus = _s(msgs[i]), int(msgs[i + 5]), int(msgs[i + 6])
                suspects += sus
                if m in before.locks and before.locks[m] > now:
                    raise Violation(
                        f"dequeue handed out {m}, whose lease runs until {before.locks[m] - START_CLOCK}"
                    )
                if any(g[0] == m for g in got):
                    raise Violation(f"dequeue handed out {m} twice in one call")
                mm = model.get(m, MidModel())
                if mm.status != "live":
                    raise Violation(f"dequeue handed out {m}, not live per the replies ({mm})")
                got.append((m, token, sus, mm.life))
                label += f"->({m},t{token}{',suspect' if sus else ''})"
            if suspects > max_suspects:  # (7)
                raise Violation(f"dequeue with max_suspects={max_suspects} handed out {suspects} suspects")
            leases[w] = leases[w] + tuple(got)
            if self.rate_limit:
                self._check_rate(s, len(got), now)
        elif kind in ("ack", "stale-ack"):
            w, lease = arg[:2]
            m, token, outcome = self._acked(op)
            life = lease[-1]
            label = f"{kind}(w{w}, {m}, t{token}, {outcome})"
            applied = int(reply[0])
            label += f"->{applied}"
            if kind == "ack":
                leases[w] = tuple(x for x in leases[w] if x != lease)
                stale[w] = self._add_stale(stale[w], (m, token, life))
            self._after_ack(before, keys, model, m, token, life, outcome, applied, clock)
        elif kind == "clear":
            live = sum(1 for mm in model.values() if mm.status == "live")
            label = f"clear->{reply}"
            if int(reply) != live:
                raise Violation(f"clear answered {reply} removed, the replies say {live} were live")
            if keys.mids or keys.ready or keys.records or keys.requeue:
                raise Violation(f"clear left messages behind: {keys}")
            # Every mid is forgotten; the workers still hold their leases, whose acks must
            # now answer 0 and change nothing (a new life has a new number).
            for m, mm in list(model.items()):
                model[m] = MidModel("unknown", 0, False, mm.life + 1)
        elif kind in ("replay", "purge", "replay-all", "purge-all"):
            label = self._after_history_op(kind, arg, reply, before, keys, model, clock)
        elif kind == "schedule":
            results = [int(x) for x in reply[2:]]
            label = f"schedule->{results} watermark={int(reply[1]) - START_CLOCK}"
            self._after_schedule(before, keys, model, int(reply[0]), int(reply[1]), results)
        elif kind == "extend":
            w, lease = arg
            m, token, _, _ = lease
            label = f"extend(w{w}, {m}, t{token})"
            applied = int(reply[0])
            label += f"->{applied}"
            rec = before.records.get(m)
            current = rec is not None and rec.state == "l" and rec.token == token
            if applied and not current:
                raise Violation(f"extend of {m} with token {token} applied, but the current lease is {rec}")
            if not applied:
                if current:
                    raise Violation(f"extend of the current lease of {m} (token {token}) answered 0")
                if keys.raw() != before.raw():
                    raise Violation("extend answered 0 yet changed the keys")  # (4)
                leases[w] = tuple(x for x in leases[w] if x != lease)
                stale[w] = self._add_stale(stale[w], (m, token, lease[3]))
        else:
            raise ValueError(kind)
        if kind in ("enqueue", "dequeue", "clear", "extend") and keys.failed_dropped != before.failed_dropped:
            raise Violation(f"{kind} changed the failure history's drop counter")

        flow = self._flow_after(s, result) if self.rate_limit else s.flow
        held = self._held_after(s, result, keys) if self.max_per_key else s.held
        return State(dumps, clock, keys, tuple(leases), tuple(stale), model, (*s.path, label), flow, held)

    def _held_after(self, s: State, result: Result | None, keys: Keys) -> int:
        """meta's count of key K's leases: exactly the leased records of key K, at most max_per_key."""
        if result is None:
            return s.held  # no script ran
        held = int(result.reads[-1] or 0)  # the last read when per-key limits are explored
        leased = sum(
            1
            for r in keys.records.values()
            if r.state == "l" and r.flags & 4 and r.payload[:3] == b"\x00\x01K"
        )
        if held != leased:
            raise Violation(f"meta held:K is {held}, yet {leased} messages of key K are leased")
        assert self.max_per_key is not None
        if leased > self.max_per_key:
            raise Violation(f"{leased} messages of key K leased at once, max_per_key {self.max_per_key}")
        return held

    def _flow_after(self, s: State, result: Result | None) -> tuple[int, int, int]:
        """meta's rate window, count and pause, as the step left them on the server."""
        if result is None:
            return s.flow  # no script ran
        raw = result.reads[12]  # the read after the keys' when rate limits are explored
        window, count, paused = (int(v) if v is not None else 0 for v in raw)
        if paused < s.flow[2]:
            raise Violation(f"paused_until went back from {s.flow[2]} to {paused}")
        return window, count, paused

    def _check_rate(self, s: State, handed: int, now: int) -> None:
        """A dequeue hands out nothing while paused, and at most the limit per window."""
        assert self.rate_limit is not None
        per_window, interval = self.rate_limit
        window, count, paused = s.flow
        if paused > now and handed:
            raise Violation(f"dequeue handed out {handed} while the queue is paused until {paused}")
        used = count if window == now // interval else 0
        if used + handed > per_window:
            raise Violation(f"dequeue handed out {handed} with {used} of {per_window} used in this window")

    def _after_ack(
        self,
        before: Keys,
        keys: Keys,
        model: dict[str, MidModel],
        m: str,
        token: int,
        life: int,
        outcome: str,
        applied: int,
        clock: int,
    ) -> None:
        rec = before.records.get(m)
        current = rec is not None and rec.state == "l" and rec.token == token
        if not applied:
            if current:
                raise Violation(f"ack of the current lease of {m} (token {token}) answered 0")
            if keys.raw() != before.raw():
                raise Violation("ack answered 0 yet changed the keys")  # (4)
            return
        if not current:
            raise Violation(
                f"ack {outcome} of {m} with token {token} applied, but the current lease is {rec}"
            )
        mm = model.get(m, MidModel())
        if mm.status != "live" or mm.life != life:  # (3)
            raise Violation(
                f"completed twice: ack {outcome} of {m} applied for life {life}, the mid is {mm.status} in life {mm.life}"
            )
        if keys.failed_dropped != before.failed_dropped and outcome != "f":
            raise Violation(f"ack {outcome} changed the drop counter")
        if outcome.startswith(("r", "p")):
            return
        if outcome == "s":
            model[m] = (
                MidModel("live", 0, False, mm.life + 1)
                if mm.pending
                else MidModel("unknown", 0, False, mm.life)
            )
        elif outcome.startswith("s"):
            model[m] = MidModel("done", clock + int(outcome[1:]), mm.pending, mm.life)
        elif outcome == "f":
            if mm.pending:
                model[m] = MidModel("live", 0, False, mm.life + 1)
            else:
                model[m] = MidModel("failed", 0, False, mm.life)
                self._check_failure_recorded(before, keys, model, m, clock)

    @staticmethod
    def _check_failure_recorded(
        before: Keys, keys: Keys, model: dict[str, MidModel], m: str, clock: int
    ) -> None:
        """The failure keeps the life's payload, attempts and lease; the oldest entries beyond
        the bounds are dropped (a record beyond the byte bound alone at once), each counted;
        the model forgets the dropped mids."""
        rec = before.records[m]
        record = failure_record(rec)
        sizes = {x: len(before.errors.get(x, b"")) for x in before.failed}
        dropped: list[str] = []
        if len(record) > MAX_FAILED_BYTES:
            dropped.append(m)
            history: list[str] = []
        else:
            sizes[m] = len(record)
            # Failed now: the newest, but after a mid failed in the same ms only by name
            # (the order of the sorted set).
            history = [x for _, x in sorted([*((t, x) for x, t in before.failed.items()), (clock, m)])]
            while len(history) > MAX_FAILED or sum(sizes[x] for x in history) > MAX_FAILED_BYTES:
                dropped.append(history.pop(0))
        for x in dropped:
            model[x] = MidModel("unknown", 0, False, model.get(x, MidModel()).life)
        if keys.failed_dropped != before.failed_dropped + len(dropped):
            raise Violation(
                f"failure of {m} dropped {dropped}, but the counter went"
                f" {before.failed_dropped} -> {keys.failed_dropped}"
            )
        if m not in dropped and keys.errors.get(m) != record:
            raise Violation(f"failure record of {m} is {keys.errors.get(m)!r}, expected {record!r}")

    @staticmethod
    def _history_argv(kind: str, arg: Any) -> list[str]:
        if kind == "replay-all":
            return ["all", "1000", "", "0"]
        if kind == "purge-all":
            return ["all", "1000", ""]
        return ["mids", arg]

    def _after_history_op(
        self,
        kind: str,
        arg: Any,
        reply: Any,
        before: Keys,
        keys: Keys,
        model: dict[str, MidModel],
        clock: int,
    ) -> str:
        """Check a replay or purge against the model; update the model; its step's label."""
        if keys.failed_dropped != before.failed_dropped:
            raise Violation(f"{kind} changed the drop counter")
        history = before.history()
        chosen = [arg] if kind in ("replay", "purge") else history
        failed_now = [m for m in chosen if model.get(m, MidModel()).status == "failed"]
        if kind == "replay":
            answer = _s(reply[0])
            mm = model.get(arg, MidModel())
            expect = "ok" if failed_now else ("unknown" if mm.status == "unknown" else "live")
            if answer != expect:
                raise Violation(f"replay of {arg} ({mm}) answered {answer!r}, expected {expect!r}")
            label = f"replay({arg})->{answer}"
        elif kind == "replay-all":
            if [int(reply[0]), int(reply[1])] != [len(failed_now), 0]:
                raise Violation(f"replay of all answered {reply}, the model has {failed_now} failed")
            label = f"replay-all->{int(reply[0])}"
        else:
            removed = int(reply) if kind == "purge" else int(reply[0])
            if removed != len(failed_now):
                raise Violation(f"{kind} of {chosen} removed {removed}, the model has {failed_now} failed")
            label = f"{kind}({arg or ''})->{removed}"
        if not failed_now:
            if keys.raw() != before.raw():
                raise Violation(f"{kind} of no failed mid changed the keys")
            return label
        for m in failed_now:
            mm = model[m]
            if kind.startswith("replay"):
                model[m] = MidModel("live", 0, False, mm.life + 1)
            else:
                model[m] = MidModel("unknown", 0, False, mm.life)
        if kind.startswith("replay"):
            # A new life each: a fresh entry at the tail, oldest failure first, with the
            # payload and lease the failure kept; idle workers woken.
            tail = [(e[1], e[3], e[4]) for e in keys.ready[len(keys.ready) - len(failed_now) :]]
            kept = {m: _FAILURE.unpack_from(before.errors[m]) for m in failed_now}
            expect_tail = [
                (m, _int(kept[m][2]) or None, before.errors[m][_FAILURE.size + kept[m][3] :])
                for m in failed_now
            ]
            if tail != expect_tail or len(keys.ready) != len(before.ready) + len(failed_now):
                raise Violation(f"{kind} left ready's tail {tail}, expected {expect_tail}")
            if not keys.notify:
                raise Violation(f"{kind} woke no worker")
        return label

    def _after_schedule(
        self, before: Keys, keys: Keys, model: dict[str, MidModel], now: int, wm: int, results: list[int]
    ) -> None:
        """Each slot due (after the watermark, not after now) is enqueued if its mid is new,
        and covered either way; any other is refused (-1). So the watermark never goes
        backwards and a slot is enqueued at most once."""
        old = before.watermark
        if old is not None and wm < old:
            raise Violation(f"the schedule's watermark went backwards: {old} -> {wm}")
        covered = now if old is None else old
        for t, r in zip(self.slots, results, strict=True):
            if t <= covered or t > now:
                if r != -1:
                    raise Violation(f"slot {t} (watermark {covered}, now {now}) answered {r}, not -1")
                continue
            mm = model.get(SCHEDULE_MID, MidModel())
            known = mm.status != "unknown"
            if r != (0 if known else 1):
                raise Violation(f"slot {t} of mid {SCHEDULE_MID} in model state {mm} answered {r}")
            if r == 1:
                model[SCHEDULE_MID] = MidModel("live", 0, False, mm.life + 1)
            covered = t
        if wm != covered or keys.watermark != wm:
            raise Violation(f"watermark replied {wm}, stored {keys.watermark}, expected {covered}")
        if 1 not in results and replace(keys, watermark=None).raw() != replace(before, watermark=None).raw():
            raise Violation("schedule enqueued no slot yet changed the queue's keys")

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
        self.r.set(self.clock_key, str(START_CLOCK))
        empty = Keys(frozenset(), (), {}, {}, {}, {}, {}, {}, {}, 0, None, None, None, 0)
        dumps: tuple[bytes | None, ...] = tuple([None] * len(self.data_keys))
        if self.max_size is not None:
            self.r.hset(self.k["meta"], "max_size", str(self.max_size))
        if self.max_per_key is not None:
            self.r.hset(self.k["meta"], "max_per_key", str(self.max_per_key))
        if self.rate_limit is not None:
            per_window, interval = self.rate_limit
            self.r.hset(self.k["meta"], mapping={"rate_limit": per_window, "rate_interval_ms": interval})
        if self.max_size is not None or self.rate_limit is not None or self.max_per_key is not None:
            dumps = self.wire.dump()
        return State(
            dumps,
            START_CLOCK,
            empty,
            tuple(() for _ in range(self.W)),
            tuple(frozenset() for _ in range(self.W)),
            {},
            (),
        )

    def _jobs(self, frontier: list[State]) -> Iterator[Job]:
        """Each state's scripted operations, for the wire; the state and every call (None
        for an operation that runs no script) ride along."""
        for s in frontier:
            assert s.dumps is not None
            ops = self.ops(s)
            calls = [self.call(s, op) for op in ops]
            yield Job(s.dumps, s.clock, [c for c in calls if c is not None], (s, ops, calls))

    def _expand(self, frontier: list[State], seen: set[Any], stats: Stats, t0: float) -> list[State]:
        """The next depth's frontier: the successors of `frontier` not seen before, each
        checked; in the frontier's order, each state's successors in the order of ops()."""
        nxt: list[State] = []
        for job, results in self.wire.run(self._jobs(frontier)):
            s, ops, calls = job.tag
            for op, result in zip(ops, _align(calls, results), strict=True):
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
            child = self.step(s, op, result)
            self.check_invariants(child)
            self.check_model(child)
        except Violation as exc:
            last = f"{op[0]}{op[1]!r}" if child is None else child.path[-1]
            path = [*s.path, last + "  <- FAILED HERE"]
            raise Violation(
                f"{exc}\nafter {len(path)} steps (shortest, breadth-first):\n  " + "\n  ".join(path),
                tuple(path),
            ) from None
        return child


def _token_ranks(s: State) -> dict[int, int]:
    """Every token the state mentions by its rank (0 stays 0: no lease)."""
    tokens: set[int] = {r.token for r in s.keys.records.values() if r.token}
    for held in s.leases:
        tokens.update(t for _, t, _, _ in held)
    for st in s.stale:
        tokens.update(t for _, t, _ in st)
    rank = {t: i + 1 for i, t in enumerate(sorted(tokens))}
    rank[0] = 0
    return rank


def _model_fp(mm: MidModel, c: int) -> tuple[str, int, bool] | None:
    """A mid's model, its de-dup window relative to the clock; None if it says nothing."""
    if mm.status == "unknown" and not mm.pending:
        return None
    return (mm.status, mm.done_until - c if mm.status == "done" else 0, mm.pending)


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
