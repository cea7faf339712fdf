"""Sending a command to Redis exactly once: connections, deadlines, the send-once rule.

Owns the connections a client of vermilion's own keeps idle between calls,
the channels a caller keeps for its own calls in sequence, the deadline that
bounds each call, and the rule that a command which may have left is never
sent again unless it is safe to repeat. It knows nothing of scripts or
queues (:mod:`._protocol` does), and reaches redis-py only through
:mod:`._redis_internals`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from ._error_mapping import CONNECTION_ERRORS, translate_errors, translated
from ._exceptions import OutcomeUnknownError
from ._logs import logger
from ._redis_internals import Wire, close_client, new_wire, pooled_wire, release_pooled
from ._wire import pack_command

__all__ = ["Channel", "Sender", "Transport"]

# A blocked BLPOP gets this much longer than its own timeout before the
# connection is declared dead.
_BLOCKING_READ_GRACE = 5.0
# redis-py reports its own read timeout as a None reply, which BLPOP also uses
# for "nothing came"; so on a user's client it is set this far beyond the
# deadline, which alone can fire.
_PAST_THE_DEADLINE = 60.0
# Idle connections a client of vermilion's own keeps between calls; more are
# opened while more calls run at once, and closed when they end.
_MAX_IDLE_CONNECTIONS = 16


class _MaybeSent(Exception):
    """A connection failed once the command may have left: it may have run."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Deadlines:
    """Ends calls that outlive their deadline, by aborting their connection.

    One task per :class:`Transport`, alive while calls are in flight, checks
    their deadlines: a timer and a cancel scope per call (``asyncio.timeout``)
    cost about a tenth of a single enqueue's client CPU. The aborted
    connection's pending read or write then fails like a dropped connection.
    """

    # A call made while the task sleeps towards a later deadline is looked at
    # within this many seconds; a connection still connecting, every so often.
    _LONGEST_NAP = 1.0
    _SHORTEST_NAP = 0.05

    def __init__(self) -> None:
        self._ends: dict[Wire, float] = {}
        self._aborted: set[Wire] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self, wire: Wire, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._ends[wire] = loop.time() + seconds
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._watch(), name="vermilion call deadlines")

    def stop(self, wire: Wire) -> bool:
        """Forget ``wire``'s deadline; whether it passed and ``wire`` was aborted."""
        self._ends.pop(wire, None)
        if wire in self._aborted:
            self._aborted.discard(wire)
            return True
        return False

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._ends:
            now = loop.time()
            for wire, end in list(self._ends.items()):
                if end <= now and wire.abort():
                    del self._ends[wire]
                    self._aborted.add(wire)
            if self._ends:
                earliest = min(self._ends.values())
                await asyncio.sleep(min(self._LONGEST_NAP, max(self._SHORTEST_NAP, earliest - now)))

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


class Channel:
    """One connection outside the pool, used for one caller's calls in sequence.

    It connects on first use and again after an error.
    """

    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    async def disconnect(self) -> None:
        """Drop the connection (and its read buffer); the next call connects again."""
        await self.wire.disconnect()

    async def aclose(self) -> None:
        await self.wire.disconnect()


class Sender(Protocol):
    """What :mod:`._protocol` sends through: one server's :class:`Transport`, or a
    cluster's router (:class:`._cluster.ClusterTransport`), which picks the node
    that owns ``route``'s slot."""

    async def run(
        self,
        command: Sequence[Any] | bytes,
        *,
        replayable: bool,
        read_timeout: float | None = None,
        channel: Channel | None = None,
        route: bytes | None = None,
        then: bytes | None = None,
    ) -> Any: ...

    def open_channel(self) -> Channel: ...

    async def primaries(self) -> Sequence[Sender]:
        """One sender per master, for commands every master must run (SCAN)."""
        ...

    async def aclose(self) -> None: ...


class Transport:
    """Sends packed commands on one client's connections, each at most once unless replayable."""

    def __init__(
        self, client: aioredis.Redis, *, timeout: float | None = None, owns_client: bool = False
    ) -> None:
        self.client = client
        # Bounds each call when the client has no socket_timeout of its own
        # (vermilion's own clients): a connection gone silent must not hang a
        # worker. Enforced here, once per call, because redis-py's per-write
        # socket timeout costs a task per command on Python < 3.12.
        self.timeout = timeout
        # A client vermilion made is used through connections of its own, kept
        # idle between calls: a checkout from redis-py's pool (locks, metrics,
        # events) cost more client CPU than the rest of a single enqueue's call.
        # A client the user passed keeps its pool, and the pool's limits.
        self._owns_client = owns_client
        self._idle: list[Wire] = []
        self._made: set[Wire] = set()
        self._deadlines = _Deadlines()

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
        """Send ``command`` and return its reply, with redis-py's errors translated.

        ``route`` (a key the command touches) matters to a cluster only: one
        server owns every key. ``then``, a packed command sent right behind
        it on the same connection (``WAIT``), makes the reply a pair.

        A call that failed before it left is never "maybe ran". One that may
        have run is repeated once if ``replayable``, else raises
        :class:`OutcomeUnknownError`. A failed connect is not repeated at once.
        """
        packed = command if isinstance(command, bytes) else pack_command(command)
        try:
            return await self._run_packed(packed, replayable, read_timeout, channel, then)
        except redis_errors.ReadOnlyError:
            # A master demoted under us (a Sentinel failover): nothing ran, so
            # once more on a new connection, which may reach the new master.
            logger.debug("the server is a read-only replica now; sending again on a new connection")
        try:
            return await self._run_packed(packed, replayable, read_timeout, channel, then)
        except redis_errors.ReadOnlyError as exc:
            raise translated(exc) from exc

    async def _run_packed(
        self,
        packed: bytes,
        replayable: bool,
        read_timeout: float | None,
        channel: Channel | None,
        then: bytes | None,
    ) -> Any:
        """:meth:`run`'s send and its replay rule; a READONLY refusal is left to the caller."""
        attempts = 2 if replayable else 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._send_once(packed, read_timeout, channel, then)
            except redis_errors.ReadOnlyError:
                raise
            except _MaybeSent as maybe:
                error = maybe.error
                if not replayable:
                    raise OutcomeUnknownError(
                        f"connection to Redis failed after the command was sent; it may have run: {error}"
                    ) from error
                if attempt == attempts:
                    raise translated(error) from error
                logger.debug("retrying a replay-safe Redis call after a connection error")
            except (redis_errors.RedisError, OSError) as exc:
                raise translated(exc) from exc
        raise AssertionError("unreachable")

    async def _send_once(
        self,
        command: bytes,
        read_timeout: float | None = None,
        channel: Channel | None = None,
        then: bytes | None = None,
    ) -> Any:
        """Send one packed command and read its reply, never re-sending.

        On ``channel``'s own connection if given, else on one from the pool. A
        connection error once the command may have left is raised as
        :class:`_MaybeSent`, so that :meth:`run` tells "not sent" from "maybe ran".
        """
        if channel is not None:
            wire = channel.wire
        elif self._owns_client:
            wire = self._take_idle()
        else:
            wire = await pooled_wire(self.client)
        limit = self.timeout if read_timeout is None else read_timeout + _BLOCKING_READ_GRACE
        sent = False
        if limit is not None:
            self._deadlines.start(wire, limit)
        try:
            try:
                if wire.is_connected and await wire.is_stale():
                    await wire.disconnect()
                # Connect apart from the send: a failed connect proves the
                # command never left, so it is neither "maybe ran" nor worth
                # repeating at once.
                if not wire.is_connected:
                    await wire.connect()
                sent = True
                if then is not None:
                    reply = await wire.exchange_pair(command, then, with_settings=not self._owns_client)
                elif self._owns_client:
                    reply = await wire.exchange(command)
                else:
                    beyond = None if read_timeout is None or limit is None else limit + _PAST_THE_DEADLINE
                    reply = await wire.exchange_with_settings(command, beyond)
            except (redis_errors.BusyLoadingError, redis_errors.ReadOnlyError):
                # -LOADING, -READONLY: the server refused the command, which did
                # not run (a replica refuses a script's first write). A fresh
                # connection asks a Sentinel-managed client's Sentinels anew.
                self._deadlines.stop(wire)
                await wire.disconnect()
                raise
            except CONNECTION_ERRORS as exc:
                error: BaseException = exc
                if self._deadlines.stop(wire):
                    error = TimeoutError(f"Redis sent no reply within {limit:g} s")
                    error.__cause__ = exc
                await wire.disconnect()
                if sent:
                    raise _MaybeSent(error) from error
                if error is exc:
                    raise
                raise error from exc
            except BaseException:
                # Cancelled between send and reply: the reply would be read by
                # the next user of this connection.
                self._deadlines.stop(wire)
                await wire.disconnect()
                raise
            if self._deadlines.stop(wire):
                # The reply came as the deadline aborted the connection: the
                # reply stands, the aborted connection must not be sent on.
                await wire.disconnect()
        finally:
            if channel is None:
                await self._release(wire)
        return reply

    def _take_idle(self) -> Wire:
        """The connection this client used last, or a new one."""
        if not self._idle:
            wire = new_wire(self.client)
            self._made.add(wire)
            return wire
        # Checked for staleness by _send_once, as every connection is.
        return self._idle.pop()

    async def _release(self, wire: Wire) -> None:
        if not self._owns_client:
            await release_pooled(self.client, wire)
        elif len(self._idle) < _MAX_IDLE_CONNECTIONS:
            self._idle.append(wire)
        else:
            self._made.discard(wire)
            await wire.disconnect()

    def open_channel(self) -> Channel:
        """A connection of its own, outside the pool, for one caller's calls in sequence."""
        return Channel(new_wire(self.client))

    async def primaries(self) -> Sequence[Transport]:
        return [self]

    async def aclose(self) -> None:
        """Close the connections this transport made, and the client if it owns it."""
        self._deadlines.cancel()
        made, self._made, self._idle = self._made, set(), []
        with translate_errors():
            for wire in made:
                await wire.disconnect()
            if self._owns_client:
                await close_client(self.client)
