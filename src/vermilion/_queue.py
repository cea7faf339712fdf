"""``Queue``: the producer's handle on one named queue."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from datetime import timedelta
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis

from ._exceptions import OutcomeUnknownError, ProtocolError
from ._failures import FailureHistory
from ._keys import QueueKeys
from ._logs import logger
from ._messages import EnqueueResult, MessageInfo, MessageStatus, QueueStatus
from ._presence import WorkerPresence
from ._presence_calls import live_workers
from ._protocol import DEFAULT_MAX_FAILED_BYTES, ScriptClient
from ._redis_internals import connection_settings, describe_client
from ._serialization import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MsgpackSerializer,
    Serializer,
    decode_or_raw,
    encode_content,
    encode_contents,
)
from ._validation import batch, check_mid, check_queue_name, non_negative_int, positive_int, seconds, to_ms
from ._wire import DEFAULT_ENQUEUE_OPTIONS, EnqueueOptions

__all__ = ["DEFAULT_URL", "Queue", "clear_queues", "queue_names"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_FAILURE_HISTORY = 10_000
MAX_BATCH = 10_000
_CONNECT_TIMEOUT = 5.0
# Bounds a call whose connection went silent (or the URL's shorter socket_timeout);
# blocking reads set their own.
_CALL_TIMEOUT = 30.0
_REFUSALS = {"already-queued", "locked", "backoff"}
_MID_RANDOM_BYTES = 9  # 72 bits, 12 base64url characters


def random_mids(count: int) -> list[str]:
    """``count`` random mids of 12 URL-safe characters (72 random bits each).

    Short on purpose: Redis keeps a mid in each of two places per queued
    message, and a mid of up to 12 characters fits its smallest string
    allocation (a UUID string took 36). One read of the OS's random source
    serves the whole batch.
    """
    text = base64.urlsafe_b64encode(os.urandom(_MID_RANDOM_BYTES * count)).decode()
    return [text[i : i + 12] for i in range(0, 12 * count, 12)]


class Queue(FailureHistory):
    """One named queue in Redis, for producers (and the worker that serves it).

    Give either ``url`` (the queue then owns its client and closes it in
    :meth:`aclose`) or ``redis``, a ``redis.asyncio.Redis`` client you own and
    close. With neither, ``$VERMILION_URL`` or ``redis://127.0.0.1:6379/0``.

    Args:
        name: 1-200 characters from ``A-Z a-z 0-9 _ . : -``.
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL.
        redis: a ``redis.asyncio.Redis`` client (decoded or not).
        serializer: how content becomes bytes; msgpack by default.
        max_payload_bytes: largest serialized content accepted, checked
            before anything is sent, and again by workers before decoding.
        failure_history: how many failed messages the failure history keeps.
        failure_history_bytes: how many bytes of failed messages (payloads and
            reasons) it keeps; 64 MiB by default. Beyond either bound the
            oldest are dropped (and counted in ``status().nfailed_dropped``).
    """

    def __init__(
        self,
        name: str,
        url: str | None = None,
        *,
        redis: aioredis.Redis | None = None,
        serializer: Serializer | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        failure_history: int = DEFAULT_FAILURE_HISTORY,
        failure_history_bytes: int = DEFAULT_MAX_FAILED_BYTES,
    ) -> None:
        self._name = check_queue_name(name)
        if url is not None and redis is not None:
            raise ValueError("give either url or redis, not both")
        if serializer is not None and not isinstance(serializer, Serializer):
            raise TypeError("serializer must have dumps(content) -> bytes and loads(bytes)")
        self.serializer: Serializer = serializer or MsgpackSerializer()
        self.max_payload_bytes: int = positive_int(max_payload_bytes, "max_payload_bytes")
        self.failure_history: int = non_negative_int(failure_history, "failure_history")
        self.failure_history_bytes: int = non_negative_int(failure_history_bytes, "failure_history_bytes")
        if redis is None:
            if url is None:
                url = os.environ.get("VERMILION_URL") or DEFAULT_URL
            elif not isinstance(url, str):
                raise TypeError(f"url must be a str, not {type(url).__name__}")
            # socket_timeout=None (redis-py would default to 5 s): the transport
            # bounds each call itself, more cheaply than a timeout per write.
            client = aioredis.Redis.from_url(
                url, socket_connect_timeout=_CONNECT_TIMEOUT, socket_timeout=None
            )
            self._owns_client = True
        else:
            if not isinstance(redis, aioredis.Redis):
                raise TypeError(f"redis must be a redis.asyncio.Redis client, not {type(redis).__name__}")
            client = redis
            self._owns_client = False
        self._keys = QueueKeys.for_queue(self._name)
        self._connection = ScriptClient(
            client,
            timeout=_call_timeout(client) if self._owns_client else None,
            owns_client=self._owns_client,
        )
        # Running workers on this queue, so that aclose() can warn about them.
        self._workers: set[Any] = set()

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._name

    @property
    def redis(self) -> aioredis.Redis:
        """The ``redis.asyncio.Redis`` client this queue uses."""
        return self._connection.client

    @property
    def url(self) -> str:
        """Where the queue's client connects, as a URL with the password masked."""
        return describe_client(self._connection.client)

    def __repr__(self) -> str:
        return f"<Queue {self._name!r} at {self.url}>"

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the Redis client if this queue created it (from ``url``).

        Stop the queue's workers first: a worker still running would open new
        connections that nothing closes (a warning is logged if one is).
        """
        if self._workers:
            logger.warning(
                "queue %r closed while %d worker(s) still run on it: stop them first",
                self._name,
                len(self._workers),
            )
        if self._owns_client:
            await self._connection.aclose()

    # -- producing ---------------------------------------------------------------

    @staticmethod
    def _options(
        *,
        delay: float | timedelta,
        lock_timeout: float | timedelta | None,
        can_update: bool,
        can_requeue: bool,
        reset_delay: bool,
    ) -> EnqueueOptions:
        if (
            delay.__class__ is float
            and delay == 0.0
            and lock_timeout is None
            and can_update is False
            and can_requeue is False
            and reset_delay is False
        ):
            return DEFAULT_ENQUEUE_OPTIONS  # the common case, without the checks below
        for flag, value in (
            ("can_update", can_update),
            ("can_requeue", can_requeue),
            ("reset_delay", reset_delay),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be a bool, not {type(value).__name__}")
        return EnqueueOptions(
            delay_ms=to_ms(seconds(delay, "delay")),
            lock_ms=None
            if lock_timeout is None
            else to_ms(seconds(lock_timeout, "lock_timeout", allow_zero=False)),
            can_update=can_update,
            can_requeue=can_requeue,
            reset_delay=reset_delay,
        )

    def _message(self, content: Any, mid: str | None, argument: str, mid_argument: str) -> tuple[str, bytes]:
        checked = random_mids(1)[0] if mid is None else check_mid(mid, mid_argument)
        return checked, encode_content(self.serializer, content, self.max_payload_bytes, argument)

    async def enqueue(
        self,
        content: Any,
        *,
        mid: str | None = None,
        delay: float | timedelta = 0.0,
        lock_timeout: float | timedelta | None = None,
        can_update: bool = False,
        can_requeue: bool = False,
        reset_delay: bool = False,
    ) -> EnqueueResult:
        """Add a message, or update / requeue / refuse it if its ``mid`` is busy.

        Args:
            content: anything the serializer accepts.
            mid: message id for de-duplication; a random 12-character id by default.
            delay: seconds before the message may be handled.
            lock_timeout: this message's lease in seconds (the worker's by default).
            can_update: if the mid is still queued, replace its content.
            can_requeue: if the mid is being handled, or done inside its de-dup
                window, handle the new content again once that ends.
            reset_delay: if the mid is still queued, restart its delay from now
                (debouncing).

        Returns:
            ``EnqueueResult``: ``ok`` with ``action`` ``"added"``/``"updated"``, or
            not ``ok`` with ``error`` ``"already-queued"``/``"locked"``/``"backoff"``.

        Raises:
            TypeError, ValueError, SerializationError: bad arguments; nothing was sent.
            OutcomeUnknownError: the connection failed after sending; check
                ``message_status(mid)``.
        """
        options = self._options(
            delay=delay,
            lock_timeout=lock_timeout,
            can_update=can_update,
            can_requeue=can_requeue,
            reset_delay=reset_delay,
        )
        message = self._message(content, mid, "content", "mid")
        (reply,) = await self._send(options, [message])
        return _result(message[0], reply)

    async def enqueue_many(
        self,
        contents: Iterable[Any],
        *,
        mids: Iterable[str | None] | None = None,
        delay: float | timedelta = 0.0,
        lock_timeout: float | timedelta | None = None,
        can_update: bool = False,
        can_requeue: bool = False,
        reset_delay: bool = False,
    ) -> list[EnqueueResult]:
        """Enqueue many messages in one round trip and one atomic script call.

        ``mids``, if given, holds one mid (or ``None`` for a random one) per
        content. The other options apply to every message, as in :meth:`enqueue`.
        Every message is checked before anything is sent. At most 10,000 per call.
        """
        items = batch(contents, "contents")
        given: list[str | None] | None = None if mids is None else batch(mids, "mids")
        if given is not None and len(given) != len(items):
            raise ValueError(f"mids has {len(given)} entries for {len(items)} contents")
        if len(items) > MAX_BATCH:
            raise ValueError(f"enqueue_many takes at most {MAX_BATCH} messages per call, got {len(items)}")
        if not items:
            return []
        options = self._options(
            delay=delay,
            lock_timeout=lock_timeout,
            can_update=can_update,
            can_requeue=can_requeue,
            reset_delay=reset_delay,
        )
        if given is None:
            mid_list = random_mids(len(items))
        else:
            fresh = iter(random_mids(given.count(None)))
            mid_list = [
                next(fresh) if mid is None else check_mid(mid, f"mids[{index}]")
                for index, mid in enumerate(given)
            ]
        payloads = encode_contents(self.serializer, items, self.max_payload_bytes, "contents")
        messages = list(zip(mid_list, payloads, strict=True))
        replies = await self._send(options, messages)
        return [_result(mid, reply) for (mid, _), reply in zip(messages, replies, strict=True)]

    async def _send(self, options: EnqueueOptions, messages: list[tuple[str, bytes]]) -> list[str]:
        try:
            return await self._connection.enqueue(self._keys, options, messages)
        except OutcomeUnknownError as exc:
            # Random mids were made here: the caller needs them to check.
            exc.mids = tuple(mid for mid, _ in messages)
            raise

    # -- inspecting --------------------------------------------------------------

    async def message_status(self, mid: str) -> MessageStatus | None:
        """The status of one message, or ``None`` if the queue does not know its mid."""
        status = await self._connection.message_status(self._keys, check_mid(mid))
        return None if status is None else MessageStatus(status)

    async def status(self) -> QueueStatus:
        """Counts of the queue's messages and its lag, read atomically in O(log n)."""
        counts = await self._connection.counts(self._keys)
        live = counts.nqueued + counts.nlocked + counts.nbackoff
        return QueueStatus(
            nqueued=counts.nqueued,
            nlocked=counts.nlocked,
            nbackoff=counts.nbackoff,
            ntotal=live + counts.ndone,
            ndone=counts.ndone,
            nfailed=counts.nfailed,
            lag=counts.lag_ms / 1000,
            nfailed_dropped=counts.nfailed_dropped,
        )

    async def size(self) -> int:
        """How many messages are ready to be handled now (``status().nqueued``)."""
        return (await self.status()).nqueued

    async def content(self) -> list[MessageInfo]:
        """Every message with its status. O(n) and atomic: for debugging only.

        Content that cannot be decoded is shown as its raw bytes.
        """
        now_ms, stored = await self._connection.content(self._keys)
        infos = []
        for entry in stored:
            content = decode_or_raw(self.serializer, entry.payload, self.max_payload_bytes)
            infos.append(
                MessageInfo(
                    mid=entry.mid,
                    status=MessageStatus(entry.status),
                    attempts=entry.attempts,
                    age=None if entry.enqueued_ms is None else max(0, now_ms - entry.enqueued_ms) / 1000,
                    backoff=None
                    if entry.backoff_end_ms is None
                    else max(0, entry.backoff_end_ms - now_ms) / 1000,
                    content=content,
                    error=entry.error,
                )
            )
        return infos

    async def workers(self) -> list[WorkerPresence]:
        """The live workers of this queue, as they last announced themselves, oldest first.

        A worker announces itself when it starts and every ``presence_interval``
        (30 s by default); a crashed worker is listed until its record lapses.
        """
        return await live_workers(self._connection, self._name)

    async def clear(self) -> int:
        """Delete every message and all state of this queue.

        Returns how many live messages were removed. Only the queue's lease
        counter and protocol version stay (``vermilion:{<name>}:v2:meta``), so
        that a worker still holding a lease from before can never complete a
        message from after, and the presence of its live workers.
        """
        return await self._connection.clear(self._keys)

    # -- for the worker ------------------------------------------------------------

    @property
    def _protocol(self) -> tuple[ScriptClient, QueueKeys]:
        return self._connection, self._keys


def _call_timeout(client: aioredis.Redis) -> float:
    """How long a call of a client made from a URL may take: 30 s, or a shorter
    ``socket_timeout`` given in the URL (which the calls then honour as a whole)."""
    configured = connection_settings(client).get("socket_timeout")
    return min(_CALL_TIMEOUT, float(configured)) if configured else _CALL_TIMEOUT


def _result(mid: str, reply: str) -> EnqueueResult:
    # Positional arguments: a frozen dataclass takes keywords markedly slower,
    # and enqueue_many builds one result per message.
    if reply in ("added", "updated"):
        return EnqueueResult(True, mid, reply)  # type: ignore[arg-type]
    if reply in _REFUSALS:
        return EnqueueResult(False, mid, None, reply)  # type: ignore[arg-type]
    raise ProtocolError(f"enqueue answered {reply!r}")


async def queue_names(redis: aioredis.Redis, pattern: str = "*") -> list[str]:
    """The sorted names of the queues that have any key in Redis, matching ``pattern``.

    ``pattern`` is a Redis glob over queue names (``*``, ``?``, ``[abc]``).
    A key that looks like vermilion's but holds no valid queue name (written by
    hand or by another tool, or not UTF-8) is skipped with a warning.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    if not pattern or "{" in pattern or "}" in pattern:
        raise ValueError("pattern must be a non-empty glob without braces")
    connection = ScriptClient(redis)
    return sorted([name async for name in connection.scan_queue_names(pattern)])


async def clear_queues(redis: aioredis.Redis, *names: str) -> int:
    """Delete every key of the named queues. Returns how many live messages were removed.

    Every name is checked before anything is deleted; names are exact, never patterns.
    """
    checked = [check_queue_name(name) for name in names]
    connection = ScriptClient(redis)
    removed = 0
    for name in checked:
        removed += await connection.clear(QueueKeys.for_queue(name))
    return removed
