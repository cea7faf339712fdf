"""The checks after a step that depend on the operation: an ack, a replay or purge, a tick
of the schedule, and the flow-control state a step leaves (rate window and pause, the
leases of a key). Each checks the reply and the keys against the model, then brings the
model up to date."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .bounds import MAX_FAILED, MAX_FAILED_BYTES, SCHEDULE_MID
from .keys import FAILURE, Keys, as_int, as_str, failure_record
from .state import MidModel, State, Violation
from .wire import Result


def after_ack(
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
        raise Violation(f"ack {outcome} of {m} with token {token} applied, but the current lease is {rec}")
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
            MidModel("live", 0, False, mm.life + 1) if mm.pending else MidModel("unknown", 0, False, mm.life)
        )
    elif outcome.startswith("s"):
        model[m] = MidModel("done", clock + int(outcome[1:]), mm.pending, mm.life)
    elif outcome == "f":
        if mm.pending:
            model[m] = MidModel("live", 0, False, mm.life + 1)
        else:
            model[m] = MidModel("failed", 0, False, mm.life)
            check_failure_recorded(before, keys, model, m, clock)


def check_failure_recorded(before: Keys, keys: Keys, model: dict[str, MidModel], m: str, clock: int) -> None:
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


def after_history_op(
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
        answer = as_str(reply[0])
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
        kept = {m: FAILURE.unpack_from(before.errors[m]) for m in failed_now}
        expect_tail = [
            (m, as_int(kept[m][2]) or None, before.errors[m][FAILURE.size + kept[m][3] :]) for m in failed_now
        ]
        if tail != expect_tail or len(keys.ready) != len(before.ready) + len(failed_now):
            raise Violation(f"{kind} left ready's tail {tail}, expected {expect_tail}")
        if not keys.notify:
            raise Violation(f"{kind} woke no worker")
    return label


def after_schedule(
    slots: tuple[int, ...],
    before: Keys,
    keys: Keys,
    model: dict[str, MidModel],
    now: int,
    wm: int,
    results: list[int],
) -> None:
    """Each slot due (after the watermark, not after now) is enqueued if its mid is new,
    and covered either way; any other is refused (-1). So the watermark never goes
    backwards and a slot is enqueued at most once."""
    old = before.watermark
    if old is not None and wm < old:
        raise Violation(f"the schedule's watermark went backwards: {old} -> {wm}")
    covered = now if old is None else old
    for t, r in zip(slots, results, strict=True):
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


def held_after(max_per_key: int | None, s: State, result: Result | None, keys: Keys) -> int:
    """meta's count of key K's leases: exactly the leased records of key K, at most max_per_key."""
    if result is None:
        return s.held  # no script ran
    held = int(result.reads[-1] or 0)  # the last read when per-key limits are explored
    leased = sum(
        1 for r in keys.records.values() if r.state == "l" and r.flags & 4 and r.payload[:3] == b"\x00\x01K"
    )
    if held != leased:
        raise Violation(f"meta held:K is {held}, yet {leased} messages of key K are leased")
    assert max_per_key is not None
    if leased > max_per_key:
        raise Violation(f"{leased} messages of key K leased at once, max_per_key {max_per_key}")
    return held


def flow_after(s: State, result: Result | None) -> tuple[int, int, int]:
    """meta's rate window, count and pause, as the step left them on the server."""
    if result is None:
        return s.flow  # no script ran
    raw = result.reads[12]  # the read after the keys' when rate limits are explored
    window, count, paused = (int(v) if v is not None else 0 for v in raw)
    if paused < s.flow[2]:
        raise Violation(f"paused_until went back from {s.flow[2]} to {paused}")
    return window, count, paused


def check_rate(rate_limit: tuple[int, int] | None, s: State, handed: int, now: int) -> None:
    """A dequeue hands out nothing while paused, and at most the limit per window."""
    assert rate_limit is not None
    per_window, interval = rate_limit
    window, count, paused = s.flow
    if paused > now and handed:
        raise Violation(f"dequeue handed out {handed} while the queue is paused until {paused}")
    used = count if window == now // interval else 0
    if used + handed > per_window:
        raise Violation(f"dequeue handed out {handed} with {used} of {per_window} used in this window")
