"""``vermilion worker --metrics-port``: serve the worker's and its queue's Prometheus metrics.

Owns turning the two options into a running ``/metrics`` endpoint, and the
one-line errors when it cannot run (the extra not installed, the port taken).
``vermilion.prometheus`` is imported only when the option is given, so that the
worker needs nothing more without it.
"""

from __future__ import annotations

import argparse
import logging

from vermilion._worker import AsyncWorker

from ._connect import redis_url
from ._exit import EXIT_USAGE, CommandError

__all__ = ["serve_worker_metrics"]

log = logging.getLogger("vermilion.cli")


def serve_worker_metrics(args: argparse.Namespace, worker: AsyncWorker) -> None:
    """Serve ``/metrics``: the worker's metrics and its queue's gauges (the extra must be installed)."""
    try:
        from prometheus_client import REGISTRY

        from vermilion.prometheus import QueueCollector, WorkerMetrics, serve_metrics
    except ImportError as exc:
        raise CommandError(
            f"--metrics-port needs prometheus-client ({exc}): pip install 'vermilion[prometheus]'", EXIT_USAGE
        ) from None
    WorkerMetrics(REGISTRY).instrument(worker)
    REGISTRY.register(QueueCollector(redis_url(args), [worker.queue.name]))
    try:
        server, _ = serve_metrics(args.metrics_port, args.metrics_host)
    except OSError as exc:
        raise CommandError(
            f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {exc.strerror or exc}"
        ) from None
    host, port = server.server_address[:2]
    log.info("serving Prometheus metrics at http://%s:%d/metrics", host, port)
