"""Text for people: the tables and lines the commands print. Pure: no I/O, no Redis.

Owns how values look (numbers right-aligned with thousands separators, ``-`` for
none) and which column of ``vermilion status`` shows which ``QueueStatus`` field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from vermilion._messages import EnqueueResult, FailedMessage, QueueStatus, ReplayResult
from vermilion._migration import MigrationReport
from vermilion._presence import WorkerPresence
from vermilion._stats import Summary
from vermilion._worker import WorkerStatus

__all__ = [
    "STATUS_COLUMNS",
    "failed_row",
    "format_enqueue_result",
    "format_failed",
    "format_migration",
    "format_queue_statuses",
    "format_replay_result",
    "format_table",
    "format_worker_status",
    "format_workers",
    "status_row",
    "worker_row",
]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: left-aligned text, right-aligned numbers."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(widths[i]) if numeric[i] else value.ljust(widths[i]) for i, value in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in cells)])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.2f}"
    return str(value)


def format_worker_status(status: WorkerStatus) -> str:
    """The worker's status as readable tables."""
    state = "running" if status.running else "stopped"
    out = [
        f"worker on queue {status.queue!r}: {state},"
        f" concurrency {status.concurrency}, in flight {status.in_flight}"
    ]
    if status.queue_status is not None:
        counts = status.queue_status
        headers = [header for header, _ in STATUS_COLUMNS]
        out += ["", format_table(headers, [[getattr(counts, field) for _, field in STATUS_COLUMNS]])]
    summaries: list[tuple[str, Summary | None]] = [
        ("queue size", status.stats.queue_size),
        ("queueing time (ms)", status.stats.queueing_time_ms),
        ("handling time (ms)", status.stats.handling_time_ms),
    ]
    out += [
        "",
        format_table(
            ["measure", "n", "min", "mean", "p50", "p90", "p95", "p99", "max", "last"],
            [
                [name]
                + (
                    [None] * 9
                    if s is None
                    else [
                        s.n,
                        float(s.min),
                        s.mean,
                        float(s.p50),
                        float(s.p90),
                        float(s.p95),
                        float(s.p99),
                        float(s.max),
                        float(s.last),
                    ]
                )
                for name, s in summaries
            ],
        ),
        "",
        format_table(["count", "value"], sorted(status.stats.counts.items())),
    ]
    return "\n".join(out)


# The table's column headers for the QueueStatus fields (``status --json`` uses the field
# names themselves); docs/cli.md shows the same mapping.
STATUS_COLUMNS = (
    ("queued", "nqueued"),
    ("locked", "nlocked"),
    ("backoff", "nbackoff"),
    ("done", "ndone"),
    ("failed", "nfailed"),
    ("dropped", "nfailed_dropped"),
    ("total", "ntotal"),
    ("lag (s)", "lag"),
)


def status_row(name: str, status: QueueStatus) -> dict[str, object]:
    """One queue's line of ``status --json``: its name and the ``QueueStatus`` fields."""
    return {"queue": name, **{field: getattr(status, field) for _, field in STATUS_COLUMNS}}


def format_queue_statuses(rows: Sequence[dict[str, object]]) -> str:
    """Rows of ``status --json`` as the table ``vermilion status`` prints."""
    headers = ["queue", *(header for header, _ in STATUS_COLUMNS)]
    return format_table(
        headers, [[row["queue"], *(row[field] for _, field in STATUS_COLUMNS)] for row in rows]
    )


def format_enqueue_result(result: EnqueueResult) -> str:
    if result.ok:
        return f"{result.action} {result.mid}"
    return f"refused {result.mid}: {result.error}"


def format_migration(report: MigrationReport) -> str:
    """One line per migrated queue: how many mids moved, or that it held no version-1 data."""
    if not report.found:
        return f"{report.queue}: nothing to migrate (no version-1 data)"
    n = report.moved
    return f"migrated {report.queue}: moved {n:,} message{'' if n == 1 else 's'} to protocol version 2"


# A failed message's content and reason are shown on one line, cut to this many characters.
_CELL_CHARS = 60


def _json_text(value: object) -> str:
    """Content as JSON text; what JSON cannot hold (raw bytes) as its Python repr."""
    return json.dumps(value, ensure_ascii=False, default=repr)


def failed_row(entry: FailedMessage) -> dict[str, object]:
    """One entry of ``failed --json``: the ``FailedMessage`` fields, ``failed_at`` in ISO 8601.

    Content JSON cannot hold (the raw bytes of an undecodable payload) becomes its repr.
    """
    return {
        "mid": entry.mid,
        "content": json.loads(_json_text(entry.content)),
        "reason": entry.reason,
        "attempts": entry.attempts,
        "failed_at": entry.failed_at.isoformat(timespec="milliseconds"),
    }


def _one_line(text: str) -> str:
    flat = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return flat if len(flat) <= _CELL_CHARS else flat[: _CELL_CHARS - 3] + "..."


def format_failed(entries: Sequence[FailedMessage]) -> str:
    """A page of the failure history as a table, newest first, one line per message."""
    return format_table(
        ["failed at (UTC)", "mid", "attempts", "reason", "content"],
        [
            [
                entry.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
                entry.mid,
                entry.attempts,
                _one_line(entry.reason),
                "-" if entry.content is None else _one_line(_json_text(entry.content)),
            ]
            for entry in entries
        ],
    )


def format_replay_result(result: ReplayResult) -> str:
    if result.ok:
        return f"replayed {result.mid}"
    return f"not replayed {result.mid}: {result.error}"


def worker_row(presence: WorkerPresence) -> dict[str, Any]:
    """One worker's entry of ``workers --json``: every field, times as ISO 8601 UTC."""
    row: dict[str, Any] = {}
    for name in WorkerPresence.__dataclass_fields__:
        value = getattr(presence, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Summary):
            value = value.as_dict()
        row[name] = value
    return row


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def format_workers(queue: str, workers: Sequence[WorkerPresence]) -> str:
    """The table of ``vermilion workers``: one line per live worker."""
    if not workers:
        return f"no live workers on queue {queue!r}"
    headers = ["id", "host", "pid", "concurrency", "in flight", "success", "retry", "failure"]
    headers += ["p50 (ms)", "p99 (ms)", "started (UTC)", "last seen (UTC)"]
    rows = []
    for w in workers:
        timing = w.handling_time_ms
        rows.append(
            [
                w.id,
                w.host,
                str(w.pid),  # an id, not a quantity: no thousands separator
                w.concurrency,
                w.in_flight,
                w.counts.get("handler/success", 0),
                w.counts.get("handler/retry", 0),
                w.counts.get("handler/error", 0),
                None if timing is None else float(timing.p50),
                None if timing is None else float(timing.p99),
                _time(w.started_at),
                _time(w.last_seen),
            ]
        )
    return format_table(headers, rows)
