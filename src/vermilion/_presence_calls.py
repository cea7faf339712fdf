"""The Redis side of live workers: the calls of ``lua/presence.lua``, and reading the records.

Part of the Redis boundary, beside :mod:`._protocol`, whose :class:`ScriptClient`
sends every call. Presence keys live in the queue's slot but are none of its
message keys (:mod:`._keys` names them), so these calls skip the protocol
version check: a worker announces itself whatever the queue holds.
"""

from __future__ import annotations

from ._keys import QueueKeys, worker_key, workers_key
from ._presence import WorkerPresence, parse_record
from ._protocol import ScriptClient
from ._scripts import SCRIPTS
from ._wire import reply_int

__all__ = ["beat", "live_workers", "withdraw"]


def _keys(queue: str, worker_id: str | None = None) -> QueueKeys:
    keys = (workers_key(queue),) if worker_id is None else (workers_key(queue), worker_key(queue, worker_id))
    return QueueKeys(queue, keys, ())


async def beat(
    client: ScriptClient, queue: str, worker_id: str, ttl_ms: int, record: bytes, *, prune: bool
) -> int:
    """Write the worker's record to expire in ``ttl_ms``; returns the server's time in ms."""
    reply = await client.call_unversioned(
        SCRIPTS["presence"],
        _keys(queue, worker_id),
        (b"beat", worker_id, ttl_ms, b"1" if prune else b"0", record),
        replayable=True,  # writing the same record twice is writing it once
        cache_head=False,
    )
    return reply_int(reply)


async def withdraw(client: ScriptClient, queue: str, worker_id: str) -> bool:
    """Remove the worker's record; whether it was still there."""
    reply = await client.call_unversioned(
        SCRIPTS["presence"], _keys(queue, worker_id), (b"stop", worker_id), replayable=True, cache_head=False
    )
    return bool(reply_int(reply))


async def live_workers(client: ScriptClient, queue: str) -> list[WorkerPresence]:
    """The workers of ``queue`` whose presence has not expired, oldest first.

    Two round trips: the index (pruned of expired entries), then the records
    in one ``MGET`` (all in the queue's slot). A record that expired in
    between is left out.
    """
    reply = await client.call_unversioned(SCRIPTS["presence"], _keys(queue), (b"list",), replayable=True)
    pairs = reply[1:]
    ids = [bytes(pairs[i]).decode(errors="replace") for i in range(0, len(pairs), 2)]
    expiries = [reply_int(pairs[i]) for i in range(1, len(pairs), 2)]
    if not ids:
        return []
    command = (b"MGET", *(worker_key(queue, worker_id) for worker_id in ids))
    # Routed by the first record's key: on a cluster, every key of the queue is in its slot.
    records = await client.transport.run(command, replayable=True, route=command[1])
    found = [
        parse_record(bytes(raw), expires_ms)
        for raw, expires_ms in zip(records, expiries, strict=True)
        if raw is not None
    ]
    live = [presence for presence in found if presence is not None]
    return sorted(live, key=lambda presence: (presence.started_at, presence.id))
