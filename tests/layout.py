"""Reading a queue's protocol-version-2 keys directly, for white-box tests.

Decodes the encodings documented in ``src/vermilion/lua/_common.lua``: the
entries of ``ready`` and the records of ``records``. Tests use these instead
of poking at the bytes, so that each keeps asserting what it asserted on the
layout it was written for.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import redis.asyncio as aioredis

from vermilion._keys import QueueKeys

POINTER, FRESH, FRESH_WITH_LEASE = 0, 1, 2
SUSPECT, OVERRIDES = 1, 2
_RECORD = struct.Struct(">BB6s6sI5s7s")


@dataclass(frozen=True)
class Entry:
    """One entry of ``ready``: a pointer to a record, or a fresh message."""

    kind: int
    mid: str
    enqueued_ms: int | None = None
    lock_ms: int | None = None
    payload: bytes | None = None


@dataclass(frozen=True)
class Record:
    state: str  # 'r' ready, 'd' delayed, 'l' leased
    flags: int
    enqueued_ms: int
    due_ms: int
    attempts: int
    lock_ms: int  # 0: the worker's default
    token: int  # 0: none
    payload: bytes

    @property
    def suspect(self) -> bool:
        return bool(self.flags & SUSPECT)


def _as_bytes(raw: bytes | str) -> bytes:
    """What redis-py answers, typed as either: bytes, for a client that does not decode."""
    return raw if isinstance(raw, bytes) else raw.encode()


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def decode_entry(raw: bytes | str) -> Entry:
    raw = _as_bytes(raw)
    kind, n = raw[0], raw[1]
    at = 2
    if n == 255:
        n = _int(raw[2:4])
        at = 4
    mid = raw[at : at + n].decode()
    at += n
    if kind == POINTER:
        return Entry(kind, mid)
    enqueued = _int(raw[at : at + 6])
    at += 6
    lock = None
    if kind == FRESH_WITH_LEASE:
        lock = _int(raw[at : at + 5])
        at += 5
    return Entry(kind, mid, enqueued, lock, raw[at:])


def encode_pointer(mid: str) -> bytes:
    """The entry a script pushes for a message whose record holds it."""
    data = mid.encode()
    return bytes([POINTER, len(data)]) + data


def decode_record(raw: bytes | str) -> Record:
    raw = _as_bytes(raw)
    state, flags, enq, due, attempts, lock, token = _RECORD.unpack_from(raw)
    return Record(chr(state), flags, _int(enq), _int(due), attempts, _int(lock), _int(token), raw[30:])


async def ready_mids(redis: aioredis.Redis, keys: QueueKeys) -> list[str]:
    """The mids of ``ready``'s entries, head first."""
    return [decode_entry(raw).mid for raw in await redis.lrange(keys.key("ready"), 0, -1)]


async def record(redis: aioredis.Redis, keys: QueueKeys, mid: str) -> Record | None:
    raw = await redis.hget(keys.key("records"), mid)
    return None if raw is None else decode_record(raw)


async def attempts(redis: aioredis.Redis, keys: QueueKeys, mid: str) -> int:
    """Times ``mid`` was handed out in its current life (0 if it has no record)."""
    found = await record(redis, keys, mid)
    return 0 if found is None else found.attempts


async def lease_token(redis: aioredis.Redis, keys: QueueKeys, mid: str) -> int | None:
    """The token of ``mid``'s current lease, or None."""
    found = await record(redis, keys, mid)
    return found.token if found is not None and found.state == "l" else None


async def is_suspect(redis: aioredis.Redis, keys: QueueKeys, mid: str) -> bool:
    found = await record(redis, keys, mid)
    return found is not None and found.suspect


async def payload(redis: aioredis.Redis, keys: QueueKeys, mid: str) -> bytes | None:
    """The payload of a live ``mid``: its record's, else its fresh entry's."""
    found = await record(redis, keys, mid)
    if found is not None:  # an overriding record replaces the fresh entry's payload
        return found.payload
    for raw in await redis.lrange(keys.key("ready"), 0, -1):
        entry = decode_entry(raw)
        if entry.mid == mid and entry.kind != POINTER:
            return entry.payload
    return None


async def is_live(redis: aioredis.Redis, keys: QueueKeys, mid: str) -> bool:
    """Whether ``mid`` is queued, delayed or leased (not done, failed or unknown)."""
    if not await redis.sismember(keys.key("mids"), mid):
        return False
    return (
        await redis.zscore(keys.key("done"), mid) is None
        and await redis.zscore(keys.key("failed"), mid) is None
    )


def encode_fresh(mid: bytes, enqueued_ms: int, payload: bytes, lock_ms: int | None = None) -> bytes:
    """The entry a script pushes for a new message (``mid`` as raw bytes, < 255 of them)."""
    kind = FRESH if lock_ms is None else FRESH_WITH_LEASE
    head = bytes([kind, len(mid)]) + mid + enqueued_ms.to_bytes(6, "big")
    if lock_ms is not None:
        head += lock_ms.to_bytes(5, "big")
    return head + payload


def encode_record(
    state: str,
    payload: bytes,
    *,
    flags: int = 0,
    enqueued_ms: int = 0,
    due_ms: int = 0,
    attempts: int = 0,
    lock_ms: int = 0,
    token: int = 0,
) -> bytes:
    """A record as the scripts write it: the 30-byte header, then the payload."""
    return (
        bytes([ord(state), flags])
        + enqueued_ms.to_bytes(6, "big")
        + due_ms.to_bytes(6, "big")
        + attempts.to_bytes(4, "big")
        + lock_ms.to_bytes(5, "big")
        + token.to_bytes(7, "big")
        + payload
    )


async def make_ready_with_record(
    redis: aioredis.Redis, keys: QueueKeys, mid: str, record_bytes: bytes
) -> None:
    """Turn a new message waiting in ``ready`` into one held by a record (as after a retry),
    with the record's bytes given: its fresh entry becomes a pointer at the tail."""
    for raw in await redis.lrange(keys.key("ready"), 0, -1):
        if decode_entry(raw).mid == mid:
            await redis.lrem(keys.key("ready"), 1, _as_bytes(raw))  # type: ignore[arg-type]
    await redis.hset(keys.key("records"), mid, record_bytes)
    await redis.rpush(keys.key("ready"), encode_pointer(mid))


@dataclass(frozen=True)
class FailureRecord:
    """The value of ``errors[mid]``: a failed message as the failure history keeps it."""

    attempts: int
    lock_ms: int
    reason: str
    payload: bytes | None  # None: migrated from protocol version 1, which kept none


_FAILURE = struct.Struct(">BI5sI")


def decode_failure(raw: bytes | str) -> FailureRecord:
    raw = _as_bytes(raw)
    flags, attempts, lock, n = _FAILURE.unpack_from(raw)
    reason = raw[_FAILURE.size : _FAILURE.size + n].decode()
    payload = raw[_FAILURE.size + n :] if flags & 1 else None
    return FailureRecord(attempts, _int(lock), reason, payload)


async def failure(redis: aioredis.Redis, keys: QueueKeys, mid: str) -> FailureRecord | None:
    raw = await redis.hget(keys.key("errors"), mid)
    return None if raw is None else decode_failure(raw)


async def history_bytes(redis: aioredis.Redis, keys: QueueKeys) -> tuple[int, int]:
    """The byte total ``meta`` keeps for the failure history, and the sum it must equal."""
    kept = await redis.hget(keys.key("meta"), "failed_bytes")
    values = await redis.hvals(keys.key("errors"))
    return int(kept or 0), sum(len(_as_bytes(value)) for value in values)
