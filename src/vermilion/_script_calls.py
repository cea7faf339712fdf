"""Sending a script call: the server and version checks, then ``EVALSHA`` exactly once.

Every script call goes through :meth:`ScriptCaller.call_packed`, which sends
the command exactly once through :mod:`._transport`, bypassing redis-py's own
retry loop: that loop re-sends a command after a connection error, and a
re-sent ``dequeue`` would lease messages nobody receives, a re-sent
``enqueue`` would answer ``already-queued`` for the caller's own message.
Only calls that are safe to repeat (read-only scripts; fenced acks and
extends, whose re-sends are told apart) are repeated, once, and never after a
failed connect. ``NOSCRIPT`` proves that a script did not run, so it is
always answered by sending the script's source with ``EVAL``.

The server is checked once per connection pool and each queue's protocol
version (and shard count) once per client, before its first call
(:mod:`._server_check` and :mod:`._shards` hold the checks). Which script each
operation runs, with which arguments, is :mod:`._protocol`'s.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from ._cluster import ClusterTransport
from ._error_mapping import naming_a_denied_command, refused_as
from ._exceptions import ScriptError
from ._keys import QueueKeys
from ._redis_internals import RedisClient, pool_of
from ._replication import Replication
from ._scripts import SCRIPTS, Script
from ._server_check import check_server, check_version
from ._shards import check_shard_count, claim_shards
from ._transport import Channel, Sender, Transport
from ._wire import bulk, reply_int

__all__ = ["ScriptCaller"]

_CHECKED_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()


class ScriptCaller:
    """Sends script calls for one client: checks first, then ``EVALSHA`` (``EVAL`` on ``NOSCRIPT``)."""

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

    async def ensure_checked(self) -> None:
        # Once per connection pool: queues that share a client share the check.
        if self._checked or pool_of(self.client) in _CHECKED_POOLS:
            return
        await self.check_server()

    async def check_server(self) -> None:
        """Refuse servers the scripts cannot run on; warn once if eviction is possible."""
        await check_server(self.transport)
        self._mark_checked()

    async def ensure_version(self, keys: QueueKeys) -> None:
        """Refuse a queue whose data another protocol version wrote (once per queue)."""
        if keys.name in self._versions_checked:
            return
        if keys.base is not None and keys.base.name not in self._versions_checked:
            # A shard: its queue must keep this client's shard count (claimed if none).
            await claim_shards(self.transport, keys.base, keys.shards)
            self._versions_checked.add(keys.base.name)
        probe = QueueKeys(keys.name, (keys.key("meta"), *keys.v1[:15], keys.v1[16]), keys.v1)
        reply = await self.call_unversioned(SCRIPTS["version"], probe, (), replayable=True)
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
        return await self.call_packed(script, keys, len(argv), body, replayable=replayable, channel=channel)

    async def call_unversioned(
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
        return await self.call_packed(
            script, keys, len(argv), body, replayable=replayable, versioned=False, cache_head=cache_head
        )

    async def call_packed(
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
        await self.ensure_checked()
        if versioned:
            await self.ensure_version(keys)
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


def _packed_head(script: Script, keys: QueueKeys) -> tuple[int, bytes]:
    """``EVALSHA <sha> <numkeys> <keys...>`` packed as RESP bulk strings, and how many they are."""
    evalsha = b"EVALSHA_RO" if script.read_only else b"EVALSHA"
    args: list[bytes | str | int] = [evalsha, script.sha, len(keys.keys), *keys.keys]
    return len(args), b"".join([bulk(arg) for arg in args])
