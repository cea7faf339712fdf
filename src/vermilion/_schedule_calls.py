"""The Redis side of schedules: the call of ``lua/schedule.lua``.

Part of the Redis boundary, beside :mod:`._protocol`, whose :class:`ScriptClient`
sends every call. The watermarks live in the queue's slot, in a hash that is
none of its eleven message keys (:mod:`._keys` names it): the script takes it
as a twelfth key, before the tests' clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._exceptions import ProtocolError
from ._keys import QueueKeys, schedules_key
from ._protocol import ScriptClient
from ._scripts import SCRIPTS
from ._wire import reply_int

__all__ = ["REFUSED_FULL", "TickReply", "tick"]

# The script's answer for a due slot that a bounded, full queue refused.
REFUSED_FULL = -2


@dataclass(frozen=True, slots=True)
class TickReply:
    """What one call of the schedule script did, on the server's clock."""

    now_ms: int
    watermark_ms: int
    results: tuple[int, ...]
    """Per slot passed: 1 enqueued, 0 its mid was known already, -1 not due or already
    covered, -2 refused because the queue is bounded and full (skipped for good)."""


def _keys(keys: QueueKeys) -> QueueKeys:
    # The schedules hash goes 12th; a test clock, if any, follows it.
    queue_keys, clock = keys.keys[:11], keys.keys[11:]
    return QueueKeys(keys.name, (*queue_keys, schedules_key(keys.name), *clock), keys.v1)


async def tick(
    client: ScriptClient, keys: QueueKeys, name: str, payload: bytes, slots: Sequence[tuple[int, str]]
) -> TickReply:
    """Enqueue the due ``(slot_ms, mid)`` pairs of schedule ``name``, each at most once.

    Safe to send again: a slot the first send enqueued is covered by the
    watermark, so a re-send only reads -1 for it.
    """
    argv = [name, payload, *(arg for slot, mid in slots for arg in (slot, mid))]
    reply = await client.call_script(SCRIPTS["schedule"], _keys(keys), argv, replayable=True)
    if len(reply) != 2 + len(slots):
        raise ProtocolError(f"schedule answered {len(reply) - 2} results for {len(slots)} slots")
    return TickReply(reply_int(reply[0]), reply_int(reply[1]), tuple(reply_int(r) for r in reply[2:]))
