"""SCAN over every master of a server: the keys of queues, read as queue names.

On a single server that is one SCAN; a cluster spreads the queues over its
masters, and each is scanned. Used by :mod:`._protocol` (``queue_names``) and
:mod:`._migration` (version-1 queues).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from ._keys import queue_name_in
from ._transport import Sender
from ._wire import reply_int

__all__ = ["scan_names"]


async def scan_names(
    transport: Sender, match: bytes | str, name_of: Callable[[bytes], bytes | None]
) -> AsyncIterator[str]:
    """Yield, once each, the queue names ``name_of`` reads in the keys SCAN finds by ``match``."""
    seen: set[bytes] = set()
    # A cluster spreads the queues over its masters: each is scanned.
    for node in await transport.primaries():
        cursor: int = 0
        while True:
            scan = (b"SCAN", cursor, b"MATCH", match, b"COUNT", 1000)
            reply = await node.run(scan, replayable=True)
            cursor = reply_int(reply[0])
            for key in reply[1]:
                raw = name_of(key)
                if raw is None or raw in seen:
                    continue
                seen.add(raw)
                name = queue_name_in(key, raw)
                if name is not None:
                    yield name
            if cursor == 0:
                break
