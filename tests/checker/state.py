"""What a state holds besides the stored keys (what the workers believe: their leases, the
stale leases they once held, a model of each mid from the replies only), the state itself,
and what a search reports: a Violation (with its counter-example) or its Stats."""

from __future__ import annotations

from dataclasses import dataclass, field

from .keys import Keys

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
