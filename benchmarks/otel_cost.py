"""Measure: what tracing costs per handled message, the SDK's share and vermilion's own.

No Redis and no worker: one process, CPU time of this thread only (``time.thread_time``),
so that other processes on a busy machine disturb it less. For each sampler:

* ``sdk``: the OpenTelemetry calls a traced worker makes per message, and nothing else:
  the propagator extracts the message's carrier, ``start_span`` (CONSUMER, the parent,
  the eight attributes, the link), ``attach``, the outcome attribute (when recording),
  ``detach``, ``end``;
* ``vermilion``: ``begin`` and ``end`` of vermilion's tracing hook on a leased message
  holding the same carrier (the SDK calls above, plus what vermilion does around them);
* ``own``: vermilion minus sdk.

And ``metrics``: the worker's per-message events (one outcome count, two timings) with a
``WorkerMetrics`` attached, minus the same without. SDK configuration as in
``_libs.py``: ``BatchSpanProcessor`` (defaults) into an exporter that drops spans; the
carriers come from producer spans made with the same sampler, so ``ratio-0.1`` samples
about a tenth of them. Medians of ``--reps`` alternating repetitions. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from _libs import tracer_provider
from opentelemetry import context as otel_context, trace
from opentelemetry.propagate import get_global_textmap
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind
from prometheus_client import CollectorRegistry

from vermilion import Queue, Success, _tracing, otel
from vermilion._stats import Tally
from vermilion._wire import Leased
from vermilion.prometheus import WorkerMetrics, _Observer

SAMPLERS: dict[str, Callable[[], Any]] = {
    "always-on": lambda: None,  # the SDK's default: ParentBased(ALWAYS_ON)
    "ratio-0.1": lambda: ParentBased(TraceIdRatioBased(0.1)),
}
CARRIERS = 1000


def carriers(provider: Any) -> list[bytes]:
    """Carrier texts of producer spans, as vermilion stores them (``key:value`` lines)."""
    tracer = provider.get_tracer("producer")
    texts = []
    for _ in range(CARRIERS):
        headers: dict[str, str] = {}
        with tracer.start_as_current_span("send bench", kind=SpanKind.PRODUCER):
            get_global_textmap().inject(headers)
        texts.append("\n".join(f"{key}:{value}" for key, value in headers.items()).encode())
    return texts


def sdk_loop(provider: Any, texts: list[bytes], n: int) -> float:
    """CPU seconds of ``n`` messages' OpenTelemetry calls, without vermilion."""
    tracer = provider.get_tracer("bare")
    propagator = get_global_textmap()
    base = {
        "messaging.system": "vermilion",
        "messaging.destination.name": "bench",
        "server.address": "127.0.0.1",
        "server.port": 6379,
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
    }
    headers = [dict(line.split(":", 1) for line in text.decode().split("\n")) for text in texts]
    started = time.thread_time()
    for i in range(n):
        parent = propagator.extract(headers[i % CARRIERS])
        created = trace.get_current_span(parent).get_span_context()
        attributes = {
            **base,
            "messaging.message.id": "0123456789abcdef",
            "messaging.vermilion.message.attempt": 1,
        }
        span = tracer.start_span(
            "process bench", parent, kind=SpanKind.CONSUMER, attributes=attributes, links=[Link(created)]
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        if span.is_recording():
            span.set_attribute("messaging.vermilion.outcome", "success")
        otel_context.detach(token)
        span.end()
    return time.thread_time() - started


def vermilion_loop(provider: Any, texts: list[bytes], n: int) -> float:
    """CPU seconds of ``n`` messages through vermilion's tracing hook (begin, end)."""
    otel.instrument(tracer_provider=provider)
    hook = _tracing.hook
    assert hook is not None
    queue = Queue("bench")  # never connects: the hook reads its name and address only
    leased = [
        Leased("0123456789abcdef", _tracing.with_carrier(text, b"\x81\xa1i\x01"), 1, 30_000, 0, "t", False)
        for text in texts
    ]
    outcome = Success()
    started = time.thread_time()
    for i in range(n):
        state = hook.begin(queue, leased[i % CARRIERS])
        hook.end(state, outcome, None)
    elapsed = time.thread_time() - started
    otel.uninstrument()
    return elapsed


def events_loop(tally: Tally, n: int) -> float:
    """CPU seconds of ``n`` messages' worker events (what the worker reports per message)."""
    started = time.thread_time()
    for _ in range(n):
        tally.timing("queueing", 0.002)
        tally.timing("handling", 0.0001)
        tally.add("handler/success")
    return time.thread_time() - started


def main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"n": args.n, "reps": args.reps}
    for name, sampler in SAMPLERS.items():
        provider = tracer_provider(sampler())
        texts = carriers(provider)
        sdk, ours = [], []
        for _ in range(args.reps):
            sdk.append(sdk_loop(provider, texts, args.n) / args.n * 1e6)
            ours.append(vermilion_loop(provider, texts, args.n) / args.n * 1e6)
        provider.shutdown()
        result[name] = {
            "sdk_us": statistics.median(sdk),
            "vermilion_us": statistics.median(ours),
            "own_us": statistics.median(v - s for v, s in zip(ours, sdk, strict=True)),
        }
    plain, observed = Tally(), Tally()
    metrics = WorkerMetrics(CollectorRegistry())
    observed.attach(_Observer(metrics, "bench"))  # what WorkerMetrics.instrument attaches
    bare, with_metrics = [], []
    for _ in range(args.reps):
        bare.append(events_loop(plain, args.n) / args.n * 1e6)
        with_metrics.append(events_loop(observed, args.n) / args.n * 1e6)
    result["metrics_us"] = statistics.median(m - b for m, b in zip(with_metrics, bare, strict=True))
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=20_000, help="messages per repetition")
    p.add_argument("--reps", type=int, default=7)
    print(json.dumps(main(p.parse_args())))
