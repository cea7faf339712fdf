"""Running one handler on one leased message, and turning what it did into an outcome.

Owns decoding the payload, the poison-message guard (``max_attempts``), the
``Message`` a handler sees, ``handler_timeout``, and the mapping of whatever a
handler returns or raises (down to ``BaseException``) to ``Success``, ``Retry``
or ``Failure``. It does not lease, acknowledge or count slots: the worker
runs it in a task per message and submits the outcome it returns.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from . import _tracing
from ._exceptions import SerializationError
from ._logs import logger
from ._messages import Failure, Message, Outcome, RateLimited, Retry, Success
from ._queue import Queue
from ._serialization import decode_payload
from ._stats import RollingStats, Tally
from ._validation import to_ms
from ._wire import Leased, OutcomeRequest

__all__ = ["ExceptionMapper", "Handler", "HandlerRunner", "exception_to_failure"]

Handler = Callable[[Message], Awaitable[Success | Retry | Failure | None]]
ExceptionMapper = Callable[[BaseException, Message], Outcome]

_REASON_MAX_CHARS = 1000
# A raw payload larger than this is let go as soon as it is decoded.
_LARGE_PAYLOAD_BYTES = 64 * 1024


def exception_to_failure(exc: BaseException, message: Message) -> Outcome:
    return Failure(reason=f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class _Undecodable:
    """Stands for the content of a message whose payload could not be decoded."""

    reason: str


@dataclass(eq=False, kw_only=True)
class HandlerRunner:
    """Turns a leased message into an outcome by running the user's handler on it."""

    queue: Queue
    handler: Handler
    handler_timeout: float | None
    max_attempts: int | None
    on_exception: ExceptionMapper
    tally: Tally
    queueing_ms: RollingStats = field(default_factory=RollingStats, init=False)
    handling_ms: RollingStats = field(default_factory=RollingStats, init=False)
    # Handler tasks the worker cancelled: a CancelledError in those is the
    # worker's, in any other the handler's own failure (Python 3.10 has no
    # Task.cancelling() to tell them apart).
    cancelled_by_worker: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    async def outcome(self, leased: Leased, now_ms: int) -> Outcome:
        """The message's outcome, traced if tracing is on (``vermilion.otel``)."""
        hook = _tracing.hook
        if hook is None:
            return await self._outcome(leased, now_ms)
        state = hook.begin(self.queue, leased)
        try:
            outcome = await self._outcome(leased, now_ms)
        except BaseException as exc:  # the worker stopping (cancelled), or the process ending
            hook.end(state, None, exc)
            raise
        hook.end(state, outcome, None)
        return outcome

    async def _outcome(self, leased: Leased, now_ms: int) -> Outcome:
        """The message's outcome; an error of vermilion's own (a bug, or stored
        data nobody foresaw) fails this message alone instead of leaving it to
        come back, and fail the same way, every lease."""
        try:
            content = self._decode(leased)
            if len(leased.payload) > _LARGE_PAYLOAD_BYTES:
                # Only the decoded content is kept while the handler runs: a payload
                # of many MiB would otherwise be held twice.
                leased = leased._replace(payload=b"")
            return await self._outcome_of(leased, content, now_ms)
        except Exception as exc:
            self.tally.add("message/internal-error")
            logger.exception(
                "internal error while handling message %r of queue %r; failing it",
                leased.mid,
                self.queue.name,
            )
            return Failure(reason=f"internal error in vermilion: {type(exc).__name__}: {exc}")

    def request_for(self, leased: Leased, outcome: Outcome) -> OutcomeRequest:
        """The ack script's request for an outcome, counted."""
        if isinstance(outcome, Success):
            self.tally.add("handler/success")
            request = OutcomeRequest(leased.mid, leased.token, "s", _backoff_ms(outcome.backoff))
        elif isinstance(outcome, RateLimited):
            self.tally.add("handler/rate-limited")
            request = OutcomeRequest(leased.mid, leased.token, "p", _backoff_ms(outcome.backoff))
        elif isinstance(outcome, Retry):
            self.tally.add("handler/retry")
            request = OutcomeRequest(leased.mid, leased.token, "r", _backoff_ms(outcome.backoff))
        else:
            self.tally.add("handler/error")
            request = OutcomeRequest(leased.mid, leased.token, "f", 0, outcome.reason[:_REASON_MAX_CHARS])
        if request.backoff_ms:
            self.tally.add("handler/backoff")
        return request

    def _decode(self, leased: Leased) -> Any:
        """The message's content, or an _Undecodable saying why there is none."""
        try:
            return decode_payload(self.queue.serializer, leased.payload, self.queue.max_payload_bytes)
        except SerializationError as exc:
            return _Undecodable(str(exc))

    def _refusal(self, leased: Leased, content: Any) -> Failure | None:
        """The failure of a message no handler may see: a mid or payload vermilion
        cannot read, or one handed out more often than ``max_attempts``."""
        name = self.queue.name
        if not _is_text(leased.mid):
            self.tally.add("message/bad-mid")
            logger.error(
                "message %r of queue %r has a mid that is not UTF-8 text (written by hand?); failing it",
                leased.mid,
                name,
            )
            return Failure(reason="mid is not UTF-8 text")
        if isinstance(content, _Undecodable):
            self.tally.add("message/undecodable")
            logger.error(
                "message %r of queue %r cannot be decoded; failing it: %s", leased.mid, name, content.reason
            )
            return Failure(reason=content.reason)
        if self.max_attempts is not None and leased.attempt > self.max_attempts:
            self.tally.add("message/max-attempts")
            logger.error(
                "message %r of queue %r was handed out %d times (max_attempts %d); failing it",
                leased.mid,
                name,
                leased.attempt,
                self.max_attempts,
            )
            return Failure(reason=f"handed out {leased.attempt} times; max_attempts is {self.max_attempts}")
        return None

    async def _outcome_of(self, leased: Leased, content: Any, now_ms: int) -> Outcome:
        refusal = self._refusal(leased, content)
        if refusal is not None:
            return refusal
        age_ms = max(0, now_ms - leased.enqueued_ms)
        message = Message(
            content=content,
            mid=leased.mid,
            queue=self.queue.name,
            attempt=leased.attempt,
            lock_timeout=leased.lock_ms / 1000,
            age=age_ms / 1000,
            lease_token=leased.token,
        )
        if leased.attempt == 1:
            self.queueing_ms.record(age_ms)
            self.tally.timing("queueing", age_ms / 1000)
        started = time.perf_counter()
        try:
            outcome = await self._call_handler(message)
        except Exception as exc:
            outcome = self._map_exception(exc, message)
        except (KeyboardInterrupt, SystemExit) as exc:
            logger.critical(
                "handler raised %s on message %r of queue %r: the process ends; the message"
                " is handed out again when its lease lapses",
                type(exc).__name__,
                message.mid,
                self.queue.name,
            )
            raise
        except asyncio.CancelledError as exc:
            if self._cancelled_by_worker():
                raise
            # The handler's own (a future it awaited was cancelled, say): a
            # failure like any other, or it would come back every lease.
            outcome = self._map_exception(exc, message)
        except BaseException as exc:  # GeneratorExit, a user's BaseException subclass
            outcome = self._map_exception(exc, message)
        finally:
            took = time.perf_counter() - started
            self.handling_ms.record(took * 1000)
            self.tally.timing("handling", took)
        return outcome

    def _cancelled_by_worker(self) -> bool:
        """Whether the running handler task was cancelled (by stop(), or by the
        event loop shutting down) rather than raising CancelledError itself."""
        task = asyncio.current_task()
        if task is None:
            return False
        cancelling = getattr(task, "cancelling", None)  # Python 3.11+
        return task in self.cancelled_by_worker or (cancelling is not None and cancelling() > 0)

    async def _call_handler(self, message: Message) -> Outcome:
        if self.handler_timeout is None:
            result = await self._awaitable(message)
        else:
            # A cancel scope rather than catching TimeoutError: a handler's own
            # timeout (an HTTP call's, say) must not pass for handler_timeout.
            with anyio.move_on_after(self.handler_timeout) as scope:
                result = await self._awaitable(message)
            if scope.cancelled_caught:
                self.tally.add("handler/timeout")
                raise TimeoutError(f"handler ran longer than handler_timeout ({self.handler_timeout} s)")
        if result is None:
            return Success()
        if isinstance(result, (Success, Retry, Failure)):
            return result
        raise TypeError(f"handler returned {result!r}; expected Success, Retry, Failure or None")

    def _awaitable(self, message: Message) -> Awaitable[Success | Retry | Failure | None]:
        result = self.handler(message)
        if not inspect.isawaitable(result):
            raise TypeError(
                f"handler returned {result!r} instead of an awaitable: handlers must be async functions"
            )
        return result

    def _map_exception(self, exc: BaseException, message: Message) -> Outcome:
        self.tally.add("handler/exception")
        if _tracing.hook is not None:
            _tracing.hook.exception(exc)
        logger.error(
            "handler raised on message %r (attempt %d) of queue %r",
            message.mid,
            message.attempt,
            self.queue.name,
            exc_info=exc,
        )
        try:
            outcome = self.on_exception(exc, message)
        except Exception:
            logger.exception("on_exception raised; failing message %r", message.mid)
            return exception_to_failure(exc, message)
        if not isinstance(outcome, (Success, Retry, Failure)):
            logger.error("on_exception returned %r; failing message %r", outcome, message.mid)
            return exception_to_failure(exc, message)
        return outcome


def _is_text(mid: str) -> bool:
    """Whether a mid from Redis was UTF-8 (else it holds surrogate escapes)."""
    if mid.isascii():
        return True
    try:
        mid.encode()
    except UnicodeEncodeError:
        return False
    return True


def _backoff_ms(backoff: float | None) -> int:
    return 0 if backoff is None else to_ms(backoff)
