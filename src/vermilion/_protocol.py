"""The only module that talks to Redis: keys, script calls, replies, errors.

Every script call goes through :meth:`Connection.call_script`, which sends the
command exactly once (on a connection of its own for a client vermilion made,
else on one from the client's pool), bypassing redis-py's own retry loop: that
loop re-sends a command after a connection error, and a re-sent ``dequeue``
would lease messages nobody receives, a re-sent ``enqueue`` would answer
``already-queued`` for the caller's own message. Only calls that are safe to
repeat (read-only scripts; fenced acks and extends, whose re-sends are told
apart) are repeated, once, by this module, and never after a failed connect.
``NOSCRIPT`` proves that a script did not run, so it is always answered by
sending the script's source with ``EVAL``.
"""

from __future__ import annotations

import asyncio
import math
import re
import select
import ssl
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from ._exceptions import (
    ConfigurationError,
    OutcomeUnknownError,
    ProtocolError,
    ScriptError,
    VermilionConnectionError,
)
from ._logs import logger
from ._scripts import SCRIPTS, Script
from ._validation import check_queue_name

__all__ = [
    "DEFAULT_ENQUEUE_OPTIONS",
    "KEY_PARTS",
    "MIN_SERVER_VERSION",
    "Channel",
    "Connection",
    "DequeueReply",
    "EnqueueOptions",
    "Leased",
    "OutcomeRequest",
    "QueueKeys",
    "StoredMessage",
    "is_tls_failure",
    "pack_command",
]


KEY_PREFIX = "vermilion"
# Order matters: it is the KEYS order documented in lua/_common.lua.
KEY_PARTS = (
    "messages",
    "requeue",
    "attempts",
    "enqueued",
    "due",
    "lock_ms",
    "requeue_lock_ms",
    "ready",
    "delayed",
    "locks",
    "leases",
    "done",
    "failed",
    "errors",
    "notify",
    "seq",
    "suspects",
)
MIN_SERVER_VERSION = (7, 0, 0)
"""Scripts use `#!lua flags=no-writes` (7.0) and LPOP with a count (6.2)."""

_CAN_UPDATE, _CAN_REQUEUE, _RESET_DELAY = 1, 2, 4
_EVICTING_POLICIES_WARNED: set[str] = set()
_CHECKED_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()
# A blocked BLPOP gets this much longer than its own timeout before the
# connection is declared dead.
_BLOCKING_READ_GRACE = 5.0
# Idle connections a client of vermilion's own keeps between calls; more are
# opened while more calls run at once, and closed when they end.
_MAX_IDLE_CONNECTIONS = 16
# A dequeue reply larger than this frees its connection's read buffer at once.
_LARGE_REPLY_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Every Redis key of one queue: ``vermilion:{<queue>}:<part>``.

    The braces are a Redis Cluster hash tag: every key of a queue lives in
    one slot, so every script touches one slot.
    """

    name: str
    keys: tuple[bytes, ...]

    @classmethod
    def for_queue(cls, name: str) -> QueueKeys:
        prefix = f"{KEY_PREFIX}:{{{name}}}:"
        return cls(name, tuple(f"{prefix}{part}".encode() for part in KEY_PARTS))

    def key(self, part: str) -> bytes:
        return self.keys[KEY_PARTS.index(part)]


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """What an enqueue call applies to every one of its messages."""

    delay_ms: int = 0
    lock_ms: int | None = None
    can_update: bool = False
    can_requeue: bool = False
    reset_delay: bool = False

    def argv(self) -> tuple[int | str, ...]:
        """The script's first arguments, in the order of _ENQUEUE_OPTION_FIELDS."""
        flags = (
            (_CAN_UPDATE if self.can_update else 0)
            | (_CAN_REQUEUE if self.can_requeue else 0)
            | (_RESET_DELAY if self.reset_delay else 0)
        )
        return (self.delay_ms, "" if self.lock_ms is None else self.lock_ms, flags)

    @property
    def packed_argv(self) -> bytes:
        """``argv()`` as RESP bulk strings (made once for the shared default options)."""
        if self is DEFAULT_ENQUEUE_OPTIONS:
            return _DEFAULT_PACKED_ARGV
        return b"".join([_bulk(arg) for arg in self.argv()])


_ENQUEUE_OPTION_FIELDS = ("delay_ms", "lock_ms", "flags")


class Leased(NamedTuple):
    """A message as ``dequeue`` handed it out, before decoding (a tuple: made per message)."""

    mid: str
    payload: bytes
    attempt: int
    lock_ms: int
    enqueued_ms: int
    token: int
    suspect: bool = False


@dataclass(frozen=True, slots=True)
class DequeueReply:
    now_ms: int
    ready: int
    next_due_ms: int | None
    reclaimed: int
    messages: list[Leased]
    suspects_held_back: int = 0


OutcomeKind = Literal["s", "r", "f"]


class OutcomeRequest(NamedTuple):
    """One handler outcome to acknowledge (a tuple: made per message)."""

    mid: str
    token: int
    kind: OutcomeKind
    backoff_ms: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One entry of the ``content`` script's reply, before decoding."""

    mid: str
    status: str
    attempts: int
    enqueued_ms: int | None
    backoff_end_ms: int | None
    payload: bytes | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    nqueued: int
    nlocked: int
    nbackoff: int
    ndone: int
    nfailed: int
    lag_ms: int
    now_ms: int = 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _int(value: object) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, str)):
        try:
            return int(value)
        except ValueError:
            pass
    raise ProtocolError(f"expected an integer in a script reply, got {value!r}")


def _mid_text(value: bytes) -> str:
    """A mid from a reply. One written by hand may not be UTF-8: surrogate
    escapes keep its bytes, so that its ack names the same key field."""
    return value.decode("utf-8", "surrogateescape")


def _mid_arg(mid: str) -> bytes:
    """A mid as sent back to Redis: the inverse of :func:`_mid_text`."""
    return mid.encode("utf-8", "surrogateescape")


# redis-py strips the error code from the errors it maps to a class of its own;
# the code is what a user searches for, so it is put back.
_ERROR_CODES: dict[type[redis_errors.ResponseError], str] = {
    redis_errors.OutOfMemoryError: "OOM: Redis reached maxmemory",
    redis_errors.ReadOnlyError: "READONLY: the server is a read-only replica",
    redis_errors.NoPermissionError: "NOPERM: the user lacks a permission",
}


def _with_error_code(exc: redis_errors.ResponseError) -> str:
    for error_class, code in _ERROR_CODES.items():
        if isinstance(exc, error_class):
            return f"{code}; {exc}"
    return str(exc)


def _translated(exc: BaseException) -> BaseException:
    """vermilion's exception for one of redis-py's (or a socket's); others as they are."""
    if isinstance(exc, redis_errors.AuthenticationError):
        return ConfigurationError(f"Redis refused the credentials: {exc}")
    if isinstance(exc, redis_errors.BusyLoadingError):
        return VermilionConnectionError(
            f"Redis is loading its data set and refused the command (LOADING): {exc}"
        )
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)):
        return VermilionConnectionError(f"Redis connection failed: {exc}")
    if isinstance(exc, redis_errors.ResponseError):
        message = str(exc)
        if message.startswith("VERMILION "):
            return ScriptError(message.removeprefix("VERMILION ").split(" script:")[0])
        return ScriptError(f"Redis refused the command: {_with_error_code(exc)}")
    if isinstance(exc, redis_errors.RedisError):
        return ProtocolError(f"Redis client error: {exc}")
    return exc


# Redis 7.0 says only "The user executing the script can't run this command or
# subcommand", Valkey "User u has no permissions to run the 'time' command"; both
# give the script's line, where vermilion's own source names the command.
_DENIED_IN_SCRIPT = re.compile(r"can't run this command|no permissions to run the '")
_SCRIPT_LINE = re.compile(r"@user_script:(\d+)")
_CALLED_COMMAND = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'")


def _naming_a_denied_command(exc: ScriptError, script: Script) -> ScriptError:
    """``exc``, or, if an ACL denied a command inside ``script``, an error that names it."""
    message = str(exc.__cause__)
    line = _SCRIPT_LINE.search(message)
    if not _DENIED_IN_SCRIPT.search(message) or line is None:
        return exc
    lines = script.source.decode().splitlines()
    number = int(line.group(1))
    text = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    called = _CALLED_COMMAND.search(text)
    if called is None:  # a command chosen at run time: show the line
        advice = (
            f"a command the {script.name} script calls (its line {number}: {text}): grant the "
            "commands listed under 'Least privilege' in vermilion's docs"
        )
    else:
        command = called.group(1).lower()
        advice = (
            f"{command.upper()}, which the {script.name} script calls: grant it with ACL SETUSER "
            f"<user> +{command} (every command vermilion needs is listed under 'Least privilege' "
            "in its docs)"
        )
    return ScriptError(f"Redis refused the command: the ACL user may not run {advice}. Redis said: {message}")


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn redis-py's exceptions into vermilion's, at this one boundary."""
    try:
        yield
    except (redis_errors.RedisError, OSError) as exc:
        raise _translated(exc) from exc


def is_tls_failure(exc: BaseException) -> bool:
    """Whether a connection error came from TLS (a certificate refused, say).

    Unlike a server that is down, such a setup does not mend itself by waiting.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


async def _has_unread_data_or_eof(conn: Any) -> bool:
    # redis-py 8 renamed can_read_destructive (still there, deprecated) to can_read.
    check = conn.can_read if hasattr(conn, "can_read") else conn.can_read_destructive
    return bool(await check())


def _socket_readable(conn: Any) -> bool:
    """Whether ``conn``'s socket holds bytes or an EOF that the event loop has not read yet.

    An idle connection should have nothing to read: anything there is the
    server closing it (its ``timeout``, CLIENT KILL, a proxy) or a stray reply.
    While the loop is busy, that EOF waits in the kernel, where only the socket
    itself shows it. A zero-timeout poll costs one system call.
    """
    writer = getattr(conn, "_writer", None)
    if writer is None:
        return False
    transport = writer.transport
    if transport.is_closing():
        return True
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    fd = sock.fileno()
    if fd < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


async def _is_stale(conn: Any) -> bool:
    """Whether a connected, idle ``conn`` must be opened afresh before anything is sent on it.

    Like redis-py's pool, a connection with unread bytes or the server's EOF
    is not sent on: a dead connection would turn a call that never left into
    a "maybe ran". redis-py 8.2 reports an EOF it reads here as an error.
    """
    if _socket_readable(conn):
        return True
    try:
        return await _has_unread_data_or_eof(conn)
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError):
        return True


class _Deadlines:
    """Ends calls that outlive their deadline, by aborting their connection.

    One task per :class:`Connection`, alive while calls are in flight, checks
    their deadlines: a timer and a cancel scope per call (``asyncio.timeout``)
    cost about a tenth of a single enqueue's client CPU. The aborted
    connection's pending read or write then fails like a dropped connection.
    """

    # A call made while the task sleeps towards a later deadline is looked at
    # within this many seconds; a connection still connecting, every so often.
    _LONGEST_NAP = 1.0
    _SHORTEST_NAP = 0.05

    def __init__(self) -> None:
        self._ends: dict[Any, float] = {}
        self._aborted: set[Any] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self, conn: Any, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._ends[conn] = loop.time() + seconds
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._watch(), name="vermilion call deadlines")

    def stop(self, conn: Any) -> bool:
        """Forget ``conn``'s deadline; whether it passed and ``conn`` was aborted."""
        self._ends.pop(conn, None)
        if conn in self._aborted:
            self._aborted.discard(conn)
            return True
        return False

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._ends:
            now = loop.time()
            for conn, end in list(self._ends.items()):
                if end <= now and _abort(conn):
                    del self._ends[conn]
                    self._aborted.add(conn)
            if self._ends:
                earliest = min(self._ends.values())
                await asyncio.sleep(min(self._LONGEST_NAP, max(self._SHORTEST_NAP, earliest - now)))

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


async def _exchange(conn: Any, command: bytes) -> Any:
    """Write one packed command on a connection of vermilion's own; read its reply.

    Straight to the connection's stream writer and reply parser: redis-py's
    send_packed_command / read_response wrap them in health checks, timeouts
    and notification handling that vermilion's own clients do not use (the
    call deadline bounds the call), at about a quarter of a bare round trip's
    client CPU. The public methods remain the fallback for a redis-py without
    these parts.
    """
    writer = getattr(conn, "_writer", None)
    parser = getattr(conn, "_parser", None)
    if writer is None or parser is None:
        await conn.send_packed_command(command)
        return await conn.read_response(disable_decoding=True)
    writer.write(command)
    await writer.drain()
    reply = await parser.read_response(disable_decoding=True)
    if isinstance(reply, redis_errors.ResponseError):
        raise reply
    return reply


def _abort(conn: Any) -> bool:
    """Close ``conn``'s socket at once; False while it has none (connecting)."""
    writer = getattr(conn, "_writer", None)
    if writer is None:
        # Still connecting: the connect timeout bounds that; look again later.
        return False
    writer.transport.abort()
    return True


class Channel:
    """One connection outside the pool, used for one caller's calls in sequence.

    It connects on first use and again after an error (redis-py connects a
    disconnected connection when a command is sent).
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def aclose(self) -> None:
        await self.connection.disconnect()


class Connection:
    """Script calls and the few plain commands vermilion needs, on one client."""

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
        self._idle: list[Any] = []
        self._made: set[Any] = set()
        self._checked = False
        # EVALSHA <sha> <numkeys> <keys...> of each (script, queue), packed once.
        self._heads: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._deadlines = _Deadlines()

    # -- transport ---------------------------------------------------------------

    async def _send_once(
        self, command: bytes, read_timeout: float | None = None, channel: Channel | None = None
    ) -> Any:
        """Send one packed command and read its reply, never re-sending.

        On ``channel``'s own connection if given, else on one from the pool. A
        connection error raised once the command may have left is marked with
        ``_vermilion_sent``, so that callers can tell "not sent" from "maybe ran".
        """
        if channel is not None:
            conn = channel.connection
        elif self._owns_client:
            conn = await self._take_idle()
        else:
            conn = await self.client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        limit = self.timeout if read_timeout is None else read_timeout + _BLOCKING_READ_GRACE
        sent = False
        if limit is not None:
            self._deadlines.start(conn, limit)
        try:
            try:
                if conn.is_connected and await _is_stale(conn):
                    await conn.disconnect()
                # Connect apart from the send: a failed connect proves the
                # command never left, so it is neither "maybe ran" nor worth
                # repeating at once.
                if not conn.is_connected:
                    await conn.connect()
                sent = True
                if self._owns_client:
                    reply = await _exchange(conn, command)
                else:
                    # A client the user passed keeps every setting of its own
                    # (socket timeout, health checks) through redis-py's methods.
                    await conn.send_packed_command(command)
                    if read_timeout is None:
                        reply = await conn.read_response(disable_decoding=True)
                    else:
                        # redis-py reports its own read timeout as a None reply,
                        # which BLPOP also uses for "nothing came"; so it is set
                        # beyond the deadline, which alone can fire.
                        assert limit is not None
                        reply = await conn.read_response(disable_decoding=True, timeout=limit + 60)
            except redis_errors.BusyLoadingError:
                # -LOADING: the server refused the command, which did not run.
                self._deadlines.stop(conn)
                await conn.disconnect()
                raise
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                error: BaseException = exc
                if self._deadlines.stop(conn):
                    error = TimeoutError(f"Redis sent no reply within {limit:g} s")
                if sent:
                    error._vermilion_sent = True  # type: ignore[attr-defined]
                await conn.disconnect()
                if error is exc:
                    raise
                raise error from exc
            except BaseException:
                # Cancelled between send and reply: the reply would be read by
                # the next user of this connection.
                self._deadlines.stop(conn)
                await conn.disconnect()
                raise
            if self._deadlines.stop(conn):
                # The reply came as the deadline aborted the connection: the
                # reply stands, the aborted connection must not be sent on.
                await conn.disconnect()
        finally:
            if channel is None:
                await self._release(conn)
        return reply

    async def _take_idle(self) -> Any:
        """The connection this client used last, or a new one."""
        if not self._idle:
            conn = self.client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            self._made.add(conn)
            return conn
        # Checked for staleness by _send_once, as every connection is.
        return self._idle.pop()

    async def _release(self, conn: Any) -> None:
        if not self._owns_client:
            await self.client.connection_pool.release(conn)
        elif len(self._idle) < _MAX_IDLE_CONNECTIONS:
            self._idle.append(conn)
        else:
            self._made.discard(conn)
            await conn.disconnect()

    async def _run(
        self,
        command: Sequence[Any] | bytes,
        *,
        replayable: bool,
        read_timeout: float | None = None,
        channel: Channel | None = None,
    ) -> Any:
        packed = command if isinstance(command, bytes) else pack_command(command)
        attempts = 2 if replayable else 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._send_once(packed, read_timeout, channel)
            except (redis_errors.RedisError, OSError) as exc:
                # Set by _send_once on connection failures only.
                sent = getattr(exc, "_vermilion_sent", False)
                if sent and not replayable:
                    raise OutcomeUnknownError(
                        f"connection to Redis failed after the command was sent; it may have run: {exc}"
                    ) from exc
                if not sent or attempt == attempts:
                    raise _translated(exc) from exc
                logger.debug("retrying a replay-safe Redis call after a connection error")
        raise AssertionError("unreachable")

    async def _ensure_checked(self) -> None:
        # Once per connection pool: queues that share a client share the check.
        if self._checked or self.client.connection_pool in _CHECKED_POOLS:
            return
        await self.check_server()

    async def check_server(self) -> None:
        """Refuse servers the scripts cannot run on; warn once if eviction is possible."""
        try:
            # One INFO for the version and the eviction policy; CONFIG GET would
            # need a permission that least-privilege users rarely have.
            info = await self._run(("INFO", "server", "memory"), replayable=True)
        except ScriptError as exc:
            if not isinstance(exc.__cause__, redis_errors.NoPermissionError):
                raise
            # A least-privilege user may not run INFO: then the version cannot be
            # checked here (a server too old still fails, on the first script).
            logger.debug("INFO is not permitted; skipping the server version check")
            self._checked = True
            _CHECKED_POOLS.add(self.client.connection_pool)
            return
        text = _text(info)
        fields = dict(
            line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#")
        )
        version_text = fields.get("redis_version", "0")
        version = tuple(int(part) for part in version_text.split(".")[:3] if part.isdigit())
        if version < MIN_SERVER_VERSION:
            wanted = ".".join(map(str, MIN_SERVER_VERSION))
            raise ConfigurationError(
                f"vermilion needs Redis {wanted} or newer (or Valkey 7.2+); the server runs {version_text}"
            )
        self._warn_if_evicting(fields)
        self._checked = True
        _CHECKED_POOLS.add(self.client.connection_pool)

    def _warn_if_evicting(self, server_fields: dict[str, str]) -> None:
        policy = server_fields.get("maxmemory_policy", "noeviction").strip()
        server = server_fields.get("run_id", "?").strip()
        if policy != "noeviction" and server not in _EVICTING_POLICIES_WARNED:
            _EVICTING_POLICIES_WARNED.add(server)
            logger.warning(
                "Redis maxmemory-policy is %r: when memory is full Redis may evict queue keys and"
                " silently lose messages; set it to 'noeviction'",
                policy,
            )

    async def call_script(
        self,
        script: Script,
        keys: QueueKeys,
        argv: Sequence[Any],
        *,
        replayable: bool,
        channel: Channel | None = None,
    ) -> Any:
        body = b"".join([_bulk(arg) for arg in argv])
        return await self._call_packed(script, keys, len(argv), body, replayable=replayable, channel=channel)

    async def _call_packed(
        self,
        script: Script,
        keys: QueueKeys,
        argc: int,
        body: bytes,
        *,
        replayable: bool,
        channel: Channel | None = None,
    ) -> Any:
        """Call ``script`` with ``argc`` arguments already packed as RESP bulk strings."""
        await self._ensure_checked()
        count, head = self._head(script, keys)
        try:
            return await self._run(
                b"*%d\r\n%b%b" % (count + argc, head, body), replayable=replayable, channel=channel
            )
        except ScriptError as exc:
            if not isinstance(exc.__cause__, redis_errors.NoScriptError):
                raise _naming_a_denied_command(exc, script) from exc.__cause__
        # NOSCRIPT proves the script did not run: sending its source is safe.
        eval_ = b"EVAL_RO" if script.read_only else b"EVAL"
        keys_part = b"".join([_bulk(key) for key in keys.keys])
        eval_head = b"".join([_bulk(eval_), _bulk(script.source), _bulk(len(keys.keys)), keys_part])
        try:
            return await self._run(
                b"*%d\r\n%b%b" % (3 + len(keys.keys) + argc, eval_head, body),
                replayable=replayable,
                channel=channel,
            )
        except ScriptError as exc:
            raise _naming_a_denied_command(exc, script) from exc.__cause__

    def _head(self, script: Script, keys: QueueKeys) -> tuple[int, bytes]:
        cache_key = (script.name, keys.name)
        head = self._heads.get(cache_key)
        if head is None:
            evalsha = b"EVALSHA_RO" if script.read_only else b"EVALSHA"
            args: list[bytes | str | int] = [evalsha, script.sha, len(keys.keys), *keys.keys]
            head = (len(args), b"".join([_bulk(arg) for arg in args]))
            self._heads[cache_key] = head
        return head

    # -- operations --------------------------------------------------------------

    async def enqueue(
        self, keys: QueueKeys, options: EnqueueOptions, messages: Sequence[tuple[str, bytes]]
    ) -> list[str]:
        """Enqueue ``(mid, payload)`` pairs with shared options, in one script call."""
        pairs = []
        for mid, payload in messages:
            mid_data = mid.encode()
            pairs.append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(mid_data), mid_data, len(payload), payload))
        body = options.packed_argv + b"".join(pairs)
        reply = await self._call_packed(
            SCRIPTS["enqueue"], keys, len(_ENQUEUE_OPTION_FIELDS) + 2 * len(messages), body, replayable=False
        )
        if len(reply) != len(messages):
            raise ProtocolError(f"enqueue answered {len(reply)} results for {len(messages)} messages")
        return [_text(item) for item in reply]

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
            await channel.connection.disconnect()
        return parsed

    async def ack(
        self, keys: QueueKeys, outcomes: Sequence[OutcomeRequest], max_failed: int
    ) -> list[bool | None]:
        """Record outcomes; per outcome True applied, False stale, None unknown.

        None: the reply of the first send was lost and the re-send found the
        lease gone, which that first send may have done itself.
        """
        argv: list[Any] = [max_failed, len(outcomes)]
        reasons: list[str] = []
        for outcome in outcomes:
            code = f"{outcome.kind}{outcome.backoff_ms}" if outcome.backoff_ms else outcome.kind
            argv += (_mid_arg(outcome.mid), outcome.token, code)
            if outcome.kind == "f":
                reasons.append(outcome.reason)
        args = [*argv, *reasons]
        try:
            reply = await self.call_script(SCRIPTS["ack"], keys, args, replayable=False)
        except OutcomeUnknownError:
            # The fence makes re-sending safe, but an outcome the first send
            # applied now reads as stale: a 0 from the re-send proves nothing.
            reply = await self.call_script(SCRIPTS["ack"], keys, args, replayable=False)
            return [True if _int(item) else None for item in reply]
        return [bool(_int(item)) for item in reply]

    async def extend(self, keys: QueueKeys, leases: Sequence[tuple[str, int, int]]) -> list[bool]:
        argv = [arg for mid, token, lock_ms in leases for arg in (_mid_arg(mid), token, lock_ms)]
        reply = await self.call_script(SCRIPTS["extend"], keys, argv, replayable=True)
        return [bool(_int(item)) for item in reply]

    async def message_status(self, keys: QueueKeys, mid: str) -> str | None:
        reply = await self.call_script(SCRIPTS["status"], keys, (mid,), replayable=True)
        return _text(reply[0]) if reply else None

    async def counts(self, keys: QueueKeys) -> Counts:
        reply = await self.call_script(SCRIPTS["counts"], keys, (), replayable=True)
        nqueued, nlocked, nbackoff, ndone, nfailed, lag_ms = (_int(item) for item in reply)
        return Counts(nqueued, nlocked, nbackoff, ndone, nfailed, lag_ms)

    async def content(self, keys: QueueKeys) -> tuple[int, list[StoredMessage]]:
        reply = await self.call_script(SCRIPTS["content"], keys, (), replayable=True)
        now_ms = _int(reply[0])
        entries = []
        for i in range(1, len(reply), 8):
            mid, status, attempts, enqueued, backoff_end, has_payload, payload, error = reply[i : i + 8]
            entries.append(
                StoredMessage(
                    mid=_text(mid),
                    status=_text(status),
                    attempts=_int(attempts),
                    enqueued_ms=None if _int(enqueued) < 0 else _int(enqueued),
                    backoff_end_ms=None if _int(backoff_end) < 0 else _int(backoff_end),
                    payload=payload if _int(has_payload) else None,
                    error=_text(error) if status == b"failed" else None,
                )
            )
        return now_ms, entries

    async def clear(self, keys: QueueKeys) -> int:
        return _int(await self.call_script(SCRIPTS["clear"], keys, (), replayable=True))

    async def wait_for_wakeup(self, keys: QueueKeys, timeout: float, channel: Channel | None = None) -> bool:
        """Block until an enqueue pushes a wake-up token, or ``timeout`` seconds pass.

        Returns whether a token arrived. Needs no script: BLPOP is atomic.
        """
        await self._ensure_checked()
        # BLPOP takes seconds with millisecond resolution; 0 would block forever.
        timeout = max(0.001, math.ceil(timeout * 1000) / 1000)
        reply = await self._run(
            (b"BLPOP", keys.key("notify"), f"{timeout:.3f}"),
            replayable=True,
            read_timeout=timeout,
            channel=channel,
        )
        return reply is not None

    def open_channel(self) -> Channel:
        """A connection of its own, outside the pool, for one caller's calls in sequence.

        The worker's poll loop uses one: its dequeues and its blocking waits
        then cost no pool checkout each, and an idle worker's BLPOP never holds
        a connection that producers sharing the pool are waiting for.
        """
        return Channel(self.client.connection_pool.make_connection())  # type: ignore[no-untyped-call]

    async def scan_queue_names(self, pattern: str) -> AsyncIterator[str]:
        """Yield the names of queues that have any key, matching a glob ``pattern``."""
        await self._ensure_checked()
        prefix = f"{KEY_PREFIX}:{{".encode()
        cursor: int = 0
        seen: set[bytes] = set()
        while True:
            reply = await self._run(
                (b"SCAN", cursor, b"MATCH", f"{KEY_PREFIX}:{{{pattern}}}:*", b"COUNT", 1000),
                replayable=True,
            )
            cursor = _int(reply[0])
            for key in reply[1]:
                if key.endswith(b"}:seq"):  # kept by clear(): not a sign of a live queue
                    continue
                raw = key[len(prefix) :].partition(b"}")[0]
                if raw not in seen:
                    seen.add(raw)
                    name = _queue_name_in(key, raw)
                    if name is not None:
                        yield name
            if cursor == 0:
                return

    async def aclose(self) -> None:
        self._deadlines.cancel()
        made, self._made, self._idle = self._made, set(), []
        with translate_errors():
            for conn in made:
                await conn.disconnect()
            await self.client.aclose()


def _queue_name_in(key: bytes, raw: bytes) -> str | None:
    """The queue name ``raw`` found in ``key``, or None, with a warning, if it is none.

    Keys that look like vermilion's but were not written by it (by hand, by
    another tool) must not stop the listing of every real queue.
    """
    try:
        return check_queue_name(raw.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        reason = "it is not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
        logger.warning("skipped Redis key %r, not of a vermilion queue: %s", key, reason)
        return None


def _bulk(arg: bytes | str | int) -> bytes:
    """One argument as a RESP bulk string."""
    if isinstance(arg, bytes):
        data = arg
    elif isinstance(arg, str):
        data = arg.encode()
    elif isinstance(arg, int):  # bool is refused by the type checker upstream
        data = b"%d" % arg
    else:
        raise TypeError(f"cannot send a {type(arg).__name__} to Redis")
    return b"$%d\r\n%b\r\n" % (len(data), data)


DEFAULT_ENQUEUE_OPTIONS = EnqueueOptions()
_DEFAULT_PACKED_ARGV = b"".join([_bulk(arg) for arg in DEFAULT_ENQUEUE_OPTIONS.argv()])


def pack_command(args: Sequence[bytes | str | int]) -> bytes:
    """One command in RESP, the way Redis reads it: an array of bulk strings.

    redis-py's own packer is written for any argument type; a batch of a
    thousand messages is two thousand arguments, and this is several times
    faster on the bytes, str and int that vermilion sends.
    """
    return b"*%d\r\n%b" % (len(args), b"".join([_bulk(arg) for arg in args]))


def parse_dequeue(reply: Sequence[Any]) -> DequeueReply:
    if len(reply) < 5 or (len(reply) - 5) % 7:
        raise ProtocolError(f"dequeue answered {len(reply)} items; expected 5 + 7 per message")
    now_ms, ready, next_due, reclaimed, held_back = (_int(item) for item in reply[:5])
    messages = [
        Leased(
            mid=_mid_text(reply[i]),
            payload=reply[i + 1],
            attempt=_int(reply[i + 2]),
            lock_ms=_int(reply[i + 3]),
            enqueued_ms=_int(reply[i + 4]),
            token=_int(reply[i + 5]),
            suspect=bool(_int(reply[i + 6])),
        )
        for i in range(5, len(reply), 7)
    ]
    return DequeueReply(now_ms, ready, None if next_due < 0 else next_due, reclaimed, messages, held_back)
