"""Serializers and the payload size cap (pure, no Redis)."""

from __future__ import annotations

import concurrent.futures
import copy
import math
import pickle
from datetime import date, datetime, timedelta, timezone
from typing import Any

import msgpack
import pytest
from hypothesis import given, strategies as st

from vermilion import JsonSerializer, MsgpackSerializer, SerializationError, Serializer, VermilionError
from vermilion._serialization import DEFAULT_MAX_PAYLOAD_BYTES, decode_payload, encode_content

PLUS_TWO = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xffraw",
        b"",
        "text \u00e9\u4e2d\U0001f600",
        "",
        0,
        -(2**63),
        2**64 - 1,
        3.25,
        -0.0,
        True,
        False,
        None,
        [1, "two", [3.0, None], {"four": 4}],
        [],
        {"to": "a@b.c", "n": 1, "nested": {"list": [1, 2]}},
        {},
        {1: "one", 2: "two", -3: [3]},
        {1.5: "float key", True: "bool key"},
    ],
    ids=[
        "bytes",
        "empty-bytes",
        "str-unicode",
        "empty-str",
        "zero",
        "int64-min",
        "uint64-max",
        "float",
        "negative-zero",
        "true",
        "false",
        "none",
        "nested-list",
        "empty-list",
        "dict",
        "empty-dict",
        "int-keys",
        "scalar-keys",
    ],
)
def test_msgpack_round_trips_plain_values(content: Any) -> None:
    """msgpack returns an equal value of the same type for plain data."""
    serializer = MsgpackSerializer()
    data = serializer.dumps(content)
    assert isinstance(data, bytes)
    back = serializer.loads(data)
    assert back == content
    assert type(back) is type(content)
    if isinstance(content, dict):
        assert [type(key) for key in back] == [type(key) for key in content]


def test_msgpack_keeps_bools_distinct_from_ints() -> None:
    """True and 1 come back as a bool and an int, not both as ints."""
    back = MsgpackSerializer().loads(MsgpackSerializer().dumps([True, 1, False, 0]))
    assert [type(item) for item in back] == [bool, int, bool, int]


def test_msgpack_keeps_float_precision() -> None:
    """Floats are stored as doubles, not truncated to single precision."""
    value = 0.1 + 0.2
    assert MsgpackSerializer().loads(MsgpackSerializer().dumps(value)) == value


def test_msgpack_turns_tuples_into_lists() -> None:
    """Tuples come back as lists (documented)."""
    assert MsgpackSerializer().loads(MsgpackSerializer().dumps((1, (2, 3)))) == [1, [2, 3]]


def test_msgpack_reads_back_tuple_keys_as_tuples() -> None:
    """A tuple dict key, which msgpack stores as an array, comes back a tuple; arrays elsewhere
    in the same content still come back as lists."""
    content = {(1, (2, "x")): [3, (4, 5)], "plain": {(6,): ()}}
    back = MsgpackSerializer().loads(MsgpackSerializer().dumps(content))
    assert back == {(1, (2, "x")): [3, [4, 5]], "plain": {(6,): []}}
    assert type(back["plain"][(6,)]) is list


def as_msgpack_returns(value: Any) -> Any:
    """``value`` as msgpack gives it back: tuples become lists, except inside dict keys."""
    if isinstance(value, (list, tuple)):
        return [as_msgpack_returns(item) for item in value]
    if isinstance(value, dict):
        return {key: as_msgpack_returns(item) for key, item in value.items()}
    return value


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
hashables = st.recursive(scalars, lambda inner: st.tuples(inner, inner) | st.tuples(inner), max_leaves=6)
contents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(hashables, inner, max_size=4)
    ),
    max_leaves=20,
)


@given(contents)
def test_msgpack_reads_back_everything_it_accepts(content: Any) -> None:
    """Whatever dumps accepts, loads reads back: nothing is let in that a worker would have to
    fail as undecodable."""
    serializer = MsgpackSerializer()
    try:
        data = serializer.dumps(content)
    except (TypeError, ValueError, OverflowError):
        return  # refused at enqueue: fine
    assert serializer.loads(data) == as_msgpack_returns(content)


@pytest.mark.parametrize(
    "value",
    [datetime(2024, 2, 29, 13, 45, 7, 123456), datetime(1969, 7, 20, 20, 17), datetime(9999, 12, 31, 23, 59)],
    ids=["with-microseconds", "before-epoch", "far-future"],
)
def test_msgpack_round_trips_naive_datetimes(value: datetime) -> None:
    """A naive datetime comes back naive and equal."""
    back = MsgpackSerializer().loads(MsgpackSerializer().dumps({"at": value}))["at"]
    assert isinstance(back, datetime)
    assert back.tzinfo is None
    assert back == value


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 2, 29, 13, 45, 7, 123456, tzinfo=timezone.utc),
        datetime(2024, 2, 29, 13, 45, 7, 654321, tzinfo=PLUS_TWO),
        datetime(1960, 1, 1, tzinfo=timezone.utc),
    ],
    ids=["utc", "plus-two-hours", "before-epoch"],
)
def test_msgpack_round_trips_aware_datetimes_as_the_same_instant(value: datetime) -> None:
    """An aware datetime comes back aware, in UTC, at the same instant (microseconds kept)."""
    back = MsgpackSerializer().loads(MsgpackSerializer().dumps(value))
    assert isinstance(back, datetime)
    assert back.utcoffset() == timedelta(0)
    assert back == value
    assert back.microsecond == value.microsecond


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb({"x": msgpack.ExtType(0, b"payload")}),
        msgpack.packb({"x": msgpack.ExtType(2, b"payload")}),
        msgpack.packb([msgpack.ExtType(127, b"")]),
        b"\xd4\xfe\x00",  # fixext 1 with the reserved type -2
    ],
    ids=["zero", "two", "max", "reserved-negative"],
)
def test_msgpack_refuses_unknown_extension_types(data: bytes) -> None:
    """Extension types other than the two datetime encodings are refused when decoding."""
    with pytest.raises(ValueError, match="extension type"):
        MsgpackSerializer().loads(data)
    with pytest.raises(SerializationError, match="cannot be decoded"):
        decode_payload(MsgpackSerializer(), data, DEFAULT_MAX_PAYLOAD_BYTES)


class _Opaque:
    pass


@pytest.mark.parametrize(
    "content",
    [{1, 2}, frozenset({1}), _Opaque(), date(2024, 1, 1), 1 + 2j, {"nested": [{"bad": {3}}]}, 2**64],
    ids=["set", "frozenset", "object", "date", "complex", "nested-set", "int-too-large"],
)
def test_msgpack_refuses_what_it_cannot_encode(content: Any) -> None:
    """encode_content turns msgpack's refusal into a SerializationError naming the argument."""
    with pytest.raises(SerializationError, match=r"^content cannot be serialized"):
        encode_content(MsgpackSerializer(), content, DEFAULT_MAX_PAYLOAD_BYTES, "content")


@pytest.mark.parametrize(
    "content",
    [{"to": "a@b.c", "n": [1, 2.5, None, True]}, ["x"], "caf\u00e9", 12, None, False],
    ids=["dict", "list", "unicode-str", "int", "none", "false"],
)
def test_json_round_trips_json_values(content: Any) -> None:
    """JsonSerializer returns an equal value for JSON data."""
    serializer = JsonSerializer()
    back = serializer.loads(serializer.dumps(content))
    assert back == content
    assert type(back) is type(content)


def test_json_writes_compact_utf8() -> None:
    """JsonSerializer writes compact UTF-8, not ASCII escapes."""
    assert JsonSerializer().dumps({"a": "\u00e9", "b": [1, 2]}) == '{"a":"\u00e9","b":[1,2]}'.encode()


@pytest.mark.parametrize(
    "content",
    [math.nan, math.inf, {1, 2}, b"bytes", _Opaque()],
    ids=["nan", "inf", "set", "bytes", "object"],
)
def test_json_refuses_what_json_cannot_hold(content: Any) -> None:
    """JSON refuses NaN, sets, bytes and objects with a SerializationError."""
    with pytest.raises(SerializationError, match=r"contents\[2\] cannot be serialized"):
        encode_content(JsonSerializer(), content, DEFAULT_MAX_PAYLOAD_BYTES, "contents[2]")


def test_encode_content_enforces_max_size_inclusively() -> None:
    """A payload of exactly max_bytes passes; one byte more raises ValueError naming the cap."""
    serializer = MsgpackSerializer()
    exact = serializer.dumps(b"x" * 100)
    assert encode_content(serializer, b"x" * 100, len(exact), "content") == exact
    with pytest.raises(ValueError, match=r"content is \d+ bytes serialized; max_payload_bytes is"):
        encode_content(serializer, b"x" * 101, len(exact), "content")


def test_encode_content_refuses_a_serializer_that_returns_str() -> None:
    """A serializer that does not return bytes is refused with a SerializationError."""

    class Textual:
        def dumps(self, content: Any, /) -> bytes:
            return str(content)  # type: ignore[return-value]

        def loads(self, data: bytes, /) -> Any:
            return data.decode()

    with pytest.raises(SerializationError, match="serializer returned str, not bytes"):
        encode_content(Textual(), 1, 100, "content")


def test_decode_payload_refuses_oversized_data_before_decoding() -> None:
    """Stored bytes larger than the cap are refused without calling the serializer."""
    calls: list[bytes] = []

    class Recording(MsgpackSerializer):
        def loads(self, data: bytes, /) -> Any:
            calls.append(data)
            return super().loads(data)

    data = MsgpackSerializer().dumps("y" * 50)
    assert decode_payload(Recording(), data, len(data)) == "y" * 50
    with pytest.raises(SerializationError, match="max_payload_bytes"):
        decode_payload(Recording(), data, len(data) - 1)
    assert calls == [data]


@pytest.mark.parametrize(
    ("serializer", "data"),
    [
        (MsgpackSerializer(), b"\x91\xc1"),  # a leading 0xC1 is a trace carrier
        (MsgpackSerializer(), b"\x92\x01"),
        (MsgpackSerializer(), b"\x01\x02"),
        (JsonSerializer(), b"{"),
        (JsonSerializer(), b"\xff\xfe"),
    ],
    ids=[
        "msgpack-reserved-byte",
        "msgpack-truncated",
        "msgpack-extra-data",
        "json-truncated",
        "json-not-utf8",
    ],
)
def test_decode_payload_wraps_decoder_errors(serializer: Serializer, data: bytes) -> None:
    """Any decoder failure becomes a SerializationError."""
    with pytest.raises(SerializationError, match="cannot be decoded"):
        decode_payload(serializer, data, DEFAULT_MAX_PAYLOAD_BYTES)


def test_serializers_satisfy_the_protocol() -> None:
    """Both built-in serializers are Serializers; an object without dumps/loads is not."""
    assert isinstance(MsgpackSerializer(), Serializer)
    assert isinstance(JsonSerializer(), Serializer)
    assert not isinstance(object(), Serializer)
    assert repr(MsgpackSerializer()) == "MsgpackSerializer()"
    assert repr(JsonSerializer()) == "JsonSerializer()"


def test_serialization_error_is_a_value_error_and_a_vermilion_error() -> None:
    """SerializationError can be caught as ValueError or as VermilionError."""
    assert issubclass(SerializationError, ValueError)
    assert issubclass(SerializationError, VermilionError)


def test_default_cap_is_16_mib() -> None:
    """The documented default payload cap is 16 MiB."""
    assert DEFAULT_MAX_PAYLOAD_BYTES == 16 * 1024 * 1024


def test_msgpack_packs_correctly_after_a_refused_content() -> None:
    """The serializer reuses its packer: a content refused half-way leaves nothing behind."""
    serializer = MsgpackSerializer()
    with pytest.raises(TypeError):
        serializer.dumps({"ok": [1, 2, 3], "bad": object()})
    assert serializer.dumps({"b": 1}) == msgpack.packb({"b": 1})


def test_msgpack_serializer_is_safe_across_threads() -> None:
    """Each thread packs with a packer of its own: contents never mix."""
    serializer = MsgpackSerializer()

    def pack_many(worker: int) -> list[bytes]:
        return [serializer.dumps({"worker": worker, "i": i, "s": "x" * (i % 50)}) for i in range(2_000)]

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(pack_many, range(4)))
    for worker, packed in enumerate(results):
        assert [serializer.loads(data) for data in packed] == [
            {"worker": worker, "i": i, "s": "x" * (i % 50)} for i in range(2_000)
        ]


def test_msgpack_serializer_pickles_and_copies() -> None:
    """A serializer can be pickled and deep-copied (as a fresh instance), as before it kept packers."""
    serializer = MsgpackSerializer()
    serializer.dumps(1)
    for clone in (pickle.loads(pickle.dumps(serializer)), copy.deepcopy(serializer), copy.copy(serializer)):
        assert isinstance(clone, MsgpackSerializer)
        assert clone.loads(clone.dumps({"a": [1, 2]})) == {"a": [1, 2]}
