"""The trace carrier in front of a stored payload: its layout, stripping, and escaping."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, strategies as st

from vermilion import JsonSerializer, MsgpackSerializer, Queue, SerializationError, otel
from vermilion._serialization import decode_payload, encode_content, encode_contents
from vermilion._tracing import (
    CARRIER_MARK,
    MAX_CARRIER_BYTES,
    carrier_text,
    escape,
    split_carrier,
    with_carrier,
)
from vermilion.otel import _parse_carrier

TRACEPARENT = b"traceparent:00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_layout_is_mark_version_length_text_payload() -> None:
    stored = with_carrier(b"abc", b"\x92\x01\x02")
    assert stored == b"\xc1\x01\x00\x03abc\x92\x01\x02"
    assert split_carrier(stored) == (b"abc", b"\x92\x01\x02")


def test_bytes_without_the_mark_have_no_carrier() -> None:
    assert split_carrier(b"\x92\x01\x02") == (b"", b"\x92\x01\x02")
    assert split_carrier(b"") == (b"", b"")


def test_a_payload_keeps_one_carrier() -> None:
    """Giving a payload that has a carrier (an escaped one) a new carrier replaces it."""
    escaped = escape(b"\xc1raw")
    assert split_carrier(escaped) == (b"", b"\xc1raw")
    stored = with_carrier(TRACEPARENT, escaped)
    assert split_carrier(stored) == (TRACEPARENT, b"\xc1raw")


def test_the_longest_carrier_fits_and_a_longer_one_is_refused() -> None:
    text = b"k:" + b"v" * (MAX_CARRIER_BYTES - 2)
    assert split_carrier(with_carrier(text, b"p")) == (text, b"p")
    with pytest.raises(ValueError, match="at most 65535"):
        with_carrier(text + b"v", b"p")


@pytest.mark.parametrize(
    ("stored", "error"),
    [
        (b"\xc1", "truncated"),
        (b"\xc1\x01\x00", "truncated"),
        (b"\xc1\x01\x00\x05abc", "truncated"),
        (b"\xc1\x02\x00\x00payload", "unknown version 2"),
    ],
)
def test_broken_carriers_are_undecodable(stored: bytes, error: str) -> None:
    with pytest.raises(SerializationError, match=error):
        split_carrier(stored)
    with pytest.raises(SerializationError, match=error):
        decode_payload(MsgpackSerializer(), stored, 1000)
    assert carrier_text(stored) == b""


@pytest.mark.parametrize("serializer", [MsgpackSerializer(), JsonSerializer()])
def test_decode_payload_strips_the_carrier(serializer: Any) -> None:
    payload = serializer.dumps({"a": [1, 2]})
    assert decode_payload(serializer, with_carrier(TRACEPARENT, payload), len(payload)) == {"a": [1, 2]}


def test_max_payload_bytes_bounds_the_content_not_the_carrier() -> None:
    serializer = MsgpackSerializer()
    payload = serializer.dumps("x" * 50)
    assert decode_payload(serializer, with_carrier(TRACEPARENT, payload), len(payload)) == "x" * 50
    with pytest.raises(SerializationError, match=f"is {len(payload)} bytes"):
        decode_payload(serializer, with_carrier(TRACEPARENT, payload), len(payload) - 1)


class RawBytes:
    """A user's serializer that stores bytes as they are: it may start with 0xC1."""

    def dumps(self, content: Any, /) -> bytes:
        return bytes(content)

    def loads(self, data: bytes, /) -> Any:
        return data


def test_a_users_serializer_writing_the_mark_is_escaped() -> None:
    """Output starting with 0xC1 is stored behind an empty carrier, so it reads back intact."""
    raw = b"\xc1\x01\x00\x00looks like a carrier"
    stored = encode_content(RawBytes(), raw, len(raw), "content")
    assert stored == escape(raw)
    assert decode_payload(RawBytes(), stored, len(raw)) == raw
    assert encode_contents(RawBytes(), [b"plain", raw], 100, "contents") == [b"plain", stored]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@given(json_values)
def test_builtin_serializers_never_start_with_the_mark(value: Any) -> None:
    assert MsgpackSerializer().dumps(value)[:1] != CARRIER_MARK
    assert JsonSerializer().dumps(value)[:1] != CARRIER_MARK


def test_carrier_text_is_parsed_into_headers() -> None:
    text = TRACEPARENT + b"\ntracestate:a=1,b=2:3\nnot a header\nbaggage:k=v"
    assert _parse_carrier(text) == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "a=1,b=2:3",
        "baggage": "k=v",
    }


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("redis://cache.internal:6380/2", {"server.address": "cache.internal", "server.port": 6380}),
        ("unix:///run/redis.sock", {"server.address": "/run/redis.sock"}),
    ],
)
async def test_spans_name_the_server(url: str, server: dict[str, object]) -> None:
    """server.address and server.port come from the queue's client (no connection is made)."""
    async with Queue("q", url) as queue:
        assert otel._queue_attributes(queue) == {
            "messaging.system": "vermilion",
            "messaging.destination.name": "q",
            **server,
        }
