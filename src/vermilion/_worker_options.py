"""``AsyncWorker``'s options after it is built: the checks, and where each one lives.

The handler's options live in the parts that use them (the handler runner,
the poller); the mixin's properties read and set them there, so that
``worker.handler_timeout = 5`` takes effect on the next message.
"""

from __future__ import annotations

from collections.abc import Callable

from ._handling import ExceptionMapper, Handler, HandlerRunner
from ._messages import PollInfo
from ._policies import QueueSizeMonitor, _Default
from ._polling import Poller

__all__ = ["WorkerOptions", "worker_monitor"]


def worker_monitor(
    monitor: Callable[[PollInfo], object] | _Default | None,
) -> Callable[[PollInfo], object] | None:
    """The ``monitor`` argument checked: the default becomes a worker's own ``QueueSizeMonitor``."""
    if isinstance(monitor, _Default):
        return QueueSizeMonitor()  # one per worker: each keeps its own warning clock
    if monitor is not None and not callable(monitor):
        raise TypeError("monitor must be callable or None")
    return monitor


class WorkerOptions:
    """The options of :class:`~vermilion.AsyncWorker` that its parts hold."""

    _runner: HandlerRunner
    _poller: Poller
    lock_timeout: float
    stop_timeout: float

    @property
    def handler(self) -> Handler:
        return self._runner.handler

    @handler.setter
    def handler(self, value: Handler) -> None:
        self._runner.handler = value

    @property
    def handler_timeout(self) -> float | None:
        return self._runner.handler_timeout

    @handler_timeout.setter
    def handler_timeout(self, value: float | None) -> None:
        self._runner.handler_timeout = value

    @property
    def max_attempts(self) -> int | None:
        return self._runner.max_attempts

    @max_attempts.setter
    def max_attempts(self, value: int | None) -> None:
        self._runner.max_attempts = value

    @property
    def on_exception(self) -> ExceptionMapper:
        return self._runner.on_exception

    @on_exception.setter
    def on_exception(self, value: ExceptionMapper) -> None:
        self._runner.on_exception = value

    @property
    def monitor(self) -> Callable[[PollInfo], object] | None:
        return self._poller.monitor

    @monitor.setter
    def monitor(self, value: Callable[[PollInfo], object] | None) -> None:
        self._poller.monitor = value

    def _option_values(self) -> dict[str, object]:
        """The options as ``WorkerStatus.options`` shows them."""
        idle_backoff, throttle = self._poller.idle_backoff, self._poller.throttle
        return {
            "lock_timeout": self.lock_timeout,
            "handler_timeout": self.handler_timeout,
            "max_attempts": self.max_attempts,
            "idle_backoff": getattr(idle_backoff, "__name__", repr(idle_backoff)),
            "throttle": None if throttle is None else repr(throttle),
            "monitor": repr(self.monitor),
            "stop_timeout": self.stop_timeout,
        }
