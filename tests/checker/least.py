"""The least of a state's fingerprints under the renamings of its interchangeable mids.

A fingerprint is built part by part (Explorer._fp_parts), so that renamings can be
compared part by part and only the least one computed in full.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

__all__ = ["assemble", "least"]

# The fingerprint's first parts are the keys' (grouped in a tuple of their own), then the
# workers', the model's, and the flow-control counters' if any.
_KEY_PARTS = 14


def assemble(parts: list[Any]) -> tuple[Any, ...]:
    return (tuple(parts[:_KEY_PARTS]), *parts[_KEY_PARTS:])


def least(candidates: list[Iterator[Any]]) -> list[Any]:
    """The parts of the least fingerprint by repr, each renaming's computed only while it
    can still be the least. Part by part: the repr of a tuple of parts is their reprs in
    order, each self-delimiting (a tuple's closes its parentheses, a bytes' its quotes) or
    a number, followed by a comma or a parenthesis, below every digit; so the first part
    whose reprs differ decides. Not by hash: the fingerprint is not equivariant (past
    scores of the same value are ranked by the renamed mid), so two equivalent states can
    have different sets of fingerprints that share their least by repr only; the least
    by hash would change the states explored, from run to run."""
    if len(candidates) == 2:
        return _least_of_two(*candidates)
    done: list[list[Any]] = [[] for _ in candidates]
    live = list(range(len(candidates)))
    for parts in itertools.zip_longest(*candidates):
        here = [parts[i] for i in live]
        for i, part in zip(live, here, strict=True):
            done[i].append(part)
        first = here[0]
        if len(live) > 1 and any(part != first for part in here[1:]):
            reprs = [repr(part) for part in here]
            least = min(reprs)
            live = [i for i, r in zip(live, reprs, strict=True) if r == least]
            if len(live) == 1:
                (winner,) = live
                done[winner].extend(candidates[winner])
                return done[winner]
    return done[live[0]]


def _least_of_two(a: Iterator[Any], b: Iterator[Any]) -> list[Any]:
    """least() of two renamings (the common case: two interchangeable mids), faster."""
    done_a: list[Any] = []
    done_b: list[Any] = []
    for x, y in zip(a, b, strict=True):
        done_a.append(x)
        done_b.append(y)
        if x != y:
            if repr(y) < repr(x):
                done_b.extend(b)
                return done_b
            done_a.extend(a)
            return done_a
    return done_a
