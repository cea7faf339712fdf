"""Live workers: the presence record a worker publishes, and ``WorkerPresence``.

Pure module: no Redis, no event loop. A record is the JSON a worker sends with
each beat (see ``lua/presence.lua``); the reader adds what only Redis knows
(when the record expires, hence when it was last written).
"""

# No `from __future__ import annotations`: WorkerPresence is re-exported (see _messages.py).
import json
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ._logs import logger
from ._stats import Summary

__all__ = ["RECORD_VERSION", "WorkerPresence", "encode_record", "new_worker_id", "parse_record"]

RECORD_VERSION = 1


@dataclass(frozen=True, slots=True)
class WorkerPresence:
    """A live worker of a queue, as it last announced itself in Redis.

    Times are timezone-aware UTC, from the Redis server's clock. ``counts``,
    ``handling_time_ms`` and ``queueing_time_ms`` are the worker's own
    :class:`WorkerStats` at its last beat.
    """

    id: str
    host: str
    pid: int
    queue: str
    concurrency: int
    in_flight: int
    started_at: datetime
    last_seen: datetime
    counts: dict[str, int]
    handling_time_ms: Summary | None
    queueing_time_ms: Summary | None
    expires_at: datetime
    """When the record lapses unless the worker beats again (a stopped worker removes it)."""


def new_worker_id() -> str:
    """A worker id unique per worker instance: the host, the pid and 48 random bits."""
    host = socket.gethostname().split(".", 1)[0] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(6)}"


def encode_record(
    *,
    worker_id: str,
    queue: str,
    concurrency: int,
    in_flight: int,
    ttl_ms: int,
    started_ms: int | None,
    counts: dict[str, int],
    handling_time_ms: Summary | None,
    queueing_time_ms: Summary | None,
) -> bytes:
    """The JSON a worker writes with a beat. ``started_ms`` None: this beat is its first."""
    record: dict[str, Any] = {
        "v": RECORD_VERSION,
        "id": worker_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queue": queue,
        "concurrency": concurrency,
        "in_flight": in_flight,
        "ttl_ms": ttl_ms,
        "started_ms": started_ms,
        "counts": counts,
        "handling_time_ms": None if handling_time_ms is None else handling_time_ms.as_dict(),
        "queueing_time_ms": None if queueing_time_ms is None else queueing_time_ms.as_dict(),
    }
    return json.dumps(record, separators=(",", ":")).encode()


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _summary(value: Any) -> Summary | None:
    if value is None:
        return None
    # A sample recorded as an int comes back from JSON as one: floats, as the live summary has.
    measures = {
        name: float(value[name]) for name in ("min", "max", "mean", "last", "p50", "p90", "p95", "p99")
    }
    return Summary(n=int(value["n"]), **measures)


def parse_record(raw: bytes, expires_ms: int) -> WorkerPresence | None:
    """The presence in a stored record, or None (with a warning) for bytes no worker wrote.

    The last beat was ``ttl_ms`` before the record's expiry; a record without
    ``started_ms`` was written by the worker's first beat.
    """
    try:
        record = json.loads(raw)
        last_seen_ms = expires_ms - int(record["ttl_ms"])
        started_ms = record["started_ms"]
        return WorkerPresence(
            id=str(record["id"]),
            host=str(record["host"]),
            pid=int(record["pid"]),
            queue=str(record["queue"]),
            concurrency=int(record["concurrency"]),
            in_flight=int(record["in_flight"]),
            started_at=_utc(last_seen_ms if started_ms is None else int(started_ms)),
            last_seen=_utc(last_seen_ms),
            counts={str(name): int(n) for name, n in record["counts"].items()},
            handling_time_ms=_summary(record["handling_time_ms"]),
            queueing_time_ms=_summary(record["queueing_time_ms"]),
            expires_at=_utc(expires_ms),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        logger.warning("skipped a worker presence record no vermilion worker wrote (%s): %r", exc, raw[:200])
        return None
