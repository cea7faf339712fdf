"""The worker's acknowledger: handlers' outcomes sent to Redis in fenced batches.

Owns the outcomes waiting for their ``ack`` call, those in flight, and those
whose ack may have applied though its reply was lost. Outcomes of handlers
that finished together go in one call; while Redis is unreachable the batch
is kept and retried with back-off (the fencing token makes a re-send safe).
It does not lease, renew or run handlers: it tells the worker when outcomes
are settled, and the worker lets go of their leases and slots.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ._exceptions import OutcomeUnknownError, VermilionError
from ._keys import QueueKeys
from ._logs import logger
from ._policies import error_backoff
from ._protocol import ScriptClient
from ._shard_calls import ShardedCalls
from ._stats import Tally
from ._wire import LeaseKey, OutcomeRequest

__all__ = ["Acknowledger"]

_ACK_BATCH = 500


@dataclass(eq=False)
class Acknowledger:
    """Sends outcomes in batches; :meth:`run` is the worker's ack loop."""

    client: ScriptClient | ShardedCalls
    keys: QueueKeys
    # The failure history's bounds, by count and by bytes, read at each ack.
    failure_history: Callable[[], tuple[int, int]]
    tally: Tally
    # Called after each batch Redis answered, applied or stale alike.
    on_settled: Callable[[list[OutcomeRequest]], None]
    pending: list[OutcomeRequest] = field(default_factory=list, init=False)
    in_flight: set[LeaseKey] = field(default_factory=set, init=False)
    # Outcomes whose ack may have applied though its reply was lost.
    _uncertain: set[LeaseKey] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.new_events()

    def new_events(self) -> None:
        """Events bound to the running event loop (made again by every start)."""
        self._wanted = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    def submit(self, request: OutcomeRequest) -> None:
        self.pending.append(request)
        self.idle.clear()
        self._wanted.set()

    def awaiting(self) -> int:
        """Outcomes known but not yet acknowledged: their leases are still held."""
        return len(self.pending) + len(self.in_flight)

    async def flush(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every submitted outcome to be acknowledged."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.idle.wait(), timeout)

    def give_up(self) -> int:
        """Forget what is still unacknowledged (the worker stops); returns how many."""
        left = len(self.pending)
        self.pending.clear()
        self._uncertain.clear()
        return left

    async def run(self) -> None:
        errors = 0
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while self.pending:
                batch = self.pending[:_ACK_BATCH]
                del self.pending[:_ACK_BATCH]
                in_flight = {(request.mid, request.token) for request in batch}
                self.in_flight |= in_flight
                try:
                    applied = await self.client.ack(self.keys, batch, *self.failure_history())
                except VermilionError as exc:
                    # Fenced: re-sending can never apply an outcome twice.
                    self.pending[:0] = batch
                    if isinstance(exc, OutcomeUnknownError):
                        self._uncertain |= in_flight
                    errors += 1
                    delay = error_backoff(errors, 0.05)
                    self.tally.add("ack/error")
                    logger.warning(
                        "acknowledging %d outcomes failed (%s); retrying in %.2f s", len(batch), exc, delay
                    )
                    await asyncio.sleep(delay)
                    continue
                finally:
                    self.in_flight -= in_flight
                errors = 0
                self._count_results(batch, applied)
                self.on_settled(batch)
            self.idle.set()

    def _count_results(self, batch: list[OutcomeRequest], applied: list[bool | None]) -> None:
        for request, ok in zip(batch, applied, strict=True):
            key = (request.mid, request.token)
            if key in self._uncertain:
                self._uncertain.discard(key)
                ok = ok or None
            if ok is None:
                # Re-sent after a lost reply: the first send may have applied it.
                self.tally.add("ack/unknown")
            elif not ok:
                self.tally.add("ack/stale")
                logger.warning(
                    "outcome of message %r of queue %r was not applied: its lease had lapsed and"
                    " was reclaimed (the message is or was handled again)",
                    request.mid,
                    self.keys.name,
                )
