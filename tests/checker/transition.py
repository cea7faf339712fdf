"""The step: the successor of a state by one operation, given the operation's outcome on
the server, with the reply checked against the model and the model brought up to date.

`step` takes what every operation shares (the state's parts, the reply and the keys the
script left); one function per kind of operation checks its reply and returns its label."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .after import after_ack, after_history_op, after_schedule, check_rate, flow_after, held_after
from .bounds import START_CLOCK, Bounds
from .keys import Keys, as_str, decode_keys
from .ops import acked, allowed_suspects
from .state import Lease, MidModel, Stale, State, Violation
from .wire import Result

_UNSCRIPTED = ("tick", "jump", "crash")


@dataclass
class _Step:
    """One step under way: the parts of the successor, changed in place by the op's check."""

    b: Bounds
    kind: str
    s: State  # the state the step starts from
    before: Keys  # its keys
    keys: Keys  # the keys the op left
    reply: Any  # the script's reply (None for an op that runs no script)
    model: dict[str, MidModel]
    leases: list[tuple[Lease, ...]]
    stale: list[frozenset[Stale]]
    clock: int


def step(b: Bounds, s: State, op: tuple[str, Any], result: Result | None) -> State:
    """The successor of `s` by `op`, checked against the model; `result` is the op's
    outcome on the server (fetched in the state's batch), None for an op that runs no script."""
    kind, arg = op
    reply: Any = None
    dumps: tuple[bytes | None, ...] | None
    if kind in _UNSCRIPTED:
        keys, dumps = s.keys, s.dumps  # the keys do not change
    else:
        assert result is not None
        reply, keys, dumps = scripted_outcome(result)
    st = _Step(b, kind, s, s.keys, keys, reply, dict(s.model), list(s.leases), list(s.stale), s.clock)
    if kind not in _STEPS:
        raise ValueError(kind)
    label = _STEPS[kind](st, arg)
    if kind in ("enqueue", "dequeue", "clear", "extend") and keys.failed_dropped != s.keys.failed_dropped:
        raise Violation(f"{kind} changed the failure history's drop counter")
    flow = flow_after(s, result) if b.rate_limit else s.flow
    held = held_after(b.max_per_key, s, result, keys) if b.max_per_key else s.held
    return State(
        dumps, st.clock, keys, tuple(st.leases), tuple(st.stale), st.model, (*s.path, label), flow, held
    )


def _clock(st: _Step, arg: Any) -> str:
    st.clock = st.clock + 1 if st.kind == "tick" else arg
    return f"clock={st.clock - START_CLOCK}"


def _crash(st: _Step, w: int) -> str:
    for m, t, _, life in st.leases[w]:
        st.stale[w] = add_stale(st.stale[w], (m, t, life))
    st.leases[w] = ()
    return f"crash(w{w})"


def _enqueue(st: _Step, arg: Any) -> str:
    m, delay, flags, payload = arg
    r = as_str(st.reply[0])
    before, keys, model, clock, max_size = st.before, st.keys, st.model, st.clock, st.b.max_size
    mm = model.get(m, MidModel())
    can_requeue = flags == "2"
    can_update = flags == "1"
    fresh = mm.status in ("unknown", "failed") or (
        mm.status == "done" and mm.done_until <= clock and not mm.pending
    )
    expect: str | None = None
    full = max_size is not None and len(before.live()) >= max_size
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
    if max_size is not None and len(keys.live()) > max(max_size, len(before.live())):
        raise Violation(f"enqueue of {m} left {len(keys.live())} live messages, max_size {max_size}")
    if r in ("backoff", "locked", "already-queued", "full") and keys.raw() != before.raw():
        raise Violation(f"enqueue of {m} answered {r!r} yet changed the keys")  # (6)
    if expect is not None and r != expect:
        raise Violation(
            f"enqueue of {m} in model state {mm} at clock {clock} answered {r!r}, expected {expect!r}"
        )
    return f"enqueue({m}, delay={delay}, flags={flags}, {payload})->{r}"


def _dequeue(st: _Step, arg: Any) -> str:
    w, n = arg
    reply, before, model = st.reply, st.before, st.model
    max_suspects = allowed_suspects(st.leases[w])
    label = f"dequeue(w{w}, n={n}, max_suspects={max_suspects})"
    now = int(reply[0])
    # Housekeeping: ended windows are forgotten or start their pending requeue.
    if len(reply) > 5 or before.locks or before.delayed or before.done or before.ready or before.notify:
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
    got: list[Lease] = []
    for i in range(0, len(msgs), 7):
        m, token, sus = as_str(msgs[i]), int(msgs[i + 5]), int(msgs[i + 6])
        suspects += sus
        if m in before.locks and before.locks[m] > now:
            raise Violation(f"dequeue handed out {m}, whose lease runs until {before.locks[m] - START_CLOCK}")
        if any(g[0] == m for g in got):
            raise Violation(f"dequeue handed out {m} twice in one call")
        mm = model.get(m, MidModel())
        if mm.status != "live":
            raise Violation(f"dequeue handed out {m}, not live per the replies ({mm})")
        got.append((m, token, sus, mm.life))
        label += f"->({m},t{token}{',suspect' if sus else ''})"
    if suspects > max_suspects:  # (7)
        raise Violation(f"dequeue with max_suspects={max_suspects} handed out {suspects} suspects")
    st.leases[w] = st.leases[w] + tuple(got)
    if st.b.rate_limit:
        check_rate(st.b.rate_limit, st.s, len(got), now)
    return label


def _ack(st: _Step, arg: Any) -> str:
    w, lease = arg[:2]
    m, token, outcome = acked((st.kind, arg))
    life = lease[-1]
    applied = int(st.reply[0])
    if st.kind == "ack":
        st.leases[w] = tuple(x for x in st.leases[w] if x != lease)
        st.stale[w] = add_stale(st.stale[w], (m, token, life))
    after_ack(st.before, st.keys, st.model, m, token, life, outcome, applied, st.clock)
    return f"{st.kind}(w{w}, {m}, t{token}, {outcome})->{applied}"


def _clear(st: _Step, arg: Any) -> str:
    model, keys = st.model, st.keys
    live = sum(1 for mm in model.values() if mm.status == "live")
    if int(st.reply) != live:
        raise Violation(f"clear answered {st.reply} removed, the replies say {live} were live")
    if keys.mids or keys.ready or keys.records or keys.requeue:
        raise Violation(f"clear left messages behind: {keys}")
    # Every mid is forgotten; the workers still hold their leases, whose acks must
    # now answer 0 and change nothing (a new life has a new number).
    for m, mm in list(model.items()):
        model[m] = MidModel("unknown", 0, False, mm.life + 1)
    return f"clear->{st.reply}"


def _history(st: _Step, arg: Any) -> str:
    return after_history_op(st.kind, arg, st.reply, st.before, st.keys, st.model, st.clock)


def _schedule(st: _Step, arg: Any) -> str:
    reply = st.reply
    results = [int(x) for x in reply[2:]]
    after_schedule(st.b.slots, st.before, st.keys, st.model, int(reply[0]), int(reply[1]), results)
    return f"schedule->{results} watermark={int(reply[1]) - START_CLOCK}"


def _extend(st: _Step, arg: Any) -> str:
    w, lease = arg
    m, token, _, life = lease
    applied = int(st.reply[0])
    rec = st.before.records.get(m)
    current = rec is not None and rec.state == "l" and rec.token == token
    if applied and not current:
        raise Violation(f"extend of {m} with token {token} applied, but the current lease is {rec}")
    if not applied:
        if current:
            raise Violation(f"extend of the current lease of {m} (token {token}) answered 0")
        if st.keys.raw() != st.before.raw():
            raise Violation("extend answered 0 yet changed the keys")  # (4)
        st.leases[w] = tuple(x for x in st.leases[w] if x != lease)
        st.stale[w] = add_stale(st.stale[w], (m, token, life))
    return f"extend(w{w}, {m}, t{token})->{applied}"


_STEPS: dict[str, Callable[[_Step, Any], str]] = {
    "tick": _clock,
    "jump": _clock,
    "crash": _crash,
    "enqueue": _enqueue,
    "dequeue": _dequeue,
    "ack": _ack,
    "stale-ack": _ack,
    "clear": _clear,
    "replay": _history,
    "purge": _history,
    "replay-all": _history,
    "purge-all": _history,
    "schedule": _schedule,
    "extend": _extend,
}


def scripted_outcome(result: Result) -> tuple[Any, Keys, tuple[bytes | None, ...]]:
    """A scripted step's reply, the keys it left and their DUMPs."""
    if isinstance(result.reply, Exception):
        script, argv = result.call
        raise Violation(f"script {script} {list(argv)} raised: {result.reply}")
    return result.reply, decode_keys(result.reads), result.dumps


def add_stale(stale: frozenset[Stale], item: Stale) -> frozenset[Stale]:
    # Tokens only grow: a worker's newest stale token of a mid dominates its older ones.
    others = {x for x in stale if x[0] != item[0]}
    same = [x for x in stale if x[0] == item[0]] + [item]
    return frozenset(others | {max(same, key=lambda x: x[1])})
