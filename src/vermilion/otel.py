"""OpenTelemetry tracing for vermilion: ``pip install 'vermilion[otel]'``.

``instrument()`` turns tracing on for every ``Queue`` and ``AsyncWorker`` in
the process; ``uninstrument()`` turns it off. ``import vermilion`` never
imports this module (nor OpenTelemetry): without it, nothing is traced and
nothing is paid.

Spans follow the OpenTelemetry semantic conventions for messaging spans,
version 1.44.0: ``send <queue>`` (PRODUCER) around each enqueue, ``create
<queue>`` (PRODUCER) per message of an ``enqueue_many`` whose ``send`` span is
then a CLIENT span linking them, and ``process <queue>`` (CONSUMER) around each
handling. The creation context travels inside the stored payload (the
carrier, see ``docs/redis-layout.md``), and the ``process`` span links to it
and, by default, is its child.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar, Token
from importlib.metadata import version
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary, ref

try:
    from opentelemetry import context as otel_context, trace
    from opentelemetry.context import Context
    from opentelemetry.propagate import get_global_textmap
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import (
        Link,
        Span,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        Tracer,
        TracerProvider,
    )
    from opentelemetry.util.types import AttributeValue
except ImportError as _missing:  # the extra is not installed
    raise ImportError("vermilion.otel needs OpenTelemetry: pip install 'vermilion[otel]'") from _missing

from . import _tracing
from ._logs import logger
from ._messages import Failure, Outcome, Retry
from ._redis_internals import connection_settings

if TYPE_CHECKING:
    from ._queue import Queue
    from ._wire import Leased

__all__ = ["SCHEMA_URL", "instrument", "is_instrumented", "uninstrument"]

SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
"""The semantic conventions version the spans follow."""

_SYSTEM = "vermilion"
_ERROR_TYPE = "error.type"
_MESSAGE_ID = "messaging.message.id"
_BATCH_COUNT = "messaging.batch.message_count"
_ATTEMPT = "messaging.vermilion.message.attempt"
_OUTCOME = "messaging.vermilion.outcome"
_ENQUEUE_RESULT = "messaging.vermilion.enqueue.result"
_RETRY_BACKOFF = "messaging.vermilion.retry.backoff"
# A handler that returned Failure raised nothing: its error.type is this.
_FAILURE_ERROR_TYPE = "failure"

Attributes = dict[str, AttributeValue]
_NO_RELATIONS: tuple[None, Sequence[Link]] = (None, ())


def instrument(
    tracer_provider: TracerProvider | None = None,
    *,
    propagator: TextMapPropagator | None = None,
    message_as_parent: bool = True,
    create_spans: bool = True,
) -> None:
    """Trace every enqueue and every handled message in this process.

    Calling it again replaces the previous settings.

    Args:
        tracer_provider: where spans go; the global tracer provider by default.
        propagator: writes the creation context into each message and reads it
            back; the global one by default (W3C ``traceparent``, ``tracestate``
            and ``baggage`` unless configured otherwise).
        message_as_parent: make each ``process`` span a child of the message's
            creation context (one trace from request to handler). ``False``
            keeps it in the worker's own context, linked to the creation
            context only, as the conventions do by default.
        create_spans: give each message of an ``enqueue_many`` its own
            ``create`` span, as the conventions recommend for batches;
            ``False`` makes one ``send`` span the creation context of all.
    """
    for name, flag in (("message_as_parent", message_as_parent), ("create_spans", create_spans)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, not {type(flag).__name__}")
    tracer = trace.get_tracer("vermilion", version("vermilion"), tracer_provider, schema_url=SCHEMA_URL)
    _tracing.hook = _Hook(
        tracer,
        propagator or get_global_textmap(),
        message_as_parent=message_as_parent,
        create_spans=create_spans,
    )


def uninstrument() -> None:
    """Stop tracing: enqueues and handling go back to creating no spans and no carriers."""
    _tracing.hook = None


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return isinstance(_tracing.hook, _Hook)


class _Processing:
    """The ``process`` span of the message a handler task is handling, and how to end it."""

    __slots__ = ("context_token", "raised", "span", "token")
    token: Token[_Processing | None]  # set as soon as the state is current

    def __init__(self, span: Span, context_token: Token[Context]) -> None:
        self.span = span
        self.context_token = context_token
        self.raised: BaseException | None = None


_processing: ContextVar[_Processing | None] = ContextVar("vermilion_otel_processing", default=None)


class _Hook:
    """The tracing hook ``vermilion._tracing`` calls, holding the settings of ``instrument``."""

    def __init__(
        self, tracer: Tracer, propagator: TextMapPropagator, *, message_as_parent: bool, create_spans: bool
    ) -> None:
        self._tracer = tracer
        self._propagator = propagator
        self._message_as_parent = message_as_parent
        self._create_spans = create_spans
        self._queues: WeakKeyDictionary[Queue, _QueueSpans] = WeakKeyDictionary()
        self._last: tuple[ref[Queue], _QueueSpans] | None = None

    # -- producer ----------------------------------------------------------------

    async def send(
        self, queue: Queue, messages: list[tuple[str, bytes]], batch: bool, send: _tracing.Sender
    ) -> list[str]:
        attributes = self._attributes(queue, "send")
        if batch:
            attributes[_BATCH_COUNT] = len(messages)
        else:
            attributes[_MESSAGE_ID] = messages[0][0]
        carriers: list[bytes] | None = None
        links: list[Link] = []
        kind = SpanKind.PRODUCER
        if batch and self._create_spans:
            created = [self._create(queue, mid) for mid, _ in messages]
            carriers = [text for _, text in created]
            links = [Link(context) for context, _ in created if context.is_valid]
            kind = SpanKind.CLIENT  # the create spans are the messages' creation contexts
        with self._tracer.start_as_current_span(
            f"send {queue.name}", kind=kind, attributes=attributes, links=links
        ) as span:
            if carriers is None:
                carriers = [self._inject(None)] * len(messages)
            traced = [
                (mid, _tracing.with_carrier(text, payload) if text else payload)
                for (mid, payload), text in zip(messages, carriers, strict=True)
            ]
            try:
                replies = await send(traced)
            except Exception as exc:
                span.set_attribute(_ERROR_TYPE, _type_name(exc))
                raise
            if not batch:
                span.set_attribute(_ENQUEUE_RESULT, replies[0])
        return replies

    def _create(self, queue: Queue, mid: str) -> tuple[SpanContext, bytes]:
        attributes = self._attributes(queue, "create")
        attributes[_MESSAGE_ID] = mid
        span = self._tracer.start_span(f"create {queue.name}", kind=SpanKind.PRODUCER, attributes=attributes)
        span.end()
        return span.get_span_context(), self._inject(trace.set_span_in_context(span))

    def _inject(self, context: Context | None) -> bytes:
        """The carrier text for ``context`` (the current one if ``None``), ``b""`` if empty."""
        headers: dict[str, str] = {}
        self._propagator.inject(headers, context=context)
        lines = [f"{key}:{value}" for key, value in headers.items() if _fits_a_line(key, value)]
        text = "\n".join(lines).encode()
        if len(text) > _tracing.MAX_CARRIER_BYTES:
            logger.warning(
                "trace context of %d bytes is too large to carry in a message (at most %d); not sent",
                len(text),
                _tracing.MAX_CARRIER_BYTES,
            )
            return b""
        return text

    # -- consumer ----------------------------------------------------------------

    def begin(self, queue: Queue, leased: Leased) -> _Processing:
        spans = self._spans(queue)
        attributes = dict(spans.process_attributes)
        attributes[_MESSAGE_ID] = leased.mid
        attributes[_ATTEMPT] = leased.attempt
        text = _tracing.carrier_text(leased.payload)
        parent, links = self._relations(text) if text else _NO_RELATIONS
        span = self._tracer.start_span(
            spans.process_name, parent, kind=SpanKind.CONSUMER, attributes=attributes, links=links
        )
        # attach/detach by hand: start_as_current_span's context managers cost
        # a fifth of the span, on every message.
        state = _Processing(span, otel_context.attach(trace.set_span_in_context(span, parent)))
        state.token = _processing.set(state)
        return state

    def end(self, state: _Processing, outcome: Outcome | None, raised: BaseException | None) -> None:
        span = state.span
        try:
            if not span.is_recording():
                pass  # a sampled-out span: nothing to record, the calls would be thrown away
            elif raised is not None:
                _record_error(span, raised)
            elif outcome is not None:
                _record_outcome(span, outcome, state.raised)
        finally:
            _processing.reset(state.token)
            otel_context.detach(state.context_token)
            span.end()

    def _relations(self, text: bytes) -> tuple[Context | None, Sequence[Link]]:
        """The ``process`` span's parent (``None``: the current context) and links."""
        creation = self._propagator.extract(_parse_carrier(text))
        created = trace.get_current_span(creation).get_span_context()
        if not created.is_valid:
            return _NO_RELATIONS
        links = [Link(created)]
        if not self._message_as_parent:
            return None, links
        # The worker's own context, if it has a span, stays reachable through a link.
        ambient = trace.get_current_span().get_span_context()
        if ambient.is_valid:
            links.append(Link(ambient))
        return creation, links

    def _spans(self, queue: Queue) -> _QueueSpans:
        last = self._last
        if last is not None and last[0]() is queue:  # a worker asks for its one queue again and again
            return last[1]
        found = self._queues.get(queue)
        if found is None:
            found = self._queues[queue] = _QueueSpans(queue)
        self._last = (ref(queue), found)
        return found

    def _attributes(self, queue: Queue, operation: str) -> Attributes:
        """The attributes every span of ``operation`` on ``queue`` has (a fresh dict)."""
        return {**self._spans(queue).common, **_operation(operation)}

    def exception(self, exc: BaseException) -> None:
        state = _processing.get()
        if state is not None:
            state.raised = exc
            state.span.record_exception(exc)


class _QueueSpans:
    """What every span of one queue shares, worked out once, not per message."""

    __slots__ = ("common", "process_attributes", "process_name")

    def __init__(self, queue: Queue) -> None:
        self.common = _queue_attributes(queue)
        self.process_name = f"process {queue.name}"
        self.process_attributes = {**self.common, **_operation("process")}


def _operation(operation: str) -> Attributes:
    return {"messaging.operation.name": operation, "messaging.operation.type": operation}


def _queue_attributes(queue: Queue) -> Attributes:
    attributes: Attributes = {"messaging.system": _SYSTEM, "messaging.destination.name": queue.name}
    settings = connection_settings(queue.redis)
    if "path" in settings:
        attributes["server.address"] = str(settings["path"])
    else:
        attributes["server.address"] = str(settings.get("host", "localhost"))
        attributes["server.port"] = int(settings.get("port", 6379))
    return attributes


def _record_outcome(span: Span, outcome: Outcome, raised: BaseException | None) -> None:
    if isinstance(outcome, Failure):
        span.set_attribute(_OUTCOME, "failure")
    elif isinstance(outcome, Retry):
        span.set_attribute(_OUTCOME, "retry")
        span.add_event("retry", {} if outcome.backoff is None else {_RETRY_BACKOFF: outcome.backoff})
    else:
        span.set_attribute(_OUTCOME, "success")
    if raised is not None:
        _record_error(span, raised, recorded=True)
    elif isinstance(outcome, Failure):
        span.set_attribute(_ERROR_TYPE, _FAILURE_ERROR_TYPE)
        span.set_status(Status(StatusCode.ERROR, outcome.reason))


def _record_error(span: Span, exc: BaseException, *, recorded: bool = False) -> None:
    if not recorded:
        span.record_exception(exc)
    span.set_attribute(_ERROR_TYPE, _type_name(exc))
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _fits_a_line(key: str, value: str) -> bool:
    """Whether a header can be stored as one ``key:value`` line of the carrier."""
    return ":" not in key and "\n" not in key and "\n" not in value


def _parse_carrier(text: bytes) -> dict[str, str]:
    """The headers of a carrier's text; malformed lines (not ours) are skipped."""
    headers: dict[str, str] = {}
    for line in text.decode(errors="replace").split("\n"):
        key, colon, value = line.partition(":")
        if colon:
            headers[key] = value
    return headers
