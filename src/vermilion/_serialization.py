"""How message content becomes bytes in Redis, and back.

Pure module: no Redis. msgpack is the default; JSON is included; any object
with ``dumps``/``loads`` can serve. pickle is never used: stored bytes are
untrusted input to the worker, and unpickling runs code.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any, NoReturn, Protocol, runtime_checkable

import msgpack

from ._exceptions import SerializationError

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "JsonSerializer",
    "MsgpackSerializer",
    "Serializer",
    "decode_or_raw",
    "decode_payload",
    "encode_content",
    "encode_contents",
]

DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
"""16 MiB. Redis accepts 512 MiB per value; large payloads belong elsewhere."""

# msgpack extension code for naive datetimes (aware ones use the standard
# timestamp extension, -1). Any other code found when decoding is refused.
_NAIVE_DATETIME = 1


@runtime_checkable
class Serializer(Protocol):
    """Turns content into bytes and back. Producers and workers must agree."""

    def dumps(self, content: Any, /) -> bytes:
        """Serialize ``content``; raise ``TypeError`` or ``ValueError`` if it cannot be."""
        ...

    def loads(self, data: bytes, /) -> Any:
        """Deserialize ``data``; raise ``ValueError`` if it is not valid."""
        ...


def _msgpack_default(obj: object) -> object:
    if isinstance(obj, int):  # msgpack asks only for ints it cannot pack
        raise OverflowError(f"integer {obj} is outside msgpack's 64-bit range")
    if isinstance(obj, datetime):
        if obj.tzinfo is None:
            return msgpack.ExtType(_NAIVE_DATETIME, obj.isoformat().encode("ascii"))
        return msgpack.Timestamp.from_datetime(obj)
    raise TypeError(f"msgpack cannot serialize an object of type {type(obj).__name__}")


def _msgpack_ext_hook(code: int, data: bytes) -> object:
    if code == _NAIVE_DATETIME:
        return datetime.fromisoformat(data.decode("ascii"))
    raise ValueError(f"unknown msgpack extension type {code}")


def _unpack(data: bytes, *, use_list: bool) -> Any:
    return msgpack.unpackb(
        data, timestamp=3, ext_hook=_msgpack_ext_hook, strict_map_key=False, raw=False, use_list=use_list
    )


def _lists_outside_keys(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_lists_outside_keys(item) for item in value]
    if isinstance(value, dict):
        return {key: _lists_outside_keys(item) for key, item in value.items()}
    return value


class MsgpackSerializer:
    """msgpack: bytes, str, int, float, bool, None, lists, dicts and datetimes.

    Tuples come back as lists, except as dict keys, where they stay tuples.
    Aware datetimes come back in UTC (the same instant); naive ones come back
    naive. Dict keys may be any hashable value msgpack can pack.
    """

    def __init__(self) -> None:
        # A Packer per thread, reused: msgpack.packb makes a new one per call,
        # which cost more than packing a small message. Not shared between
        # threads, since a Packer keeps its buffer between calls.
        self._local = threading.local()

    def __reduce__(self) -> tuple[type[MsgpackSerializer], tuple[()]]:
        # Pickled and copied as a new instance: its packers belong to their threads.
        return (MsgpackSerializer, ())

    def dumps(self, content: Any, /) -> bytes:
        """Serialize ``content`` to msgpack bytes."""
        packer = getattr(self._local, "packer", None)
        if packer is None:
            packer = self._local.packer = msgpack.Packer(default=_msgpack_default, datetime=False)
        data: bytes = packer.pack(content)
        return data

    def loads(self, data: bytes, /) -> Any:
        """Deserialize msgpack bytes; unknown extension types are refused."""
        try:
            return _unpack(data, use_list=True)
        except TypeError:
            # A tuple dict key comes back as a list, which cannot be a key:
            # read arrays as tuples, so keys are hashable, then make the
            # arrays that are not keys lists again. Paid only by such content.
            return _lists_outside_keys(_unpack(data, use_list=False))

    def __repr__(self) -> str:
        return "MsgpackSerializer()"


class JsonSerializer:
    """JSON (UTF-8): str, int, float, bool, None, lists and dicts with str keys."""

    def dumps(self, content: Any, /) -> bytes:
        """Serialize ``content`` to compact UTF-8 JSON (NaN and infinities refused)."""
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

    def loads(self, data: bytes, /) -> Any:
        """Deserialize UTF-8 JSON bytes."""
        return json.loads(data)

    def __repr__(self) -> str:
        return "JsonSerializer()"


def encode_content(serializer: Serializer, content: Any, max_bytes: int, argument: str) -> bytes:
    """Serialize ``content``, refusing what the serializer refuses or what is too large."""
    return encode_contents(serializer, [content], max_bytes, argument, indexed=False)[0]


def encode_contents(
    serializer: Serializer, contents: list[Any], max_bytes: int, argument: str, *, indexed: bool = True
) -> list[bytes]:
    """``encode_content`` for each of ``contents``; an error names ``argument[index]``."""
    dumps = serializer.dumps
    encoded: list[bytes] = []
    for content in contents:
        try:
            data: object = dumps(content)  # a user's serializer may return anything
        except (TypeError, ValueError, OverflowError) as exc:
            name = f"{argument}[{len(encoded)}]" if indexed else argument
            raise SerializationError(f"{name} cannot be serialized: {exc}") from exc
        if not isinstance(data, bytes) or len(data) > max_bytes:
            _refuse(data, max_bytes, f"{argument}[{len(encoded)}]" if indexed else argument)
        encoded.append(data)
    return encoded


def _refuse(data: object, max_bytes: int, name: str) -> NoReturn:
    if not isinstance(data, bytes):
        raise SerializationError(f"{name}: serializer returned {type(data).__name__}, not bytes")
    raise ValueError(f"{name} is {len(data)} bytes serialized; max_payload_bytes is {max_bytes}")


def decode_payload(serializer: Serializer, data: bytes, max_bytes: int) -> Any:
    """Deserialize stored bytes, which are untrusted: size-checked before decoding."""
    if len(data) > max_bytes:
        raise SerializationError(f"stored payload is {len(data)} bytes; max_payload_bytes is {max_bytes}")
    try:
        return serializer.loads(data)
    except Exception as exc:  # any decoder failure means the same thing: bad bytes
        raise SerializationError(f"stored payload cannot be decoded: {exc}") from exc


def decode_or_raw(serializer: Serializer, data: bytes | None, max_bytes: int) -> Any:
    """Stored bytes decoded for showing: the raw bytes if they cannot be, None for none."""
    if data is None:
        return None
    try:
        return decode_payload(serializer, data, max_bytes)
    except ValueError:
        return data
