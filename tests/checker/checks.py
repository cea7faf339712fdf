"""The checks of every state reached: the invariants of the stored keys alone
(check_invariants), and their agreement with what the replies said (check_model)."""

from __future__ import annotations

from typing import Any

from tests.layout import OVERRIDES, POINTER

from .bounds import MAX_FAILED, MAX_FAILED_BYTES
from .state import State, Violation


def check_invariants(s: State) -> None:
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
                if kind != POINTER and rec is not None and not (rec.state == "r" and rec.flags & OVERRIDES):
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


def check_model(s: State) -> None:
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
            w for w, held in enumerate(s.leases) if any(hm == m and t == rec.token for hm, t, _, _ in held)
        ]
        if len(holders) > 1:
            raise Violation(f"workers {holders} both hold the current lease of {m}")
