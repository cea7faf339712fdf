"""Plain data for the dashboard's JSON answers: statuses, workers, failed messages.

Everything here becomes JSON and then text in the page (``textContent``): no
HTML is built from data anywhere. A payload is shown as JSON when it can be,
else as the ``repr`` of what the serializer gave back (raw bytes included),
cut at ``PAYLOAD_CHARS`` characters.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from vermilion._messages import FailedMessage, QueueStatus
from vermilion._presence import WorkerPresence

__all__ = ["PAYLOAD_CHARS", "failed_view", "payload_text", "status_view", "worker_view"]

PAYLOAD_CHARS = 4000


def status_view(name: str, status: QueueStatus) -> dict[str, Any]:
    return {
        "name": name,
        "ready": status.nqueued,
        "locked": status.nlocked,
        "backoff": status.nbackoff,
        "done": status.ndone,
        "failed": status.nfailed,
        "dropped": status.nfailed_dropped,
        "lag": round(status.lag, 3),
    }


def _time(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def worker_view(worker: WorkerPresence) -> dict[str, Any]:
    counts = worker.counts
    summary = worker.handling_time_ms
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "concurrency": worker.concurrency,
        "in_flight": worker.in_flight,
        "started_at": _time(worker.started_at),
        "last_seen": _time(worker.last_seen),
        "success": counts.get("handler/success", 0),
        "retry": counts.get("handler/retry", 0),
        "error": counts.get("handler/error", 0),
        "p50": None if summary is None else round(summary.p50, 3),
        "p99": None if summary is None else round(summary.p99, 3),
    }


def payload_text(content: Any) -> tuple[str, bool]:
    """The text shown for a payload, and whether it was cut."""
    try:
        text = json.dumps(content, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(content)
    if len(text) > PAYLOAD_CHARS:
        return text[:PAYLOAD_CHARS], True
    return text, False


def failed_view(message: FailedMessage) -> dict[str, Any]:
    text, cut = payload_text(message.content)
    return {
        "mid": message.mid,
        "reason": message.reason,
        "attempts": message.attempts,
        "failed_at": _time(message.failed_at),
        "payload": text,
        "payload_cut": cut,
    }
