"""Flow control's part of ``Queue``: ``configure()`` (a mixin, so that
``_queue.py`` keeps to producing and inspecting), its argument checks, the
mapping between ``QueueSettings`` and the fields of ``meta`` that
``configure.lua`` writes, and the check of ``enqueue``'s ``priority``."""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Final

from ._inspection import each_shard
from ._keys import QueueKeys
from ._messages import QueueSettings
from ._protocol import ScriptClient
from ._validation import seconds, to_ms

__all__ = [
    "MAX_PRIORITY",
    "UNSET",
    "FlowSettings",
    "Unset",
    "check_key",
    "check_priority",
    "settings_changes",
    "settings_from_reply",
]


class Unset(enum.Enum):
    """The default of a ``configure()`` argument: leave that setting as it is."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET
MAX_PRIORITY: Final = 9  # the levels are 0 (the default) to 9; enqueue.lua checks it too


MAX_KEY_BYTES: Final = 1024


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str):
        raise TypeError(f"key must be a str or None, not {type(key).__name__}")
    size = len(key.encode("utf-8", "surrogatepass"))
    if not 0 < size <= MAX_KEY_BYTES:
        raise ValueError(f"key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, got {size}")
    return key


def check_priority(priority: int) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be from 0 to {MAX_PRIORITY}, got {priority}")
    return priority


def _bound(value: int | None, name: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum} (or None for no limit), got {value}")
    return value


def _interval_ms(value: float | timedelta) -> int:
    ms = to_ms(seconds(value, "rate_interval", allow_zero=False))
    if ms < 1:
        raise ValueError(f"rate_interval must be at least 0.001 seconds, got {value!r}")
    return ms


def settings_changes(
    *,
    max_size: int | Unset | None,
    rate_limit: int | Unset | None = UNSET,
    rate_interval: float | timedelta | Unset = UNSET,
    max_per_key: int | Unset | None = UNSET,
) -> list[tuple[str, int | None]]:
    """The (field, value) pairs to send: only the settings given; ``None`` removes one."""
    changes: list[tuple[str, int | None]] = []
    if max_size is not UNSET:
        changes.append(("max_size", _bound(max_size, "max_size", 1)))
    if max_per_key is not UNSET:
        changes.append(("max_per_key", _bound(max_per_key, "max_per_key", 1)))
    if rate_limit is not UNSET:
        changes.append(("rate_limit", _bound(rate_limit, "rate_limit", 1)))
        if rate_limit is None:
            if rate_interval is not UNSET:
                raise ValueError("rate_interval needs a rate_limit (rate_limit=None removes both)")
            changes.append(("rate_interval_ms", None))
    if rate_interval is not UNSET:
        changes.append(("rate_interval_ms", _interval_ms(rate_interval)))
    return changes


def settings_from_reply(fields: dict[str, int]) -> QueueSettings:
    limit = fields.get("rate_limit")
    interval = fields.get("rate_interval_ms", 1000) / 1000 if limit is not None else None
    return QueueSettings(
        max_size=fields.get("max_size"),
        rate_limit=limit,
        rate_interval=interval,
        max_per_key=fields.get("max_per_key"),
    )


class FlowSettings:
    """The flow-control methods of :class:`~vermilion.Queue`."""

    _connection: ScriptClient
    _keys: QueueKeys
    _shard_keys: tuple[QueueKeys, ...]

    async def configure(
        self,
        *,
        max_size: int | Unset | None = UNSET,
        rate_limit: int | Unset | None = UNSET,
        rate_interval: float | timedelta | Unset = UNSET,
        max_per_key: int | Unset | None = UNSET,
    ) -> QueueSettings:
        """Change the queue's flow-control settings, stored in Redis for every client.

        Args:
            max_size: the most live messages (ready, delayed or leased) the
                queue accepts; an enqueue past it is refused with
                ``error="full"``. ``None`` removes the bound.
            rate_limit: the most messages handed out per ``rate_interval``
                across all workers (``None`` removes the limit).
            rate_interval: the limit's window in seconds (1 by default).
            max_per_key: the most messages of one ``key`` (see ``enqueue``)
                leased at once, across all workers (``None``: no limit).

        Only the settings given change; ``configure()`` alone reads them.
        On a sharded queue each setting applies to every shard, as a bound
        of each: ``max_size`` per shard, ``rate_limit`` per shard (the queue
        hands out up to ``shards * rate_limit`` per window), ``max_per_key``
        per shard.

        Returns:
            The settings in force after the call.
        """
        changes = settings_changes(
            max_size=max_size, rate_limit=rate_limit, rate_interval=rate_interval, max_per_key=max_per_key
        )
        # A sharded queue: every shard gets the same settings, each a bound of that shard.
        replies = await each_shard(self._shard_keys, lambda keys: self._connection.configure(keys, changes))
        return settings_from_reply(replies[0])
