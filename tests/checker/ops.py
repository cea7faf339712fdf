"""The operations a state offers (ops), and the script call each one makes (call)."""

from __future__ import annotations

from typing import Any

from .bounds import (
    KEYED_PAYLOAD,
    LOCK_MS,
    MAX_FAILED,
    MAX_FAILED_BYTES,
    REASON,
    SCHEDULE_MID,
    UPDATED,
    Bounds,
)
from .state import Lease, State
from .wire import Call


def ops(b: Bounds, s: State) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for i, m in enumerate(b.mids):
        out.append(("enqueue", (m, "0", "0", "p")))
        if i < b.variants_for:
            out.append(("enqueue", (m, "0", "1", UPDATED)))
            out.append(("enqueue", (m, "0", "2", "q")))
            out.append(("enqueue", (m, "100", "0", "p")))
        if b.with_priorities:
            out.append(("enqueue", (m, "0", "8", "p")))  # level 1 (flags carry 8 * level)
            if i == 0:
                out.append(("enqueue", (m, "0", "16", "p")))
        if b.max_per_key:
            out.append(("enqueue", (m, "0", "128", KEYED_PAYLOAD)))  # 128: the payload starts with its key
    for w in range(b.workers):
        out.append(("dequeue", (w, 1)))
        if b.with_dequeue2:
            out.append(("dequeue", (w, 2)))
    for w, held in enumerate(s.leases):
        for lease in held:
            for outcome in ("s", "s500", "r", "r100", "f", *(("p2",) if b.rate_limit else ())):
                out.append(("ack", (w, lease, outcome)))
            if b.with_extend:
                out.append(("extend", (w, lease)))
    if b.with_stale_acks:
        for w, st in enumerate(s.stale):
            for stale in sorted(st):
                out.append(("stale-ack", (w, stale)))
    for w, held in enumerate(s.leases):
        if held:
            out.append(("crash", w))
    if b.with_clear and s.keys.mids:
        out.append(("clear", None))
    if b.with_history:
        # Replay and purge of the failed mids only: of a mid not in the history they write
        # nothing (integration tests cover those answers), and offered in every state
        # they would cost more transitions than the rest together.
        for m in sorted(s.keys.failed):
            out.append(("replay", m))
            out.append(("purge", m))
        if len(s.keys.failed) > 1:
            out.append(("replay-all", None))
            out.append(("purge-all", None))
    if b.slots:
        out.append(("schedule", ()))
    out.append(("tick", 1))
    events = [v for d in (s.keys.delayed, s.keys.locks, s.keys.done) for v in d.values() if v + 1 > s.clock]
    if events and min(events) + 1 > s.clock + 1:
        out.append(("jump", min(events) + 1))
    return out


def allowed_suspects(held: tuple[Lease, ...]) -> int:
    """A worker holding a suspect takes no other (the client's rule)."""
    return 0 if any(sus for _, _, sus, _ in held) else 1


def call(b: Bounds, s: State, op: tuple[str, Any]) -> Call | None:
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
        return ("dequeue", [str(n), str(LOCK_MS), "256", str(allowed_suspects(s.leases[w]))])
    if kind in ("ack", "stale-ack"):
        m, token, outcome = acked(op)
        return (
            "ack",
            [str(MAX_FAILED), str(MAX_FAILED_BYTES), "1", m, str(token), outcome]
            + ([REASON.decode()] if outcome == "f" else []),
        )
    if kind == "clear":
        return ("clear", [])
    if kind in ("replay", "purge", "replay-all", "purge-all"):
        return (kind.removesuffix("-all"), history_argv(kind, arg))
    if kind == "schedule":
        return ("schedule", ["s", "p", *(x for t in b.slots for x in (str(t), SCHEDULE_MID))])
    if kind == "extend":
        _, (m, token, _, _) = arg
        return ("extend", [m, str(token), str(LOCK_MS)])
    return None


def acked(op: tuple[str, Any]) -> tuple[str, int, str]:
    """The mid, token and outcome of an ack (a stale ack's outcome is 's')."""
    kind, arg = op
    if kind == "ack":
        _, (m, token, _, _), outcome = arg
        return m, token, outcome
    _, (m, token, _) = arg
    return m, token, "s"


def history_argv(kind: str, arg: Any) -> list[str]:
    if kind == "replay-all":
        return ["all", "1000", "", "0"]
    if kind == "purge-all":
        return ["all", "1000", ""]
    return ["mids", arg]
