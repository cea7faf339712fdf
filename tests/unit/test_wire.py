"""The wire format and the error mapping, without a server: what vermilion packs and parses."""

from __future__ import annotations

import re
import ssl

import pytest
import redis.exceptions as redis_errors

from vermilion import ConfigurationError, ProtocolError, ScriptError, VermilionConnectionError
from vermilion._error_mapping import is_tls_failure, translated
from vermilion._wire import (
    DEFAULT_ENQUEUE_OPTIONS,
    EnqueueOptions,
    OutcomeRequest,
    ack_argv,
    mid_arg,
    mid_text,
    pack_command,
    pack_messages,
    parse_content,
    parse_counts,
    parse_dequeue,
)


def test_a_command_is_packed_as_redis_reads_it() -> None:
    """An array of bulk strings, with byte lengths (not character counts) for text."""
    assert pack_command([b"SET", "k\u00e9", 42]) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n42\r\n"


def test_an_argument_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match="cannot send a float"):
        pack_command([1.5])  # type: ignore[list-item]


def test_enqueue_options_pack_their_flags_and_the_default_is_packed_once() -> None:
    options = EnqueueOptions(delay_ms=5, lock_ms=700, can_update=True, reset_delay=True)
    assert options.argv() == (5, 700, 1 | 4)
    assert EnqueueOptions(can_requeue=True).argv() == (0, "", 2)
    assert DEFAULT_ENQUEUE_OPTIONS.packed_argv == b"$1\r\n0\r\n$0\r\n\r\n$1\r\n0\r\n"
    assert DEFAULT_ENQUEUE_OPTIONS.packed_argv is DEFAULT_ENQUEUE_OPTIONS.packed_argv


def test_messages_are_packed_as_mid_payload_pairs() -> None:
    assert pack_messages([("a", b"xy"), ("b", b"")]) == b"$1\r\na\r\n$2\r\nxy\r\n$1\r\nb\r\n$0\r\n\r\n"


def test_a_dequeue_reply_is_parsed_into_leased_messages() -> None:
    reply = [b"1000", 3, -1, 2, 1, b"m1", b"p1", 1, 30000, 990, 7, 0, b"m2", b"p2", 2, 500, 900, 8, 1]
    parsed = parse_dequeue(reply)
    assert (parsed.now_ms, parsed.ready, parsed.next_due_ms, parsed.reclaimed) == (1000, 3, None, 2)
    assert parsed.suspects_held_back == 1
    assert [(m.mid, m.payload, m.attempt, m.token, m.suspect) for m in parsed.messages] == [
        ("m1", b"p1", 1, 7, False),
        ("m2", b"p2", 2, 8, True),
    ]
    assert parse_dequeue([1, 0, 5000, 0, 0]).next_due_ms == 5000


@pytest.mark.parametrize("reply", [[], [1, 2, 3, 4], [1, 0, -1, 0, 0, b"m"], [1, 0, b"soon", 0, 0]], ids=str)
def test_a_dequeue_reply_of_another_shape_is_a_protocol_error(reply: list[object]) -> None:
    with pytest.raises(ProtocolError):
        parse_dequeue(reply)


def test_a_mid_that_is_not_utf8_keeps_its_bytes_both_ways() -> None:
    raw = b"bad-\xff"
    assert mid_arg(mid_text(raw)) == raw


def test_ack_arguments_put_the_failure_reasons_last() -> None:
    outcomes = [
        OutcomeRequest("a", 1, "s"),
        OutcomeRequest("b", 2, "r", backoff_ms=250),
        OutcomeRequest("c", 3, "f", reason="boom"),
    ]
    assert ack_argv(outcomes, 100, 4096) == [
        100,
        4096,
        3,
        b"a",
        1,
        "s",
        b"b",
        2,
        "r250",
        b"c",
        3,
        "f",
        "boom",
    ]


def test_counts_and_content_replies_are_parsed() -> None:
    counts = parse_counts([1, 2, 3, 4, 5, 600, 7])
    assert (counts.nqueued, counts.nfailed, counts.lag_ms, counts.nfailed_dropped) == (1, 5, 600, 7)
    now_ms, entries = parse_content(
        [5000, b"m", b"failed", 2, 100, -1, 0, b"", b"why", b"n", b"queued", 1, 200, 900, 1, b"x", b""]
    )
    assert now_ms == 5000
    assert [(e.mid, e.status, e.enqueued_ms, e.backoff_end_ms, e.payload, e.error) for e in entries] == [
        ("m", "failed", 100, None, None, "why"),
        ("n", "queued", 200, 900, b"x", None),
    ]


@pytest.mark.parametrize(
    ("error", "expected", "text"),
    [
        (redis_errors.AuthenticationError("bad"), ConfigurationError, "credentials"),
        (redis_errors.BusyLoadingError("loading"), VermilionConnectionError, "LOADING"),
        (redis_errors.ConnectionError("gone"), VermilionConnectionError, "connection failed"),
        (ConnectionResetError("reset"), VermilionConnectionError, "connection failed"),
        (redis_errors.OutOfMemoryError("full"), ScriptError, "OOM"),
        (redis_errors.ReadOnlyError("replica"), ScriptError, "READONLY"),
        (redis_errors.ResponseError("VERMILION bad seq script: x"), ScriptError, "^bad seq$"),
        (redis_errors.DataError("odd"), ProtocolError, "client error"),
    ],
)
def test_redis_errors_become_vermilions_with_their_code(
    error: BaseException, expected: type[BaseException], text: str
) -> None:
    mapped = translated(error)
    assert isinstance(mapped, expected)
    assert re.search(text, str(mapped)), str(mapped)


def test_an_error_of_another_kind_is_left_as_it_is() -> None:
    error = KeyError("x")
    assert translated(error) is error


def test_a_tls_failure_is_found_in_the_cause_chain() -> None:
    outer = VermilionConnectionError("failed")
    outer.__cause__ = redis_errors.ConnectionError("wrapped")
    outer.__cause__.__cause__ = ssl.SSLError("certificate verify failed")
    assert is_tls_failure(outer)
    assert not is_tls_failure(VermilionConnectionError("refused"))
