"""Routing each call to the Redis Cluster node that owns its slot, with the send-once rule.

Every key of a queue shares the hash tag ``{<queue>}``, so each script call
touches one slot, served by one master. :class:`ClusterTransport` keeps its
own map of slot → master (read with ``CLUSTER SLOTS``) and one
:class:`._transport.Transport` per node, which sends each command exactly
once as on a single server. Redirections are followed here because they
prove the command did not run: ``MOVED`` and ``ASK`` name the node to ask,
``TRYAGAIN`` (a multi-key call during a slot's migration) and
``CLUSTERDOWN`` ask for a later try. A call that may have run is never
re-sent; its :class:`OutcomeUnknownError` reaches the caller. A failed
connection marks the map stale: after a failover the next call finds the
promoted replica.

It knows nothing of scripts or queues; redis-py's cluster client is read
only through :mod:`._redis_internals`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.crc import key_slot

from ._exceptions import OutcomeUnknownError, ScriptError, VermilionConnectionError
from ._logs import logger
from ._redis_internals import cluster_seeds, connection_settings, node_client
from ._transport import Channel, Transport
from ._wire import pack_command, reply_int

__all__ = ["ClusterChannel", "ClusterTransport"]

SLOTS = 16384
# MOVED and ASK followed per call: a slot moves once per resharding step, and a
# loop of redirections means the map and the cluster disagree for good.
_MAX_REDIRECTS = 5
# How long TRYAGAIN (a slot half migrated) and CLUSTERDOWN (a failover under
# way) are waited out before the caller hears of them.
_BUSY_WAIT = 10.0
_FIRST_BUSY_PAUSE = 0.01
_LONGEST_BUSY_PAUSE = 0.25
# A call whose node went silent ends after this long (or the client's shorter
# socket_timeout), as on one server.
_CALL_TIMEOUT = 30.0
_ASKING = pack_command((b"ASKING",))
_CLUSTER_SLOTS = pack_command((b"CLUSTER", b"SLOTS"))


class ClusterChannel(Channel):
    """One caller's connections for calls in sequence: one per node it reached.

    The worker's poll loop keeps one; its BLPOP goes to whichever node owns
    the queue's slot now.
    """

    def __init__(self) -> None:  # no wire of its own: one channel per node, made when first used
        self._by_node: dict[str, Channel] = {}

    def on(self, address: str, node: Transport) -> Channel:
        channel = self._by_node.get(address)
        if channel is None:
            channel = self._by_node[address] = node.open_channel()
        return channel

    async def disconnect(self) -> None:
        for channel in self._by_node.values():
            await channel.disconnect()

    async def aclose(self) -> None:
        channels, self._by_node = list(self._by_node.values()), {}
        for channel in channels:
            await channel.aclose()


class _BusyWait:
    """The growing pauses between tries of a call the cluster refused for now, for a bounded time."""

    def __init__(self) -> None:
        self._until: float | None = None
        self._pause = _FIRST_BUSY_PAUSE

    async def wait(self) -> bool:
        """Pause before the next try; False once the time is up."""
        now = asyncio.get_running_loop().time()
        self._until = self._until or now + _BUSY_WAIT
        if now >= self._until:
            return False
        await asyncio.sleep(self._pause)
        self._pause = min(_LONGEST_BUSY_PAUSE, self._pause * 2)
        return True


class ClusterTransport:
    """Sends each command to the master of its route's slot, following redirections."""

    def __init__(
        self, client: aioredis.RedisCluster, *, timeout: float | None = None, owns_client: bool = False
    ) -> None:
        self.client = client
        self._owns_client = owns_client
        configured = connection_settings(client).get("socket_timeout")
        self._timeout = timeout or (min(_CALL_TIMEOUT, float(configured)) if configured else _CALL_TIMEOUT)
        self._nodes: dict[str, Transport] = {}
        self._owners: list[str | None] | None = None
        self._masters: list[str] = []
        self._seeds: list[str] = []
        self._stale = False
        self._refresh_lock = asyncio.Lock()
        self._slots: dict[bytes, int] = {}
        # How often each redirection or refusal was followed (for tests and debugging).
        self.followed: Counter[str] = Counter()

    # -- sending ---------------------------------------------------------------

    async def run(
        self,
        command: Sequence[Any] | bytes,
        *,
        replayable: bool,
        read_timeout: float | None = None,
        channel: Channel | None = None,
        route: bytes | None = None,
        then: bytes | None = None,
    ) -> Any:
        """Send ``command`` to the master of ``route``'s slot (any master without one).

        Sent again only after a reply that proves it did not run (MOVED, ASK,
        TRYAGAIN, CLUSTERDOWN), or after a connection that failed before it
        was sent (or on a replay-safe call) when the slot has a new master.
        """
        packed = command if isinstance(command, bytes) else pack_command(command)
        slot = None if route is None else self._slot(route)
        redirects = 0
        asking: str | None = None
        failed_over = False
        busy = _BusyWait()
        while True:
            address = asking or await self._owner(slot)
            node = self._node(address)
            try:
                if asking is not None:
                    return await self._run_asking(node, packed, replayable, read_timeout, then)
                sub = channel.on(address, node) if isinstance(channel, ClusterChannel) else None
                return await node.run(
                    packed, replayable=replayable, read_timeout=read_timeout, channel=sub, then=then
                )
            except OutcomeUnknownError:
                # It may have run: never sent again, wherever the slot is now.
                self._stale = True
                raise
            except VermilionConnectionError:
                # Never sent, or safe to repeat: one more try if the slot has a
                # new master (a failover), never more.
                self._stale = True
                if slot is None or asking is not None or failed_over:
                    raise
                failed_over = True
                if await self._owner(slot) == address:
                    raise
                self.followed["failover"] += 1
                logger.info("Redis Cluster slot %d has a new master after a failed connection", slot)
            except ScriptError as exc:
                refusal = exc.__cause__
                if isinstance(refusal, redis_errors.AskError) and redirects < _MAX_REDIRECTS:
                    redirects += 1
                    asking = self._redirect(refusal)
                    continue
                if not isinstance(refusal, (redis_errors.TryAgainError, redis_errors.ClusterDownError)):
                    raise
                kind = "tryagain" if isinstance(refusal, redis_errors.TryAgainError) else "clusterdown"
                self.followed[kind] += 1
                self._stale = self._stale or kind == "clusterdown"
                if not await busy.wait():
                    raise VermilionConnectionError(
                        f"the Redis Cluster refused the call for {_BUSY_WAIT:g} s ({refusal}); it did not run"
                    ) from exc
                # A slot half migrated answers ASK then TRYAGAIN until the move
                # is done: the redirections are bounded by the wait's time.
                asking = None
                redirects = 0

    def _redirect(self, refusal: redis_errors.AskError) -> str | None:
        """Follow MOVED (the map changes) or ASK (this call only); the node for ASKING, if any.

        Both prove the command did not run, so sending it there is safe.
        """
        target = f"{refusal.host}:{refusal.port}"
        if isinstance(refusal, redis_errors.MovedError):
            self.followed["moved"] += 1
            self._moved(refusal.slot_id, target)
            return None
        self.followed["ask"] += 1
        return target

    async def _run_asking(
        self,
        node: Transport,
        packed: bytes,
        replayable: bool,
        read_timeout: float | None,
        then: bytes | None,
    ) -> Any:
        """ASKING then the command on one connection: the importing node serves it once."""
        channel = node.open_channel()
        try:
            await node.run(_ASKING, replayable=True, channel=channel)
            return await node.run(
                packed, replayable=replayable, read_timeout=read_timeout, channel=channel, then=then
            )
        finally:
            await channel.aclose()

    def _slot(self, route: bytes) -> int:
        slot = self._slots.get(route)
        if slot is None:
            if len(self._slots) > 4096:
                self._slots.clear()
            slot = self._slots[route] = key_slot(route)
        return slot

    def _node(self, address: str) -> Transport:
        node = self._nodes.get(address)
        if node is None:
            host, _, port = address.rpartition(":")
            client = node_client(self.client, host, int(port))
            node = self._nodes[address] = Transport(client, timeout=self._timeout, owns_client=True)
        return node

    # -- the slot map ------------------------------------------------------------

    async def _owner(self, slot: int | None) -> str:
        """The address of ``slot``'s master (any master's for None), from a fresh map if stale."""
        await self._refresh_if_needed()
        assert self._owners is not None
        if slot is None:
            if not self._masters:
                raise VermilionConnectionError("the Redis Cluster has no master serving any slot")
            return self._masters[0]
        owner = self._owners[slot]
        if owner is None:
            raise VermilionConnectionError(
                f"no Redis Cluster master serves slot {slot} (the cluster is down)"
            )
        return owner

    def _moved(self, slot: int, address: str) -> None:
        if self._owners is not None:
            self._owners[slot] = address
        if address not in self._masters:
            self._masters.append(address)

    async def _refresh(self) -> None:
        """Read the slot map from the first node that answers ``CLUSTER SLOTS``."""
        stale_since = self._owners
        async with self._refresh_lock:
            if self._owners is not stale_since and not self._stale:
                return  # another call refreshed it while this one waited
            if not self._seeds:
                self._seeds = [f"{host}:{port}" for host, port in await cluster_seeds(self.client)]
            failure: BaseException | None = None
            for address in list(self._seeds):
                try:
                    reply = await self._node(address).run(_CLUSTER_SLOTS, replayable=True)
                except (VermilionConnectionError, ScriptError) as exc:
                    failure = exc
                    continue
                self._install(reply, address)
                return
            raise VermilionConnectionError(f"no Redis Cluster node answered CLUSTER SLOTS: {failure}")

    def _install(self, reply: Any, asked: str) -> None:
        owners: list[str | None] = [None] * SLOTS
        masters: list[str] = []
        known: list[str] = []
        asked_host = asked.rpartition(":")[0]
        for entry in reply:
            first, last = reply_int(entry[0]), reply_int(entry[1])
            addresses = [_address(node, asked_host) for node in entry[2:]]
            owners[first : last + 1] = [addresses[0]] * (last - first + 1)
            masters.append(addresses[0])
            known.extend(addresses)
        self._owners = owners
        self._masters = list(dict.fromkeys(masters))
        # The node that answered is asked first next time (one that hangs would
        # cost a call's timeout on every refresh); replicas stay seeds too:
        # after a failover one of them is the master to ask.
        self._seeds = list(dict.fromkeys([asked, *known, *self._seeds]))
        self._stale = False

    # -- every master ------------------------------------------------------------

    async def primaries(self) -> Sequence[Transport]:
        await self._refresh_if_needed()
        return [self._node(address) for address in self._masters]

    async def _refresh_if_needed(self) -> None:
        if self._owners is None or self._stale:
            await self._refresh()

    def open_channel(self) -> ClusterChannel:
        return ClusterChannel()

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.aclose()
        if self._owns_client:
            await self.client.aclose()


def _address(node: Sequence[Any], asked_host: str) -> str:
    """``host:port`` of a CLUSTER SLOTS node entry; an empty host is the node that answered."""
    raw_host = node[0]
    host = raw_host.decode() if isinstance(raw_host, bytes) else str(raw_host)
    if host in ("", "?"):
        host = asked_host
    return f"{host}:{reply_int(node[1])}"
