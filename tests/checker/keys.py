"""The decoding of a queue's stored content: the ready entries, the records, the failure
records, and Keys, the snapshot of every key a step reads back (read_commands lists the
reads, decode_keys decodes their replies)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from tests import layout

from .bounds import REASON

FAILURE = struct.Struct(">BI5sI")


def as_int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def decode_entry(raw: bytes) -> tuple[int, str, int | None, int | None, bytes | None]:
    """An entry of ``ready`` as a plain tuple, which the fingerprint orders and unpacks."""
    e = layout.decode_entry(raw)
    return (e.kind, e.mid, e.enqueued_ms, e.lock_ms, e.payload)


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
    return FAILURE.pack(1, rec.attempts, rec.lock.to_bytes(5, "big"), len(REASON)) + REASON + payload


def decode_record(raw: bytes) -> Rec:
    r = layout.decode_record(raw)
    return Rec(r.state, r.flags, r.enqueued_ms, r.due_ms, r.attempts, r.lock_ms, r.token, r.payload)


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


def as_str(b: bytes) -> str:
    return b.decode()


def read_commands(
    k: dict[str, bytes], schedules_key: bytes, rate_limit: tuple[int, int] | None, max_per_key: int | None
) -> list[list[Any]]:
    """The commands that read a step's outcome back: the keys (decoded by decode_keys),
    then meta's flow-control fields when they are explored."""
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
        ["HGET", schedules_key, "s"],  # the schedule's watermark
    ]
    if rate_limit:
        cmds.append(["HMGET", k["meta"], "rate_window", "rate_count", "paused_until"])
    if max_per_key:
        cmds.append(["HGET", k["meta"], "held:K"])
    return cmds


def decode_keys(res: list[Any]) -> Keys:
    """The Keys of the replies to read_commands (the keys' part, the first twelve)."""
    (mids, ready, records, delayed, locks, done, requeue, failed, errors, notify, meta) = res[:11]
    seq, version, failed_bytes, failed_dropped = meta
    watermark = res[11]

    def pairs(flat: list[bytes]) -> list[tuple[str, bytes]]:
        return [(as_str(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]

    return Keys(
        mids=frozenset(as_str(m) for m in mids),
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
