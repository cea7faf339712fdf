"""The step: the successor of a state by one operation, given the operation's outcome on
the server, with the reply checked against the model and the model brought up to date."""

from __future__ import annotations

from typing import Any

from .after import after_ack, after_history_op, after_schedule, check_rate, flow_after, held_after
from .bounds import START_CLOCK, Bounds
from .keys import Keys, as_str, decode_keys
from .ops import acked, allowed_suspects
from .state import MidModel, Stale, State, Violation
from .wire import Result


def step(b: Bounds, s: State, op: tuple[str, Any], result: Result | None) -> State:
    """The successor of `s` by `op`, checked against the model; `result` is the op's
    outcome on the server (fetched in the state's batch), None for an op that runs no script."""
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
        assert result is not None
        reply, keys, dumps = scripted_outcome(result)

    if kind in ("tick", "jump"):
        clock = s.clock + 1 if kind == "tick" else arg
        label = f"clock={clock - START_CLOCK}"
        keys, dumps = s.keys, s.dumps  # the keys do not change: only the clock
    elif kind == "crash":
        label = f"crash(w{arg})"
        for m, t, _, lf in leases[arg]:
            stale[arg] = add_stale(stale[arg], (m, t, lf))
        leases[arg] = ()
        keys, dumps = s.keys, s.dumps
    elif kind == "enqueue":
        m, delay, flags, payload = arg
        label = f"enqueue({m}, delay={delay}, flags={flags}, {payload})"
        r = as_str(reply[0])
        label += f"->{r}"
        mm = model.get(m, MidModel())
        can_requeue = flags == "2"
        can_update = flags == "1"
        fresh = mm.status in ("unknown", "failed") or (
            mm.status == "done" and mm.done_until <= clock and not mm.pending
        )
        expect: str | None = None
        full = b.max_size is not None and len(before.live()) >= b.max_size
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
        if b.max_size is not None and len(keys.live()) > max(b.max_size, len(before.live())):
            raise Violation(f"enqueue of {m} left {len(keys.live())} live messages, max_size {b.max_size}")
        if r in ("backoff", "locked", "already-queued", "full") and keys.raw() != before.raw():
            raise Violation(f"enqueue of {m} answered {r!r} yet changed the keys")  # (6)
        if expect is not None and r != expect:
            raise Violation(
                f"enqueue of {m} in model state {mm} at clock {clock} answered {r!r}, expected {expect!r}"
            )
    elif kind == "dequeue":
        w, n = arg
        max_suspects = allowed_suspects(leases[w])
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
        got: list[Any] = []
        for i in range(0, len(msgs), 7):
            m, token, sus = as_str(msgs[i]), int(msgs[i + 5]), int(msgs[i + 6])
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
        if b.rate_limit:
            check_rate(b.rate_limit, s, len(got), now)
    elif kind in ("ack", "stale-ack"):
        w, lease = arg[:2]
        m, token, outcome = acked(op)
        life = lease[-1]
        label = f"{kind}(w{w}, {m}, t{token}, {outcome})"
        applied = int(reply[0])
        label += f"->{applied}"
        if kind == "ack":
            leases[w] = tuple(x for x in leases[w] if x != lease)
            stale[w] = add_stale(stale[w], (m, token, life))
        after_ack(before, keys, model, m, token, life, outcome, applied, clock)
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
        label = after_history_op(kind, arg, reply, before, keys, model, clock)
    elif kind == "schedule":
        results = [int(x) for x in reply[2:]]
        label = f"schedule->{results} watermark={int(reply[1]) - START_CLOCK}"
        after_schedule(b.slots, before, keys, model, int(reply[0]), int(reply[1]), results)
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
            stale[w] = add_stale(stale[w], (m, token, lease[3]))
    else:
        raise ValueError(kind)
    if kind in ("enqueue", "dequeue", "clear", "extend") and keys.failed_dropped != before.failed_dropped:
        raise Violation(f"{kind} changed the failure history's drop counter")

    flow = flow_after(s, result) if b.rate_limit else s.flow
    held = held_after(b.max_per_key, s, result, keys) if b.max_per_key else s.held
    return State(dumps, clock, keys, tuple(leases), tuple(stale), model, (*s.path, label), flow, held)


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
