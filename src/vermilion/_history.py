"""The failure history's script calls: a page of it, replay and purge.

Part of the Redis boundary, beside :mod:`._protocol`: it owns the arguments
and the reply shapes of ``failed.lua``, ``replay.lua`` and ``purge.lua``, and
how a call over the whole history is cut into bounded script calls. Decoding
payloads and checking the caller's arguments belong to :mod:`._failures`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._exceptions import ProtocolError
from ._keys import QueueKeys
from ._protocol import ScriptClient
from ._scripts import SCRIPTS
from ._wire import mid_arg, mid_text, reply_int, reply_text

__all__ = ["MAX_PAGE", "StoredFailure", "failed_page", "purge_all", "purge_mids", "replay_all", "replay_mids"]

MAX_PAGE = 10_000
# Mids per script call: each call is atomic, and Redis serves nobody else while it runs.
_MIDS_PER_CALL = 1000
_FIELDS = 6


@dataclass(frozen=True, slots=True)
class StoredFailure:
    """One entry of the ``failed`` script's reply, before decoding."""

    mid: str
    failed_ms: int
    attempts: int
    payload: bytes | None
    reason: str


async def failed_page(
    client: ScriptClient, keys: QueueKeys, offset: int, limit: int
) -> tuple[int, list[StoredFailure]]:
    """The history's size, and up to ``limit`` entries after the ``offset`` newest."""
    reply = await client.call_script(SCRIPTS["failed"], keys, (offset, limit), replayable=True)
    if (len(reply) - 1) % _FIELDS:
        raise ProtocolError(f"failed answered {len(reply)} items, not 1 + {_FIELDS} per entry")
    entries = [
        StoredFailure(
            mid=mid_text(mid),
            failed_ms=reply_int(failed_ms),
            attempts=reply_int(attempts),
            payload=payload if reply_int(has_payload) else None,
            reason=reply_text(reason),
        )
        for mid, failed_ms, attempts, has_payload, payload, reason in _groups(reply[1:])
    ]
    return reply_int(reply[0]), entries


def _groups(items: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [tuple(items[i : i + _FIELDS]) for i in range(0, len(items), _FIELDS)]


async def replay_mids(client: ScriptClient, keys: QueueKeys, mids: Sequence[str]) -> list[str]:
    """Replay each mid: ``ok``, ``live``, ``unknown`` or ``no-content`` per mid, in order."""
    answers: list[str] = []
    for first in range(0, len(mids), _MIDS_PER_CALL):
        part = [mid_arg(mid) for mid in mids[first : first + _MIDS_PER_CALL]]
        # Not repeated after a lost reply: a second send would answer "live"
        # for the mids the first one replayed.
        reply = await client.call_script(SCRIPTS["replay"], keys, ("mids", *part), replayable=False)
        if len(reply) != len(part):
            raise ProtocolError(f"replay answered {len(reply)} results for {len(part)} mids")
        answers += [reply_text(item) for item in reply]
    return answers


async def replay_all(client: ScriptClient, keys: QueueKeys) -> int:
    """Replay every entry that failed up to the first call's server time: how many.

    Entries that fail again meanwhile are newer than that time, so the loop
    ends even while workers keep failing what it replays. Entries that cannot
    be replayed (no payload) stay, and are skipped by the next calls.
    """
    replayed, skip, up_to = 0, 0, ""
    while True:
        argv = ("all", _MIDS_PER_CALL, up_to, skip)
        reply = await client.call_script(SCRIPTS["replay"], keys, argv, replayable=False)
        done, kept, up_to = reply_int(reply[0]), reply_int(reply[1]), str(reply_int(reply[2]))
        replayed += done
        skip += kept
        if done + kept < _MIDS_PER_CALL:
            return replayed


async def purge_mids(client: ScriptClient, keys: QueueKeys, mids: Sequence[str]) -> int:
    """Remove these mids from the history: how many were in it."""
    removed = 0
    for first in range(0, len(mids), _MIDS_PER_CALL):
        part = [mid_arg(mid) for mid in mids[first : first + _MIDS_PER_CALL]]
        removed += reply_int(
            await client.call_script(SCRIPTS["purge"], keys, ("mids", *part), replayable=False)
        )
    return removed


async def purge_all(client: ScriptClient, keys: QueueKeys) -> int:
    """Remove every entry that failed up to the first call's server time: how many."""
    removed, up_to = 0, ""
    while True:
        reply = await client.call_script(
            SCRIPTS["purge"], keys, ("all", _MIDS_PER_CALL, up_to), replayable=False
        )
        done, up_to = reply_int(reply[0]), str(reply_int(reply[1]))
        removed += done
        if done < _MIDS_PER_CALL:
            return removed
