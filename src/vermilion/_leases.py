"""The worker's heartbeat: every lease it holds, renewed well before it lapses.

Owns the leases of the messages this worker's handlers hold, and the loop
that renews those that are due in one ``extend`` call. A lease Redis no
longer knows is dropped at once and never asked for again. It starts no
handler and sends no outcome; the worker adds and drops leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ._exceptions import VermilionError
from ._keys import QueueKeys
from ._logs import logger
from ._policies import error_backoff
from ._protocol import ScriptClient
from ._shard_calls import ShardedCalls
from ._stats import Tally
from ._wire import LeaseKey

__all__ = ["LeaseKeeper"]


@dataclass(slots=True)
class _Lease:
    mid: str
    token: int
    lock_ms: int
    renewed_at: float  # time.monotonic() of the hand-out or the last renewal
    task: asyncio.Task[None] | None = None  # the handler holding it

    @property
    def renew_at(self) -> float:
        # A third of the lease: two renewals can fail before it lapses.
        return self.renewed_at + self.lock_ms / 3000


@dataclass(eq=False)
class LeaseKeeper:
    """The leases a worker holds; :meth:`run` is its heartbeat loop."""

    client: ScriptClient | ShardedCalls
    keys: QueueKeys
    default_lock_ms: int
    tally: Tally
    # Whether an ack of the lease is in flight (and may end it itself).
    acking: Callable[[LeaseKey], bool]
    _leases: dict[LeaseKey, _Lease] = field(default_factory=dict, init=False)
    _target: float = field(default=0.0, init=False)  # when the heartbeat wakes next (monotonic)

    def __post_init__(self) -> None:
        self.new_events()

    def new_events(self) -> None:
        """Events bound to the running event loop (made again by every start)."""
        self._added = asyncio.Event()

    def hold(self, mid: str, token: int, lock_ms: int, task: asyncio.Task[None]) -> None:
        lease = _Lease(mid, token, lock_ms, time.monotonic(), task)
        self._leases[(mid, token)] = lease
        if lease.renew_at < self._target:
            self._added.set()

    def drop(self, key: LeaseKey) -> None:
        self._leases.pop(key, None)

    def drop_held_by(self, task: asyncio.Task[None]) -> None:
        for key, lease in list(self._leases.items()):
            if lease.task is task:
                del self._leases[key]

    def clear(self) -> None:
        self._leases.clear()

    async def run(self) -> None:
        errors = 0
        while True:
            target = min((lease.renew_at for lease in self._leases.values()), default=None)
            timeout = self.default_lock_ms / 3000 if target is None else max(0.0, target - time.monotonic())
            self._target = time.monotonic() + timeout
            self._added.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                # A new lease that needs renewing sooner than the target wakes this.
                await asyncio.wait_for(self._added.wait(), timeout)
                continue
            if await self._renew_due_leases():
                errors = 0
                continue
            errors += 1
            # Within a third of the lease, so that a second try comes before it lapses.
            await asyncio.sleep(min(error_backoff(errors, 0.05), self.default_lock_ms / 3000))

    async def _renew_due_leases(self) -> bool:
        """Renew the leases that are due; False if Redis could not be asked."""
        now = time.monotonic()
        # Renew every lease within half a period of its time, so that leases
        # handed out together are renewed together in one call.
        leases = [lease for lease in self._leases.values() if lease.renew_at - lease.lock_ms / 6000 <= now]
        if not leases:
            return True
        try:
            renewed = await self.client.extend(
                self.keys, [(lease.mid, lease.token, lease.lock_ms) for lease in leases]
            )
        except VermilionError as exc:
            self.tally.add("heartbeat/error")
            logger.warning("renewing %d leases of queue %r failed: %s", len(leases), self.keys.name, exc)
            return False
        self.tally.add("heartbeat/extend")
        if any(renewed):
            self.tally.add("lease/renewed", sum(renewed))
        for lease, ok in zip(leases, renewed, strict=True):
            key = (lease.mid, lease.token)
            if ok:
                lease.renewed_at = now
                continue
            # Gone from Redis: never asked for again (asking again at once, while
            # an ack of it waits to be retried, was a busy loop).
            if self._leases.pop(key, None) is not None and not self.acking(key):
                self.tally.add("lease/lost")
                logger.warning(
                    "lost the lease of message %r of queue %r: it lapsed and was reclaimed",
                    lease.mid,
                    self.keys.name,
                )
        return True
