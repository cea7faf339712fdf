"""The canonical fingerprint of a state: the symmetry reduction. Two states with the same
fingerprint have the same futures, so the search explores only one of them."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from .bounds import Bounds
from .keys import Keys, Rec
from .least import assemble, least
from .state import MidModel, State


class Canon:
    """The fingerprints of the states of a run with bounds `b`."""

    def __init__(self, b: Bounds) -> None:
        self.b = b
        # Mids that get the same operations are interchangeable: canonical under their permutations.
        same = list(b.mids[b.variants_for :]) if b.variants_for < len(b.mids) else []
        if len(same) > 1:
            self.perms = [
                {**{m: m for m in b.mids}, **dict(zip(same, p, strict=True))}
                for p in itertools.permutations(same)
            ]
        else:
            self.perms = [{m: m for m in b.mids}]

    def of(self, s: State) -> tuple[Any, ...]:
        """The canonical form of a state; the least over the symmetries (workers are
        interchangeable, and so are the mids that get the same operations)."""
        rank = token_ranks(s)
        return assemble(least([self.parts(s, ren, rank) for ren in self.perms]))

    def _record_fp(self, r: Rec, rank: dict[int, int], c: int) -> tuple[Any, ...]:
        due = r.due - c if self.b.with_priorities else 0
        return (r.state, r.flags, r.attempts, r.lock, rank[r.token], r.payload, due)

    def parts(self, s: State, ren: dict[str, str], rank: dict[int, int]) -> Iterator[Any]:
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

        timed = self.b.with_priorities

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
        if self.b.max_per_key:
            extra += (s.held,)
        if self.b.rate_limit:
            window, count, paused = s.flow
            extra += (window * self.b.rate_limit[1] - c, count, max(paused - c, 0))
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
        if not self.b.slots:
            return None
        wm = s.keys.watermark
        covered = -1 if wm is None else sum(1 for t in self.b.slots if t <= wm)
        return (sum(1 for t in self.b.slots if t <= s.clock), covered)


def token_ranks(s: State) -> dict[int, int]:
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
