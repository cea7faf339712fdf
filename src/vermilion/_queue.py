"""``Queue``: the producer's handle on one named queue."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis

from . import _tracing
from ._clients import DEFAULT_URL, is_client, queue_client
from ._enqueue_args import MAX_BATCH, enqueue_options, mids_for, random_mids, result_of
from ._exceptions import OutcomeUnknownError, ReplicationError
from ._failures import FailureHistory
from ._flow import FlowSettings
from ._inspection import QueueInspection
from ._keys import QueueKeys
from ._logs import logger
from ._messages import EnqueueResult
from ._protocol import DEFAULT_MAX_FAILED_BYTES, ScriptClient
from ._redis_internals import RedisClient, connection_settings, describe_client
from ._replication import DEFAULT_REPLICA_TIMEOUT, Replication, replication_for
from ._serialization import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MsgpackSerializer,
    Serializer,
    encode_content,
    encode_contents,
)
from ._shard_calls import enqueue_sharded
from ._shards import check_shards, shard_keys
from ._validation import batch, check_mid, check_queue_name, non_negative_int, positive_int
from ._wire import EnqueueOptions

__all__ = ["DEFAULT_URL", "Queue"]

DEFAULT_FAILURE_HISTORY = 10_000
# Bounds a call whose connection went silent (or the URL's shorter socket_timeout);
# blocking reads set their own.
_CALL_TIMEOUT = 30.0


class Queue(QueueInspection, FailureHistory, FlowSettings):
    """One named queue in Redis, for producers (and the worker that serves it).

    Give either ``url`` (the queue then owns its client and closes it in
    :meth:`aclose`) or a client you own and close (``redis``, or in place of
    ``url``). With neither, ``$VERMILION_URL`` or ``redis://127.0.0.1:6379/0``.

    Args:
        name: 1-200 characters from ``A-Z a-z 0-9 _ . : -``.
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL; a Redis Cluster's
            ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://``);
            Sentinel's ``redis+sentinel://host:port[,host:port...]/service``.
            A client in its place is taken as ``redis``.
        redis: a ``redis.asyncio.Redis`` client (decoded or not, Sentinel-managed
            or not) or a ``redis.asyncio.RedisCluster``.
        serializer: how content becomes bytes; msgpack by default.
        max_payload_bytes: largest serialized content accepted, checked
            before anything is sent, and again by workers before decoding.
        failure_history: how many failed messages the failure history keeps.
        failure_history_bytes: how many bytes of failed messages (payloads and
            reasons) it keeps; 64 MiB by default. Beyond either bound the
            oldest are dropped (and counted in ``status().nfailed_dropped``).
        replicas: enqueues (and the acks of this queue's workers) wait until
            this many replicas have the write (``WAIT``); 0 waits for none.
        replica_timeout: how long that wait may take, in seconds (at most 10).
        shards: spread the queue over this many hash tags (1 to 256), so over
            a cluster's masters; a mid always goes to the same shard. 1 (the
            default) is one queue in one slot. The count is kept in Redis:
            every client of the queue must give the same (see Scaling out).
    """

    def __init__(
        self,
        name: str,
        url: str | RedisClient | None = None,
        *,
        redis: RedisClient | None = None,
        serializer: Serializer | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        failure_history: int = DEFAULT_FAILURE_HISTORY,
        failure_history_bytes: int = DEFAULT_MAX_FAILED_BYTES,
        replicas: int = 0,
        replica_timeout: float | timedelta = DEFAULT_REPLICA_TIMEOUT,
        shards: int = 1,
    ) -> None:
        self._name = check_queue_name(name)
        if is_client(url) and redis is None:
            url, redis = None, url
        if url is not None and redis is not None:
            raise ValueError("give either url or redis, not both")
        if serializer is not None and not isinstance(serializer, Serializer):
            raise TypeError("serializer must have dumps(content) -> bytes and loads(bytes)")
        self.serializer: Serializer = serializer or MsgpackSerializer()
        self.max_payload_bytes: int = positive_int(max_payload_bytes, "max_payload_bytes")
        self.failure_history: int = non_negative_int(failure_history, "failure_history")
        self.failure_history_bytes: int = non_negative_int(failure_history_bytes, "failure_history_bytes")
        replication = replication_for(replicas, replica_timeout)
        self._shard_keys = shard_keys(self._name, check_shards(shards))
        client, self._owns_client = queue_client(url, redis)
        # The queue's own keys: its only shard, or where a sharded queue keeps its count.
        self._keys = self._shard_keys[0].base or self._shard_keys[0]
        self._connection = ScriptClient(
            client,
            timeout=_call_timeout(client) if self._owns_client else None,
            owns_client=self._owns_client,
        )
        self._connection.replication = replication
        # Running workers on this queue, so that aclose() can warn about them.
        self._workers: set[Any] = set()

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._name

    @property
    def shards(self) -> int:
        """How many shards the queue is spread over (1: unsharded)."""
        return len(self._shard_keys)

    @property
    def redis(self) -> aioredis.Redis:
        """The ``redis.asyncio.Redis`` client this queue uses (see :attr:`client` for a cluster).

        Raises:
            TypeError: the queue is on a Redis Cluster.
        """
        client = self._connection.client
        if isinstance(client, aioredis.RedisCluster):
            raise TypeError(f"queue {self._name!r} is on a Redis Cluster: use Queue.client")
        return client

    @property
    def client(self) -> RedisClient:
        """The client this queue uses: a ``redis.asyncio.Redis`` or a ``RedisCluster``."""
        return self._connection.client

    @property
    def url(self) -> str:
        """Where the queue's client connects, as a URL with the password masked."""
        return describe_client(self._connection.client)

    def __repr__(self) -> str:
        shards = f" shards={self.shards}" if self.shards > 1 else ""
        return f"<Queue {self._name!r}{shards} at {self.url}>"

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
        # Closes the client only if this queue made it (a cluster's node
        # connections are vermilion's own either way).
        await self._connection.aclose()

    # -- producing ---------------------------------------------------------------

    _options = staticmethod(enqueue_options)

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
        replicas: int | None = None,
        replica_timeout: float | timedelta | None = None,
        priority: int = 0,
        key: str | None = None,
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
            replicas: this call's own ``replicas`` (the queue's by default).
            replica_timeout: this call's own ``replica_timeout`` (the queue's by default).
            priority: 0 (the default) to 9; higher levels are handed out first,
                each level a 10-second head start over the one below (see
                Flow control). Applies to a new life; updates keep the priority.
            key: a concurrency key (e.g. ``"customer:42"``): with the queue's
                ``max_per_key``, at most that many messages of one key are
                leased at once. Applies to a new life, like ``priority``.

        Returns:
            ``EnqueueResult``: ``ok`` with ``action`` ``"added"``/``"updated"``, or
            not ``ok`` with ``error`` ``"already-queued"``/``"locked"``/``"backoff"``.

        Raises:
            TypeError, ValueError, SerializationError: bad arguments; nothing was sent.
            OutcomeUnknownError: the connection failed after sending; check
                ``message_status(mid)``.
            ReplicationError: stored on the master, but fewer than ``replicas``
                replicas confirmed it in time: it may be lost on failover.
        """
        options = self._options(
            delay=delay,
            lock_timeout=lock_timeout,
            can_update=can_update,
            can_requeue=can_requeue,
            reset_delay=reset_delay,
            priority=priority,
            key=key,
        )
        message = self._message(content, mid, "content", "mid")
        (reply,) = await self._send(
            options, [message], replication_for(replicas, replica_timeout, self._replicated)
        )
        return result_of(message[0], reply)

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
        replicas: int | None = None,
        replica_timeout: float | timedelta | None = None,
        priority: int = 0,
        key: str | None = None,
    ) -> list[EnqueueResult]:
        """Enqueue many messages in one round trip and one atomic script call.

        ``mids``, if given, holds one mid (or ``None`` for a random one) per
        content. The other options apply to every message, as in :meth:`enqueue`.
        Every message is checked before anything is sent. At most 10,000 per call.

        On a sharded queue: one call per shard, all at once, each atomic; an
        error of one shard's call raises, while the others' messages may be stored.
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
            priority=priority,
            key=key,
        )
        mid_list = mids_for(given, len(items))
        payloads = encode_contents(self.serializer, items, self.max_payload_bytes, "contents")
        messages = list(zip(mid_list, payloads, strict=True))
        replies = await self._send(
            options, messages, replication_for(replicas, replica_timeout, self._replicated), batch=True
        )
        return [result_of(mid, reply) for (mid, _), reply in zip(messages, replies, strict=True)]

    @property
    def _replicated(self) -> Replication | None:
        return self._connection.replication

    async def _send(
        self,
        options: EnqueueOptions,
        messages: list[tuple[str, bytes]],
        replication: Replication | None,
        *,
        batch: bool = False,
        traced: bool = False,
    ) -> list[str]:
        hook = _tracing.hook  # vermilion.otel: spans, and the trace context in each payload
        if hook is not None and not traced:
            return await hook.send(
                self, messages, batch, lambda sent: self._send(options, sent, replication, traced=True)
            )
        try:
            if len(self._shard_keys) == 1:
                return await self._connection.enqueue(self._keys, options, messages, replication)
            return await enqueue_sharded(self._connection, self._shard_keys, options, messages, replication)
        except ReplicationError as exc:
            exc.results = [
                result_of(mid, reply) for (mid, _), reply in zip(messages, exc.replies, strict=True)
            ]
            raise
        except OutcomeUnknownError as exc:
            # Random mids were made here: the caller needs them to check.
            exc.mids = tuple(mid for mid, _ in messages)
            raise

    # -- for the worker ------------------------------------------------------------

    @property
    def _protocol(self) -> tuple[ScriptClient, QueueKeys]:
        return self._connection, self._keys

    @property
    def _shards(self) -> tuple[QueueKeys, ...]:
        return self._shard_keys


def _call_timeout(client: RedisClient) -> float:
    """How long a call of a client made from a URL may take: 30 s, or a shorter
    ``socket_timeout`` given in the URL (which the calls then honour as a whole)."""
    configured = connection_settings(client).get("socket_timeout")
    return min(_CALL_TIMEOUT, float(configured)) if configured else _CALL_TIMEOUT
