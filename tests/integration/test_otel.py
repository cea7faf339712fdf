"""Tracing with the real OpenTelemetry SDK: enqueue -> Redis -> AsyncWorker -> handler.

Spans are read back from the SDK's in-memory exporter; the trace context travels
inside the stored payload, so every test goes through a real server and worker.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, context as otel_context, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from tests.conftest import QueueFactory
from tests.helpers import eventually, lease_one
from vermilion import AsyncWorker, Failure, Message, Queue, Retry, Success, VermilionConnectionError, otel
from vermilion._tracing import CARRIER_MARK

Outcome = Success | Retry | Failure | None


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into an in-memory exporter; off again after the test."""
    spans = InMemorySpanExporter()
    provider = provider_of(spans)
    otel.instrument(provider)
    yield spans
    otel.uninstrument()
    provider.shutdown()


@pytest.fixture
async def queue(make_queue: QueueFactory) -> Queue:
    return await make_queue()


def provider_of(exporter: InMemorySpanExporter) -> TracerProvider:
    """A tracer provider exporting to ``exporter`` as soon as a span ends."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def request_tracer(exporter: InMemorySpanExporter) -> trace.Tracer:
    """A tracer of the application's own (a web request, say), exporting beside vermilion's."""
    return provider_of(exporter).get_tracer("app")


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def context_of(span: ReadableSpan) -> SpanContext:
    context = span.get_span_context()
    assert context is not None
    return context


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def linked_ids(span: ReadableSpan) -> list[int]:
    return [link.context.span_id for link in span.links]


class Handler:
    """Records each message with the span context current while it was handled."""

    def __init__(self, outcome: Outcome = None, raises: BaseException | None = None) -> None:
        self.outcome = outcome
        self.raises = raises
        self.seen: list[tuple[Message, SpanContext]] = []

    async def __call__(self, message: Message) -> Outcome:
        self.seen.append((message, trace.get_current_span().get_span_context()))
        if self.raises is not None:
            raise self.raises
        return self.outcome


async def handle(queue: Queue, handler: Handler, count: int, **options: Any) -> None:
    """Run a real worker until ``handler`` has seen ``count`` messages and their spans ended."""
    async with AsyncWorker(queue, handler, monitor=None, **options):

        async def done() -> bool:
            return len(handler.seen) >= count

        await eventually(done, what=f"{count} message(s) handled")
    assert len(handler.seen) == count


async def test_process_span_is_child_of_send_span_which_is_child_of_the_request(
    queue: Queue, exporter: InMemorySpanExporter
) -> None:
    """request -> send (PRODUCER) -> process (CONSUMER, also linked) -> the handler's own spans."""
    with request_tracer(exporter).start_as_current_span("GET /orders") as request:
        result = await queue.enqueue({"order": 7})
    handler = Handler()
    await handle(queue, handler, 1)

    (send,) = named(exporter, f"send {queue.name}")
    (process,) = named(exporter, f"process {queue.name}")
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert parent_id(send) == request.get_span_context().span_id
    assert parent_id(process) == context_of(send).span_id
    assert linked_ids(process) == [context_of(send).span_id]
    assert context_of(process).trace_id == request.get_span_context().trace_id
    message, current = handler.seen[0]
    assert message.content == {"order": 7}
    assert current.span_id == context_of(process).span_id  # the handler runs inside the process span
    assert dict(send.attributes or {}) == {
        "messaging.system": "vermilion",
        "messaging.destination.name": queue.name,
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.message.id": result.mid,
        "messaging.vermilion.enqueue.result": "added",
        "server.address": "127.0.0.1",
        "server.port": queue.redis.connection_pool.connection_kwargs["port"],
    }
    attributes = dict(process.attributes or {})
    assert attributes["messaging.operation.name"] == "process"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.message.id"] == result.mid
    assert attributes["messaging.vermilion.message.attempt"] == 1
    assert attributes["messaging.vermilion.outcome"] == "success"
    assert process.status.status_code is StatusCode.UNSET
    assert send.instrumentation_scope is not None
    assert send.instrumentation_scope.schema_url == otel.SCHEMA_URL


async def test_without_message_as_parent_the_process_span_is_only_linked(
    queue: Queue, exporter: InMemorySpanExporter
) -> None:
    """message_as_parent=False: the process span starts its own trace and links to the send span."""
    await queue.enqueue("x")
    otel.instrument(provider_of(exporter), message_as_parent=False)
    await handle(queue, Handler(), 1)

    (send,) = named(exporter, f"send {queue.name}")
    (process,) = named(exporter, f"process {queue.name}")
    assert process.parent is None
    assert linked_ids(process) == [context_of(send).span_id]
    assert context_of(process).trace_id != context_of(send).trace_id


async def test_worker_context_becomes_a_link_when_the_message_is_the_parent(
    queue: Queue, exporter: InMemorySpanExporter
) -> None:
    """A worker started inside a span: the process span links to it as well as to the send span."""
    await queue.enqueue("x")
    handler = Handler()
    with request_tracer(exporter).start_as_current_span("worker startup") as ambient:
        await handle(queue, handler, 1)
    (send,) = named(exporter, f"send {queue.name}")
    (process,) = named(exporter, f"process {queue.name}")
    assert parent_id(process) == context_of(send).span_id
    assert linked_ids(process) == [context_of(send).span_id, ambient.get_span_context().span_id]


async def test_enqueue_many_makes_a_create_span_per_message(
    queue: Queue, exporter: InMemorySpanExporter
) -> None:
    """create (PRODUCER) per message, one send (CLIENT) linking them; each process span under its create."""
    with request_tracer(exporter).start_as_current_span("batch request") as request:
        results = await queue.enqueue_many(["a", "b", "c"])
    handler = Handler()
    await handle(queue, handler, 3)

    creates = named(exporter, f"create {queue.name}")
    (send,) = named(exporter, f"send {queue.name}")
    processes = named(exporter, f"process {queue.name}")
    assert send.kind is SpanKind.CLIENT
    assert (send.attributes or {})["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in (send.attributes or {})
    create_by_mid = {(span.attributes or {})["messaging.message.id"]: span for span in creates}
    assert set(create_by_mid) == {result.mid for result in results}
    assert all(span.kind is SpanKind.PRODUCER for span in creates)
    assert all(parent_id(span) == request.get_span_context().span_id for span in creates)
    assert sorted(linked_ids(send)) == sorted(context_of(span).span_id for span in creates)
    for process in processes:
        create = create_by_mid[(process.attributes or {})["messaging.message.id"]]
        assert parent_id(process) == context_of(create).span_id
        assert linked_ids(process) == [context_of(create).span_id]
    assert sorted(message.content for message, _ in handler.seen) == ["a", "b", "c"]


async def test_enqueue_many_without_create_spans_shares_the_send_span(
    queue: Queue, exporter: InMemorySpanExporter
) -> None:
    """create_spans=False: one send span (PRODUCER) is every message's creation context."""
    otel.instrument(provider_of(exporter), create_spans=False)
    await queue.enqueue_many(["a", "b"])
    await handle(queue, Handler(), 2)

    assert named(exporter, f"create {queue.name}") == []
    (send,) = named(exporter, f"send {queue.name}")
    assert send.kind is SpanKind.PRODUCER
    assert (send.attributes or {})["messaging.batch.message_count"] == 2
    processes = named(exporter, f"process {queue.name}")
    assert [parent_id(span) for span in processes] == [context_of(send).span_id] * 2


async def test_untraced_worker_handles_a_traced_message(queue: Queue, exporter: InMemorySpanExporter) -> None:
    """A carrier is stripped by every worker, traced or not: the content arrives intact."""
    await queue.enqueue({"k": [1, 2]})
    assert (await lease_raw(queue)).startswith(CARRIER_MARK)
    otel.uninstrument()
    exporter.clear()
    handler = Handler()
    await handle(queue, handler, 1, lock_timeout=0.2)  # the lease taken above lapses first
    assert handler.seen[0][0].content == {"k": [1, 2]}
    assert exporter.get_finished_spans() == ()


async def lease_raw(queue: Queue) -> bytes:
    """The stored bytes of the queue's next message (leased for 100 ms, then it is ready again)."""
    return (await lease_one(queue, lock_ms=100)).payload


async def test_traced_worker_handles_an_untraced_message(
    queue: Queue, exporter: InMemorySpanExporter
) -> None:
    """No carrier: the process span is a root without links, and nothing fails."""
    otel.uninstrument()
    await queue.enqueue("plain")
    otel.instrument(provider_of(exporter))
    handler = Handler()
    await handle(queue, handler, 1)
    (process,) = named(exporter, f"process {queue.name}")
    assert process.parent is None and process.links == ()
    assert process.status.status_code is StatusCode.UNSET
    message, current = handler.seen[0]
    assert message.content == "plain"
    assert current.span_id == context_of(process).span_id
    attributes = dict(process.attributes or {})
    assert attributes["messaging.message.id"] == message.mid
    assert attributes["messaging.vermilion.outcome"] == "success"


@pytest.mark.parametrize("outcome", [None, Failure("no")], ids=["success", "failure"])
async def test_a_sampled_out_message_is_handled_in_its_unsampled_trace(
    queue: Queue, exporter: InMemorySpanExporter, outcome: Outcome
) -> None:
    """The user's sampler dropped the request's trace: no span is exported, yet the
    handler runs in that trace (unsampled), so its own spans are dropped alike."""
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(provider)
    with provider.get_tracer("app").start_as_current_span("GET /orders") as request:
        await queue.enqueue("x")
    handler = Handler(outcome)
    await handle(queue, handler, 1)
    _, current = handler.seen[0]
    assert current.is_valid and not current.trace_flags.sampled
    assert current.trace_id == request.get_span_context().trace_id
    assert current.span_id != request.get_span_context().span_id  # the (unrecorded) process span
    assert exporter.get_finished_spans() == ()


async def test_uninstrument_stops_spans_and_carriers(queue: Queue, exporter: InMemorySpanExporter) -> None:
    """After uninstrument() an enqueue stores the serializer's bytes alone and nothing is exported."""
    assert otel.is_instrumented()
    otel.uninstrument()
    assert not otel.is_instrumented()
    await queue.enqueue("quiet")
    assert await lease_raw(queue) == queue.serializer.dumps("quiet")
    await handle(queue, Handler(), 1, lock_timeout=0.2)
    assert exporter.get_finished_spans() == ()


async def test_no_recording_provider_adds_no_bytes(queue: Queue) -> None:
    """Instrumented with a provider that records nothing, no trace context exists: no carrier."""
    otel.instrument(trace.NoOpTracerProvider())
    try:
        await queue.enqueue("x")
    finally:
        otel.uninstrument()
    assert await lease_raw(queue) == queue.serializer.dumps("x")


async def test_content_shows_the_content_without_the_carrier(
    queue: Queue, exporter: InMemorySpanExporter
) -> None:
    await queue.enqueue({"a": 1}, mid="m1")
    (info,) = await queue.content()
    assert info.content == {"a": 1}


@pytest.mark.parametrize(
    ("outcome", "raises", "description", "error_type"),
    [
        (Failure("bad input"), None, "bad input", "failure"),
        (None, ValueError("boom"), "ValueError: boom", "ValueError"),
        (
            None,
            asyncio.InvalidStateError("odd"),
            "InvalidStateError: odd",
            "asyncio.exceptions.InvalidStateError",
        ),
        (Retry(), KeyError("k"), "KeyError: 'k'", "KeyError"),
    ],
    ids=["returned-failure", "raised", "raised-non-builtin", "raised-mapped-to-retry"],
)
async def test_failures_set_error_status(
    queue: Queue,
    exporter: InMemorySpanExporter,
    outcome: Outcome,
    raises: BaseException | None,
    description: str,
    error_type: str,
) -> None:
    """A Failure or an exception: status ERROR, error.type, and the exception as an event."""
    await queue.enqueue("x")
    options: dict[str, Any] = {}
    if isinstance(outcome, Retry):  # on_exception decides the outcome of a raise
        options["on_exception"] = lambda exc, message: Retry(backoff=60)
    await handle(queue, Handler(raises=raises) if raises else Handler(outcome), 1, **options)
    (process,) = named(exporter, f"process {queue.name}")
    attributes = dict(process.attributes or {})
    assert attributes["messaging.vermilion.outcome"] == ("retry" if options else "failure")
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == description
    assert attributes["error.type"] == error_type
    events = [event.name for event in process.events]
    assert events == ([] if raises is None else ["exception"]) + (["retry"] if options else [])


async def test_retry_is_an_event_not_an_error(queue: Queue, exporter: InMemorySpanExporter) -> None:
    await queue.enqueue("x")
    handler = Handler(Retry(backoff=30))
    await handle(queue, handler, 1)
    (process,) = named(exporter, f"process {queue.name}")
    assert (process.attributes or {})["messaging.vermilion.outcome"] == "retry"
    assert process.status.status_code is StatusCode.UNSET
    (event,) = process.events
    assert event.name == "retry"
    assert dict(event.attributes or {}) == {"messaging.vermilion.retry.backoff": 30.0}


async def test_refused_enqueue_is_recorded_on_the_send_span(
    queue: Queue, exporter: InMemorySpanExporter
) -> None:
    await queue.enqueue("first", mid="same")
    result = await queue.enqueue("second", mid="same")
    assert not result.ok
    spans = exporter.get_finished_spans()
    results = [(span.attributes or {})["messaging.vermilion.enqueue.result"] for span in spans]
    assert results == ["added", "already-queued"]


async def test_content_at_max_payload_bytes_is_accepted_when_traced(
    make_queue: QueueFactory, exporter: InMemorySpanExporter
) -> None:
    """max_payload_bytes bounds the serialized content: the carrier never makes it too large."""
    content = b"x" * 100
    size = len(Queue("q").serializer.dumps(content))
    queue = await make_queue(max_payload_bytes=size)
    await queue.enqueue(content)
    stored = await lease_raw(queue)
    assert len(stored) > size
    handler = Handler()
    await handle(queue, handler, 1, lock_timeout=0.2)
    assert handler.seen[0][0].content == content


def test_import_vermilion_does_not_import_opentelemetry() -> None:
    """vermilion imports no OpenTelemetry module until vermilion.otel is imported.

    redis-py imports OpenTelemetry itself when it is installed, so what
    vermilion's own modules add is compared.
    """
    code = (
        "import sys, redis.asyncio, msgpack, anyio; "
        "before = {m for m in sys.modules if m.startswith('opentelemetry')}; "
        "import vermilion, vermilion._cli, vermilion.testing; "
        "added = sorted(m for m in sys.modules if m.startswith('opentelemetry') and m not in before); "
        "assert not added, added; "
        "import vermilion.otel; "
        "assert 'opentelemetry.trace' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_without_opentelemetry_a_traced_message_reads_clean(
    queue: Queue, exporter: InMemorySpanExporter, redis_url: str
) -> None:
    """In a process where OpenTelemetry cannot be imported, vermilion works and strips carriers;
    vermilion.otel says which extra it needs."""
    await queue.enqueue({"n": 1}, mid="m1")
    code = f"""
import asyncio, sys
sys.modules["opentelemetry"] = None  # as if it were not installed
import vermilion
try:
    import vermilion.otel
except ImportError as exc:
    assert "vermilion[otel]" in str(exc), exc
else:
    raise AssertionError("vermilion.otel imported without OpenTelemetry")

async def main():
    async with vermilion.Queue({queue.name!r}, {redis_url!r}) as queue:
        (info,) = await queue.content()
        print(info.content)

asyncio.run(main())
"""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == "{'n': 1}"


def test_instrument_checks_its_flags() -> None:
    with pytest.raises(TypeError, match="message_as_parent must be a bool"):
        otel.instrument(message_as_parent=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="create_spans must be a bool"):
        otel.instrument(create_spans="no")  # type: ignore[arg-type]
    assert not otel.is_instrumented()


class RawBytes:
    """A user's serializer that stores bytes as they are, so its output may start with 0xC1."""

    def dumps(self, content: Any, /) -> bytes:
        return bytes(content)

    def loads(self, data: bytes, /) -> Any:
        return data


@pytest.mark.parametrize("traced", [True, False], ids=["traced", "untraced"])
async def test_a_users_serializer_may_write_the_carrier_mark(
    make_queue: QueueFactory, exporter: InMemorySpanExporter, traced: bool
) -> None:
    """Content whose serialized form starts with 0xC1 reaches content() and the handler intact."""
    if not traced:
        otel.uninstrument()
    raw = b"\xc1\x01\x00\x02ab: not a carrier"
    queue = await make_queue(serializer=RawBytes())
    await queue.enqueue(raw)
    (info,) = await queue.content()
    assert info.content == raw
    handler = Handler()
    await handle(queue, handler, 1)
    assert handler.seen[0][0].content == raw
    assert len(named(exporter, f"process {queue.name}")) == (1 if traced else 0)


async def test_handler_cancelled_by_stop_ends_its_span_with_the_error(
    queue: Queue, exporter: InMemorySpanExporter
) -> None:
    """A worker stopping cancels a running handler: the process span still ends, in ERROR."""
    started = asyncio.Event()

    async def stuck(message: Message) -> None:
        started.set()
        await asyncio.Event().wait()

    await queue.enqueue("x")
    worker = AsyncWorker(queue, stuck, monitor=None)
    await worker.start()
    await asyncio.wait_for(started.wait(), 10)
    await worker.stop(timeout=0)
    (process,) = named(exporter, f"process {queue.name}")
    assert process.status.status_code is StatusCode.ERROR
    assert (process.attributes or {})["error.type"] == "asyncio.exceptions.CancelledError"
    assert [event.name for event in process.events] == ["exception"]


async def test_baggage_reaches_the_handler(queue: Queue, exporter: InMemorySpanExporter) -> None:
    """The carrier holds every header the propagator writes: baggage set by the request too."""
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        await queue.enqueue("x")
    finally:
        otel_context.detach(token)
    seen: list[object] = []

    async def handler(message: Message) -> None:
        seen.append(baggage.get_baggage("tenant"))

    async with AsyncWorker(queue, handler, monitor=None):

        async def handled() -> bool:
            return bool(seen)

        await eventually(handled)
    assert seen == ["acme"]


async def test_a_failed_send_is_an_error_span(exporter: InMemorySpanExporter) -> None:
    """An enqueue that raises ends its send span in ERROR, with the exception's class."""
    async with Queue("unreachable", "redis://127.0.0.1:1/0") as queue:
        with pytest.raises(VermilionConnectionError):
            await queue.enqueue("x")
    (send,) = named(exporter, "send unreachable")
    assert send.status.status_code is StatusCode.ERROR
    assert (send.attributes or {})["error.type"] == "vermilion.VermilionConnectionError"
    assert [event.name for event in send.events] == ["exception"]
