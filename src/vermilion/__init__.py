"""vermilion: a durable Redis message queue for asyncio, with Carmine's semantics.

Messages persist in Redis, each is handled once under a lease that lapses if
its worker dies, retried with backoff when its handler asks, and de-duplicated
by message id.
"""

from __future__ import annotations

from contextlib import suppress as _suppress
from importlib.metadata import PackageNotFoundError, version as _version

from ._exceptions import (
    ConfigurationError,
    OutcomeUnknownError,
    ProtocolError,
    ReplicationError,
    ScriptError,
    SerializationError,
    VermilionConnectionError,
    VermilionError,
)
from ._logs import set_min_log_level
from ._messages import (
    EnqueueResult,
    FailedMessage,
    Failure,
    Message,
    MessageInfo,
    MessageStatus,
    PollInfo,
    QueueSettings,
    QueueStatus,
    RateLimited,
    ReplayResult,
    Retry,
    Success,
    WorkerStats,
    WorkerStatus,
)
from ._presence import WorkerPresence
from ._queue import Queue
from ._queues import clear_queues, queue_names, queue_shards
from ._schedules import Schedule, run_schedules, schedule
from ._serialization import JsonSerializer, MsgpackSerializer, Serializer
from ._stats import Summary
from ._worker import AsyncWorker, QueueSizeMonitor, exponential_idle_backoff

try:
    __version__ = _version("vermilion")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "AsyncWorker",
    "ConfigurationError",
    "EnqueueResult",
    "FailedMessage",
    "Failure",
    "JsonSerializer",
    "Message",
    "MessageInfo",
    "MessageStatus",
    "MsgpackSerializer",
    "OutcomeUnknownError",
    "PollInfo",
    "ProtocolError",
    "Queue",
    "QueueSettings",
    "QueueSizeMonitor",
    "QueueStatus",
    "RateLimited",
    "ReplayResult",
    "ReplicationError",
    "Retry",
    "Schedule",
    "ScriptError",
    "SerializationError",
    "Serializer",
    "Success",
    "Summary",
    "VermilionConnectionError",
    "VermilionError",
    "WorkerPresence",
    "WorkerStats",
    "WorkerStatus",
    "clear_queues",
    "exponential_idle_backoff",
    "queue_names",
    "queue_shards",
    "run_schedules",
    "schedule",
    "set_min_log_level",
]

# Public objects say they live in `vermilion`, not in the private module that
# defines them: tracebacks, reprs and docs then show the import path users use.
for _name in __all__:
    with _suppress(AttributeError, TypeError):
        globals()[_name].__module__ = __name__
del _name
