"""The typed script calls: one method per operation of the Redis protocol.

This module owns which script each operation runs, with which arguments and
replay rule, and how its reply reads; :mod:`._script_calls` sends the calls
(exactly once, after the server and version checks). Key names come from
:mod:`._keys`, bytes and reply shapes from :mod:`._wire`; it holds no
connection of its own.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ._exceptions import (
    OutcomeUnknownError,
    ProtocolError,
    ReplicationError,
)
from ._keys import QueueKeys, queue_name_of, scan_pattern
from ._logs import logger
from ._replication import Replication
from ._scan import scan_names
from ._script_calls import ScriptCaller
from ._scripts import SCRIPTS
from ._transport import Channel
from ._wire import (
    DEFAULT_ENQUEUE_OPTIONS,
    ENQUEUE_OPTION_FIELDS,
    Counts,
    DequeueReply,
    EnqueueOptions,
    OutcomeRequest,
    StoredMessage,
    ack_argv,
    bulk,
    mid_arg,
    pack_messages,
    parse_content,
    parse_counts,
    parse_dequeue,
    reply_int,
    reply_text,
)

__all__ = ["DEFAULT_MAX_FAILED_BYTES", "ScriptClient"]

DEFAULT_MAX_FAILED_BYTES = 64 << 20
"""The failure history's byte bound when the caller gives none (``Queue``'s default)."""

# A dequeue reply larger than this frees its connection's read buffer at once.
_LARGE_REPLY_BYTES = 4 << 20


class ScriptClient(ScriptCaller):
    """The operations of the Redis protocol, one method each, on one client."""

    # -- operations --------------------------------------------------------------

    async def enqueue(
        self,
        keys: QueueKeys,
        options: EnqueueOptions,
        messages: Sequence[tuple[str, bytes]],
        replication: Replication | None = None,
    ) -> list[str]:
        """Enqueue ``(mid, payload)`` pairs with shared options, in one script call.

        With ``replication``, raises :class:`ReplicationError` (its ``replies``
        set) when fewer replicas than asked confirmed the write.
        """
        if len(messages) == 1 and (options is DEFAULT_ENQUEUE_OPTIONS or options == DEFAULT_ENQUEUE_OPTIONS):
            # The script's usual call, answered before it defines anything: one
            # message with the default options, sent as its mid and payload only
            # (each argument costs the server about as much as a Lua statement).
            body, argc = pack_messages(messages), 2
        else:
            body = options.packed_argv + pack_messages(messages, options.key)
            argc = len(ENQUEUE_OPTION_FIELDS) + 2 * len(messages)
        then = None if replication is None else replication.wait
        reply = await self.call_packed(SCRIPTS["enqueue"], keys, argc, body, replayable=False, then=then)
        if replication is not None:
            reply, acknowledged = reply[0], reply_int(reply[1])
        if len(reply) != len(messages):
            raise ProtocolError(f"enqueue answered {len(reply)} results for {len(messages)} messages")
        replies = [reply_text(item) for item in reply]
        if replication is not None and acknowledged < replication.replicas:
            error = ReplicationError(
                replication.shortfall("the enqueue", acknowledged),
                replicas=replication.replicas,
                acknowledged=acknowledged,
                mids=tuple(mid for mid, _ in messages),
            )
            error.replies = replies
            raise error
        return replies

    async def dequeue(
        self,
        keys: QueueKeys,
        max_messages: int,
        default_lock_ms: int,
        housekeeping_limit: int,
        channel: Channel | None = None,
        max_suspects: int = 1,
    ) -> DequeueReply:
        reply = await self.call_script(
            SCRIPTS["dequeue"],
            keys,
            (max_messages, default_lock_ms, housekeeping_limit, max_suspects),
            replayable=False,
            channel=channel,
        )
        parsed = parse_dequeue(reply)
        received = sum(len(leased.payload) for leased in parsed.messages)
        if channel is not None and received > _LARGE_REPLY_BYTES:
            # hiredis keeps its read buffer, as large as the reply, until the
            # next reply arrives; the payloads would be decoded while it still
            # holds a third copy. Reconnecting (next call) frees it now.
            await channel.disconnect()
        return parsed

    async def ack(
        self,
        keys: QueueKeys,
        outcomes: Sequence[OutcomeRequest],
        max_failed: int,
        max_failed_bytes: int = DEFAULT_MAX_FAILED_BYTES,
    ) -> list[bool | None]:
        """Record outcomes; per outcome True applied, False stale, None unknown.

        None: the reply of the first send was lost and the re-send found the
        lease gone, which that first send may have done itself.
        """
        args = ack_argv(outcomes, max_failed, max_failed_bytes)
        try:
            reply = await self._replicated_ack(keys, args)
        except OutcomeUnknownError:
            # The fence makes re-sending safe, but an outcome the first send
            # applied now reads as stale: a 0 from the re-send proves nothing.
            reply = await self._replicated_ack(keys, args)
            return [True if reply_int(item) else None for item in reply]
        return [bool(reply_int(item)) for item in reply]

    async def _replicated_ack(self, keys: QueueKeys, args: Sequence[Any]) -> Any:
        """One ``ack`` call, followed by the queue's WAIT if it asks for replicas.

        Too few replicas is logged, not raised: the outcome stands on the
        master, and if a failover loses it the message is handled again
        (a duplicate, never a loss).
        """
        replication = self.replication
        if replication is None:
            return await self.call_script(SCRIPTS["ack"], keys, args, replayable=False)
        body = b"".join([bulk(arg) for arg in args])
        reply, acknowledged = await self.call_packed(
            SCRIPTS["ack"], keys, len(args), body, replayable=False, then=replication.wait
        )
        if reply_int(acknowledged) < replication.replicas:
            logger.warning(
                "%s; its messages may be handled again after a failover",
                replication.shortfall(f"an ack on queue {keys.name!r}", reply_int(acknowledged)),
            )
        return reply

    async def extend(self, keys: QueueKeys, leases: Sequence[tuple[str, int, int]]) -> list[bool]:
        argv = [arg for mid, token, lock_ms in leases for arg in (mid_arg(mid), token, lock_ms)]
        reply = await self.call_script(SCRIPTS["extend"], keys, argv, replayable=True)
        return [bool(reply_int(item)) for item in reply]

    async def message_status(self, keys: QueueKeys, mid: str) -> str | None:
        reply = await self.call_script(SCRIPTS["status"], keys, (mid,), replayable=True)
        return reply_text(reply[0]) if reply else None

    async def counts(self, keys: QueueKeys) -> Counts:
        return parse_counts(await self.call_script(SCRIPTS["counts"], keys, (), replayable=True))

    async def configure(self, keys: QueueKeys, changes: Sequence[tuple[str, int | None]]) -> dict[str, int]:
        """Apply ``changes`` (``None`` removes a setting); the settings in force after."""
        argv = [part for name, value in changes for part in (name, "" if value is None else str(value))]
        reply = await self.call_script(SCRIPTS["configure"], keys, argv, replayable=True)
        return {reply_text(reply[i]): reply_int(reply[i + 1]) for i in range(0, len(reply), 2)}

    async def content(self, keys: QueueKeys) -> tuple[int, list[StoredMessage]]:
        return parse_content(await self.call_script(SCRIPTS["content"], keys, (), replayable=True))

    async def clear(self, keys: QueueKeys) -> int:
        # No version check: clear is the repair of a damaged queue (a `meta` of the
        # wrong type fails the check), and it deletes only this version's keys.
        reply = await self.call_unversioned(SCRIPTS["clear"], keys, (), replayable=True)
        self._versions_checked.discard(keys.name)
        return reply_int(reply)

    async def migrate(self, keys: QueueKeys, limit: int) -> tuple[int, int]:
        """Move up to ``limit`` mids of each kind from protocol version 1: (moved, left)."""
        both = QueueKeys(keys.name, keys.keys + keys.v1, keys.v1)
        reply = await self.call_unversioned(SCRIPTS["migrate"], both, (limit,), replayable=False)
        self._versions_checked.discard(keys.name)
        return reply_int(reply[0]), reply_int(reply[1])

    async def wait_for_wakeup(
        self, keys: QueueKeys | Sequence[QueueKeys], timeout: float, channel: Channel | None = None
    ) -> bytes | None:
        """Block until an enqueue pushes a wake-up token, or ``timeout`` seconds pass.

        Returns the wake-up key the token came from (one of several queues'
        on one server: a sharded queue's shards), or None. Needs no script:
        BLPOP is atomic.
        """
        await self.ensure_checked()
        notify = [keys.key("notify")] if isinstance(keys, QueueKeys) else [k.key("notify") for k in keys]
        # BLPOP takes seconds with millisecond resolution; 0 would block forever.
        timeout = max(0.001, math.ceil(timeout * 1000) / 1000)
        reply = await self.transport.run(
            (b"BLPOP", *notify, f"{timeout:.3f}"),
            replayable=True,
            read_timeout=timeout,
            channel=channel,
            route=notify[0],
        )
        return None if reply is None else bytes(reply[0])

    def open_channel(self) -> Channel:
        """A connection of its own, outside the pool, for one caller's calls in sequence.

        The worker's poll loop uses one: its dequeues and its blocking waits
        then cost no pool checkout each, and an idle worker's BLPOP never holds
        a connection that producers sharing the pool are waiting for.
        """
        return self.transport.open_channel()

    def scan_queue_names(self, pattern: str) -> AsyncIterator[str]:
        """Yield the names of queues that have any key, matching a glob ``pattern``."""
        return self.scan_names(scan_pattern(pattern), queue_name_of)

    async def scan_names(
        self, match: bytes | str, name_of: Callable[[bytes], bytes | None]
    ) -> AsyncIterator[str]:
        """Yield, once each, the queue names ``name_of`` reads in the keys SCAN finds by ``match``."""
        await self.ensure_checked()
        async for name in scan_names(self.transport, match, name_of):
            yield name

    async def aclose(self) -> None:
        await self.transport.aclose()
