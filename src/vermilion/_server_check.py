"""The checks before vermilion's first call: of the server, and of each queue's protocol version.

The scripts need Redis 7.0 (or Valkey 7.2): an older server is refused with a
clear error rather than a script error later. A server that may evict keys is
worth a warning (once per server), since eviction loses messages silently.
A queue written by another protocol version is refused too: by a newer
vermilion, or by version 1 (which ``vermilion migrate`` upgrades).
:mod:`._script_calls` runs the checks, once per connection pool and per queue.
"""

from __future__ import annotations

import redis.exceptions as redis_errors

from ._error_mapping import refused_as
from ._exceptions import ConfigurationError, ScriptError
from ._keys import PROTOCOL_VERSION
from ._logs import logger
from ._transport import Sender
from ._wire import reply_text

__all__ = ["MIN_SERVER_VERSION", "check_server", "check_version"]

MIN_SERVER_VERSION = (7, 0, 0)
"""Scripts use `#!lua flags=no-writes` (7.0) and LPOP with a count (6.2)."""

_EVICTING_POLICIES_WARNED: set[str] = set()


async def check_server(transport: Sender) -> None:
    """Refuse a server the scripts cannot run on; warn once if it may evict keys.

    A user not permitted to run INFO passes unchecked.
    """
    try:
        # One INFO for the version and the eviction policy; CONFIG GET would
        # need a permission that least-privilege users rarely have.
        info = await transport.run(("INFO", "server", "memory"), replayable=True)
    except ScriptError as exc:
        if not refused_as(exc, redis_errors.NoPermissionError):
            raise
        # A least-privilege user may not run INFO: then the version cannot be
        # checked here (a server too old still fails, on the first script).
        logger.debug("INFO is not permitted; skipping the server version check")
        return
    text = reply_text(info)
    fields = dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#")
    )
    version_text = fields.get("redis_version", "0")
    version = tuple(int(part) for part in version_text.split(".")[:3] if part.isdigit())
    if version < MIN_SERVER_VERSION:
        wanted = ".".join(map(str, MIN_SERVER_VERSION))
        raise ConfigurationError(
            f"vermilion needs Redis {wanted} or newer (or Valkey 7.2+); the server runs {version_text}"
        )
    _warn_if_evicting(fields)


def check_version(queue: str, version: int, v1_keys: int) -> None:
    """Refuse a queue whose data another protocol version wrote (the ``version`` script's reply)."""
    if version > PROTOCOL_VERSION or version < 0:
        raise ConfigurationError(
            f"queue {queue!r} holds data of protocol version {version}, which this vermilion"
            f" (protocol {PROTOCOL_VERSION}) cannot read: upgrade vermilion"
        )
    if v1_keys:
        raise ConfigurationError(
            f"queue {queue!r} holds data written by protocol version 1 (an older vermilion):"
            f" run `vermilion migrate {queue}` to upgrade it in place"
        )


def _warn_if_evicting(server_fields: dict[str, str]) -> None:
    policy = server_fields.get("maxmemory_policy", "noeviction").strip()
    server = server_fields.get("run_id", "?").strip()
    if policy != "noeviction" and server not in _EVICTING_POLICIES_WARNED:
        _EVICTING_POLICIES_WARNED.add(server)
        logger.warning(
            "Redis maxmemory-policy is %r: when memory is full Redis may evict queue keys and"
            " silently lose messages; set it to 'noeviction'",
            policy,
        )
