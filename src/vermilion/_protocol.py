"""The typed script calls: one method per operation of the Redis protocol.

Every script call goes through :meth:`ScriptClient.call_script`, which sends
the command exactly once through :mod:`._transport`, bypassing redis-py's own
retry loop: that loop re-sends a command after a connection error, and a
re-sent ``dequeue`` would lease messages nobody receives, a re-sent
``enqueue`` would answer ``already-queued`` for the caller's own message.
Only calls that are safe to repeat (read-only scripts; fenced acks and
extends, whose re-sends are told apart) are repeated, once, and never after a
failed connect. ``NOSCRIPT`` proves that a script did not run, so it is
always answered by sending the script's source with ``EVAL``.

This module owns which script each operation runs, with which arguments and
replay rule, and when the server and each queue's version are checked
(:mod:`._server_check` checks them). Key names come from :mod:`._keys`, bytes
and reply shapes from :mod:`._wire`; it holds no connection of its own.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from ._cluster import ClusterTransport
from ._error_mapping import naming_a_denied_command, refused_as
from ._exceptions import (
    OutcomeUnknownError,
    ProtocolError,
    ReplicationError,
    ScriptError,
)
from ._keys import QueueKeys, queue_name_of, scan_pattern
from ._logs import logger
from ._redis_internals import RedisClient, pool_of
from ._replication import Replication
from ._scan import scan_names
from ._scripts import SCRIPTS, Script
from ._server_check import check_server, check_version
from ._shards import check_shard_count, claim_shards
from ._transport import Channel, Sender, Transport
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

_CHECKED_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()
# A dequeue reply larger than this frees its connection's read buffer at once.
_LARGE_REPLY_BYTES = 4 << 20


class ScriptClient:
    """Script calls and the few plain commands vermilion needs, on one client."""

    def __init__(
        self, client: RedisClient, *, timeout: float | None = None, owns_client: bool = False
    ) -> None:
        self.client = client
        # A cluster's calls go to the master of each queue's slot (its hash tag).
        self.transport: Sender = (
            ClusterTransport(client, timeout=timeout, owns_client=owns_client)
            if isinstance(client, aioredis.RedisCluster)
            else Transport(client, timeout=timeout, owns_client=owns_client)
        )
        self._checked = False
        self._versions_checked: set[str] = set()
        # The queue's replicas option, which its worker's acks follow.
        self.replication: Replication | None = None
        # EVALSHA <sha> <numkeys> <keys...> of each (script, queue), packed once.
        self._heads: dict[tuple[str, str], tuple[int, bytes]] = {}

    # -- the server check ----------------------------------------------------------

    async def _ensure_checked(self) -> None:
        # Once per connection pool: queues that share a client share the check.
        if self._checked or pool_of(self.client) in _CHECKED_POOLS:
            return
        await self.check_server()

    async def check_server(self) -> None:
        """Refuse servers the scripts cannot run on; warn once if eviction is possible."""
        await check_server(self.transport)
        self._mark_checked()

    async def _ensure_version(self, keys: QueueKeys) -> None:
        """Refuse a queue whose data another protocol version wrote (once per queue)."""
        if keys.name in self._versions_checked:
            return
        if keys.base is not None and keys.base.name not in self._versions_checked:
            # A shard: its queue must keep this client's shard count (claimed if none).
            await claim_shards(self.transport, keys.base, keys.shards)
            self._versions_checked.add(keys.base.name)
        probe = QueueKeys(keys.name, (keys.key("meta"), *keys.v1[:15], keys.v1[16]), keys.v1)
        reply = await self._call_checked(SCRIPTS["version"], probe, (), replayable=True)
        check_version(keys.name, reply_int(reply[0]), reply_int(reply[1]))
        if keys.base is None:
            check_shard_count(keys.name, reply_int(reply[2]), 1)
        self._versions_checked.add(keys.name)

    def _mark_checked(self) -> None:
        self._checked = True
        _CHECKED_POOLS.add(pool_of(self.client))

    # -- script calls ----------------------------------------------------------------

    async def call_script(
        self,
        script: Script,
        keys: QueueKeys,
        argv: Sequence[Any],
        *,
        replayable: bool,
        channel: Channel | None = None,
    ) -> Any:
        body = b"".join([bulk(arg) for arg in argv])
        return await self._call_packed(script, keys, len(argv), body, replayable=replayable, channel=channel)

    async def _call_checked(
        self,
        script: Script,
        keys: QueueKeys,
        argv: Sequence[Any],
        *,
        replayable: bool,
        cache_head: bool = True,
    ) -> Any:
        """Call ``script`` without the version check (the check itself, migrate, presence).

        ``cache_head=False`` for keys that vary from call to call (a worker's
        presence record), which would fill the cache of packed heads.
        """
        body = b"".join([bulk(arg) for arg in argv])
        return await self._call_packed(
            script, keys, len(argv), body, replayable=replayable, versioned=False, cache_head=cache_head
        )

    async def _call_packed(
        self,
        script: Script,
        keys: QueueKeys,
        argc: int,
        body: bytes,
        *,
        replayable: bool,
        channel: Channel | None = None,
        versioned: bool = True,
        cache_head: bool = True,
        then: bytes | None = None,
    ) -> Any:
        """Call ``script`` with ``argc`` arguments already packed as RESP bulk strings
        (and ``then`` behind it: the reply is then a pair)."""
        await self._ensure_checked()
        if versioned:
            await self._ensure_version(keys)
        count, head = self._head(script, keys) if cache_head else _packed_head(script, keys)
        try:
            return await self.transport.run(
                b"*%d\r\n%b%b" % (count + argc, head, body),
                replayable=replayable,
                channel=channel,
                route=keys.keys[0],
                then=then,
            )
        except ScriptError as exc:
            if not refused_as(exc, redis_errors.NoScriptError):
                raise naming_a_denied_command(exc, script) from exc.__cause__
        # NOSCRIPT proves the script did not run: sending its source is safe.
        eval_ = b"EVAL_RO" if script.read_only else b"EVAL"
        keys_part = b"".join([bulk(key) for key in keys.keys])
        eval_head = b"".join([bulk(eval_), bulk(script.source), bulk(len(keys.keys)), keys_part])
        try:
            return await self.transport.run(
                b"*%d\r\n%b%b" % (3 + len(keys.keys) + argc, eval_head, body),
                replayable=replayable,
                channel=channel,
                route=keys.keys[0],
                then=then,
            )
        except ScriptError as exc:
            raise naming_a_denied_command(exc, script) from exc.__cause__

    def _head(self, script: Script, keys: QueueKeys) -> tuple[int, bytes]:
        cache_key = (script.name, keys.name)
        head = self._heads.get(cache_key)
        if head is None:
            head = self._heads[cache_key] = _packed_head(script, keys)
        return head

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
        reply = await self._call_packed(SCRIPTS["enqueue"], keys, argc, body, replayable=False, then=then)
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
        reply, acknowledged = await self._call_packed(
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
        reply = await self._call_checked(SCRIPTS["clear"], keys, (), replayable=True)
        self._versions_checked.discard(keys.name)
        return reply_int(reply)

    async def migrate(self, keys: QueueKeys, limit: int) -> tuple[int, int]:
        """Move up to ``limit`` mids of each kind from protocol version 1: (moved, left)."""
        both = QueueKeys(keys.name, keys.keys + keys.v1, keys.v1)
        reply = await self._call_checked(SCRIPTS["migrate"], both, (limit,), replayable=False)
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
        await self._ensure_checked()
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
        await self._ensure_checked()
        async for name in scan_names(self.transport, match, name_of):
            yield name

    async def aclose(self) -> None:
        await self.transport.aclose()


def _packed_head(script: Script, keys: QueueKeys) -> tuple[int, bytes]:
    """``EVALSHA <sha> <numkeys> <keys...>`` packed as RESP bulk strings, and how many they are."""
    evalsha = b"EVALSHA_RO" if script.read_only else b"EVALSHA"
    args: list[bytes | str | int] = [evalsha, script.sha, len(keys.keys), *keys.keys]
    return len(args), b"".join([bulk(arg) for arg in args])
