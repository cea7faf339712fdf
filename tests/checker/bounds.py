"""What a run of the checker explores: the constants of its alphabet and clock, and the
bounds and options (Bounds) that decide which operations a state offers."""

from __future__ import annotations

from dataclasses import dataclass

MIDS = ("a", "b", "c", "d", "e")
START_CLOCK = 1_000_000
LOCK_MS = 1000
# The failure history's bounds: two entries, and fewer bytes than two whose payload is the
# update variant's (REASON, and the failure header: keys.py): both bounds drop within depth 8.
MAX_FAILED = 2
MAX_FAILED_BYTES = 40
REASON = b"x"
UPDATED = "u" * 20
# The schedule's slots (ms), each enqueueing mid "a": a few, right after the start, so
# that ticks reach them; one mid, so that it keeps b and c interchangeable.
SCHEDULE_SLOTS = (START_CLOCK + 1, START_CLOCK + 2, START_CLOCK + 3)
SCHEDULE_MID = "a"
KEYED_PAYLOAD = "\x00\x01Kp"  # key K ([>I2] length 1, then "K") before the payload "p"


@dataclass(frozen=True)
class Bounds:
    """The workers, mids and operations a run explores (Explorer's arguments)."""

    workers: int
    mids: tuple[str, ...]
    # Enqueue variants (can_update, can_requeue, delayed) only for the first n mids.
    variants_for: int
    with_extend: bool
    with_stale_acks: bool
    with_clear: bool
    with_dequeue2: bool
    with_history: bool
    slots: tuple[int, ...]
    # Bounded queue (flow control): `meta`'s max_size, set before the first step.
    max_size: int | None
    # Priorities (flow control): every mid may also be enqueued at level 1, the first at 2.
    with_priorities: bool
    # Rate limit (flow control): (messages per window, window in ms) in meta from the start,
    # and the RateLimited outcome 'p' (retry and pause the queue) offered to every lease.
    rate_limit: tuple[int, int] | None
    # Per-key concurrency: max_per_key in meta, and every mid may also be enqueued with key K.
    max_per_key: int | None
