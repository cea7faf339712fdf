"""Upgrading queues from protocol version 1 to version 2, in place.

Owns the loop that calls ``lua/migrate.lua`` (one bounded, atomic slice per
call) until a queue holds nothing of version 1, and finding the queues that
still hold version-1 keys (``vermilion:{<queue>}:<part>``, the parts in
``_keys.V1_KEY_PARTS``). The script moves the data; this module only drives
it, for ``vermilion migrate``. It formats nothing and prints nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ._keys import KEY_PREFIX, V1_KEY_PARTS, QueueKeys
from ._protocol import ScriptClient
from ._validation import check_queue_name, positive_int
from ._wire import reply_int

__all__ = ["MigrationReport", "has_v1_keys", "migrate_queue", "scan_v1_queue_names", "v1_queue_names"]

_V1_SUFFIXES = frozenset(part.encode() for part in V1_KEY_PARTS)
_PREFIX = f"{KEY_PREFIX}:{{".encode()


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What migrating one queue did.

    ``found`` is whether the queue held any version-1 key at all: a queue that
    held none was left untouched (nothing to migrate). ``moved`` counts the
    mids the script moved, ``calls`` its calls.
    """

    queue: str
    found: bool
    moved: int
    calls: int


async def has_v1_keys(client: ScriptClient, name: str) -> bool:
    """Whether queue ``name`` holds any key of protocol version 1 (its counter included)."""
    keys = QueueKeys.for_queue(check_queue_name(name))
    await client.ensure_checked()  # a server too old is named, as by every call
    reply = await client.transport.run((b"EXISTS", *keys.v1), replayable=True, route=keys.v1[0])
    return reply_int(reply) > 0


async def migrate_queue(client: ScriptClient, name: str, *, batch: int = 1000) -> MigrationReport:
    """Move queue ``name`` from protocol version 1 to 2, ``batch`` mids of each kind per call.

    Safe to repeat and to interrupt: each call is atomic and moves whole mids,
    so a queue migrated halfway is finished by the next run. A queue without
    version-1 keys is not written to. Version-1 producers still writing are
    picked up: the loop ends only when a call finds nothing of version 1 left.
    """
    name = check_queue_name(name)
    batch = positive_int(batch, "batch")
    if not await has_v1_keys(client, name):
        return MigrationReport(name, found=False, moved=0, calls=0)
    keys = QueueKeys.for_queue(name)
    moved = calls = 0
    while True:
        done, left = await client.migrate(keys, batch)
        moved += done
        calls += 1
        if left == 0:
            return MigrationReport(name, found=True, moved=moved, calls=calls)


def _v1_queue_name(key: bytes) -> bytes | None:
    """The raw queue name in a version-1 key ``vermilion:{<queue>}:<v1 part>``, else None."""
    if not key.startswith(_PREFIX):
        return None
    raw, brace, rest = key[len(_PREFIX) :].partition(b"}")
    if not brace or not rest.startswith(b":") or rest[1:] not in _V1_SUFFIXES:
        return None
    return raw


def scan_v1_queue_names(client: ScriptClient) -> AsyncIterator[str]:
    """Yield, once each, the names of the queues that hold any version-1 key."""
    return client.scan_names(f"{KEY_PREFIX}:{{*}}:*".encode(), _v1_queue_name)


async def v1_queue_names(client: ScriptClient) -> list[str]:
    """The sorted names of the queues that hold any version-1 key."""
    return sorted([name async for name in scan_v1_queue_names(client)])
