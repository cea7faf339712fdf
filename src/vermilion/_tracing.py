"""The one hook point for tracing, and the trace carrier stored in front of a payload.

Pure: no Redis and no OpenTelemetry. ``vermilion.otel`` installs a hook here;
until it does, ``hook`` is ``None`` and producers and workers pay one global
read per enqueue or message. The carrier codec lives here, not in
``vermilion.otel``, because every reader of payloads must strip a carrier,
with or without OpenTelemetry installed: a traced producer and an untraced
worker interoperate.

Carrier layout (see ``docs/redis-layout.md``)::

    0xC1 | version 0x01 | length (2 bytes, big-endian) | carrier text | serialized content

0xC1 is never the first byte of msgpack (the format leaves it unused) nor of
UTF-8 text, so no built-in serializer's output can be mistaken for a carrier.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._exceptions import SerializationError

if TYPE_CHECKING:
    from ._messages import Outcome
    from ._queue import Queue
    from ._wire import Leased

__all__ = [
    "CARRIER_MARK",
    "MAX_CARRIER_BYTES",
    "Sender",
    "TracingHook",
    "carrier_text",
    "escape",
    "split_carrier",
    "with_carrier",
]

CARRIER_MARK = b"\xc1"
_VERSION = 1
_HEADER_BYTES = 4
MAX_CARRIER_BYTES = 0xFFFF
"""The carrier text's length is stored in two bytes."""
_EMPTY_CARRIER = CARRIER_MARK + bytes((_VERSION, 0, 0))

Sender = Callable[[list[tuple[str, bytes]]], Awaitable[list[str]]]


class TracingHook(Protocol):
    """What the core calls when tracing is on (``vermilion.otel`` implements it)."""

    async def send(
        self, queue: Queue, messages: list[tuple[str, bytes]], batch: bool, send: Sender
    ) -> list[str]:
        """Send ``messages`` (mid, payload) through ``send``, each payload given a carrier."""
        ...

    def begin(self, queue: Queue, leased: Leased) -> Any:
        """Start tracing the handling of ``leased``, in the handler's task; returns what
        :meth:`end` needs. Synchronous, as :meth:`end` is: no coroutine per message."""
        ...

    def end(self, state: Any, outcome: Outcome | None, raised: BaseException | None) -> None:
        """The handling that :meth:`begin` started ended with ``outcome``, or ``raised``
        (the worker stopping, the process ending)."""
        ...

    def exception(self, exc: BaseException) -> None:
        """Note that the handler being processed raised ``exc``."""
        ...


hook: TracingHook | None = None
"""Set by ``vermilion.otel.instrument``; ``None`` means no tracing and no cost."""


def with_carrier(text: bytes, payload: bytes) -> bytes:
    """An encoded ``payload`` behind a carrier holding ``text``, replacing the empty
    carrier that escapes a serializer's output starting with the mark."""
    if len(text) > MAX_CARRIER_BYTES:
        raise ValueError(f"trace carrier is {len(text)} bytes; at most {MAX_CARRIER_BYTES} fit")
    if payload[:1] == CARRIER_MARK:
        payload = split_carrier(payload)[1]
    return CARRIER_MARK + bytes((_VERSION, len(text) >> 8, len(text) & 0xFF)) + text + payload


def escape(serialized: bytes) -> bytes:
    """A serializer's output that starts with the mark, behind an empty carrier so
    that readers, stripping it, get the output back intact."""
    return _EMPTY_CARRIER + serialized


def split_carrier(data: bytes) -> tuple[bytes, bytes]:
    """(carrier text, serialized content) of stored bytes; (``b""``, data) without a carrier."""
    if data[:1] != CARRIER_MARK:
        return b"", data
    if len(data) < _HEADER_BYTES:
        raise SerializationError("stored payload has a truncated trace carrier")
    if data[1] != _VERSION:
        raise SerializationError(f"stored payload has a trace carrier of unknown version {data[1]}")
    end = _HEADER_BYTES + (data[2] << 8 | data[3])
    if len(data) < end:
        raise SerializationError("stored payload has a truncated trace carrier")
    return data[_HEADER_BYTES:end], data[end:]


def carrier_text(data: bytes) -> bytes:
    """The carrier text of stored bytes, ``b""`` if they have none or a broken one."""
    try:
        return split_carrier(data)[0]
    except SerializationError:
        return b""
