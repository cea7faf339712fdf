"""One logical queue spread over N hash tags: the shards' keys, which shard a mid is
in, and the shard count a queue keeps in Redis.

A queue of ``shards=N`` (N > 1) is N complete queues of the protocol, one per
hash tag ``<queue>/<i>.<salt>``: every script still touches one slot. The tag
of shard ``i`` is the first salt whose CRC16 slot lies in the middle half of
the ``i``-th of N equal slot ranges, so that on a cluster created with
contiguous slot ranges per master (``redis-cli --cluster create``) the shards
spread as evenly as N allows. ``/`` is not allowed in queue names: a shard's
tag can never be another queue's name.

A mid's shard is ``crc32(mid) mod N`` (stable across processes and versions,
unlike ``hash()``), so every client finds a message on the same shard.

The count lives in the ``shards`` field of the queue's own ``meta``
(``vermilion:{<queue>}:v2:meta``), which holds nothing else for a sharded
queue. :func:`claim_shards` writes it (part of the Redis boundary, as
:mod:`._presence_calls`); an unsharded client reads it in the version check
it already makes, at no extra call.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from redis.crc import key_slot

from ._exceptions import ConfigurationError
from ._keys import QueueKeys
from ._transport import Sender
from ._wire import reply_int

__all__ = [
    "MAX_SHARDS",
    "by_shard",
    "check_shard_count",
    "check_shards",
    "claim_shards",
    "shard_index",
    "shard_keys",
    "shard_tag",
    "stored_shards",
]

MAX_SHARDS = 256
_SLOTS = 16384


def check_shards(shards: int) -> int:
    if isinstance(shards, bool) or not isinstance(shards, int):
        raise TypeError(f"shards must be an int, not {type(shards).__name__}")
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be from 1 to {MAX_SHARDS}, got {shards}")
    return shards


def shard_tag(name: str, index: int, shards: int) -> str:
    """The hash tag of shard ``index``: its slot in the middle half of the index-th slot range."""
    low = index * _SLOTS // shards
    high = (index + 1) * _SLOTS // shards
    margin = (high - low) // 4
    salt = 0
    while True:  # about 2 tries on average; the CRC16 of the salts covers every slot
        tag = f"{name}/{index}.{salt}"
        if low + margin <= key_slot(tag.encode()) < high - margin:
            return tag
        salt += 1


def shard_keys(name: str, shards: int) -> tuple[QueueKeys, ...]:
    """The keys of each shard; ``shards=1`` is the queue's own keys, as always."""
    if shards == 1:
        return (QueueKeys.for_queue(name),)
    base = QueueKeys.for_queue(name)
    return tuple(QueueKeys.for_shard(shard_tag(name, index, shards), base, shards) for index in range(shards))


def shard_index(mid: str, shards: int) -> int:
    return zlib.crc32(mid.encode("utf-8", "surrogatepass")) % shards


def by_shard(mids: Sequence[str], shards: int) -> dict[int, list[int]]:
    """The positions of ``mids`` grouped by their shard, shards in order."""
    groups: dict[int, list[int]] = {}
    for position, mid in enumerate(mids):
        groups.setdefault(shard_index(mid, shards), []).append(position)
    return dict(sorted(groups.items()))


def check_shard_count(queue: str, stored: int, expected: int) -> None:
    """Refuse a client whose shard count is not the one the queue keeps (0 stored: none, 1)."""
    stored = stored or 1
    if stored != expected:
        raise ConfigurationError(
            f"queue {queue!r} is stored with shards={stored}, but this client was made with"
            f" shards={expected}: give Queue(..., shards={stored}) (changing the count needs an"
            " empty queue: see Scaling out)"
        )


async def stored_shards(transport: Sender, base: QueueKeys) -> int:
    """The count the queue keeps in Redis, 1 if none."""
    meta = base.key("meta")
    reply = await transport.run((b"HGET", meta, b"shards"), replayable=True, route=meta)
    return 1 if reply is None else reply_int(reply)


async def claim_shards(transport: Sender, base: QueueKeys, shards: int) -> None:
    """Make sure the queue keeps ``shards`` as its count, writing it if it keeps none.

    Refused if it keeps another, or if it keeps none but holds messages as an
    unsharded queue (they would be stranded where no sharded client looks).
    """
    meta = base.key("meta")
    stored = await stored_shards(transport, base)
    if stored == 1:
        held = await transport.run((b"EXISTS", base.key("mids")), replayable=True, route=meta)
        if reply_int(held):
            raise ConfigurationError(
                f"queue {base.name!r} holds messages as an unsharded queue: drain or clear it"
                f" before using it with shards={shards}"
            )
        # HSETNX: of two clients that claim at once, the first count stays.
        await transport.run((b"HSETNX", meta, b"shards", shards), replayable=True, route=meta)
        stored = await stored_shards(transport, base)
    check_shard_count(base.name, stored, shards)
