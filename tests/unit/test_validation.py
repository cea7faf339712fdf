"""Argument checks of ``vermilion._validation`` (pure, no Redis)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from vermilion._validation import (
    MAX_DURATION_SECONDS,
    MID_MAX_BYTES,
    QUEUE_NAME_MAX_LENGTH,
    check_mid,
    check_queue_name,
    positive_int,
    seconds,
    to_ms,
)


@pytest.mark.parametrize(
    "name",
    ["q", "emails", "A-Z_a-z.0-9:x", "x" * QUEUE_NAME_MAX_LENGTH, "jobs:high-prio.v2"],
    ids=["one-char", "word", "every-allowed-class", "max-length", "realistic"],
)
def test_valid_queue_names_are_returned_unchanged(name: str) -> None:
    """A valid queue name is returned as given."""
    assert check_queue_name(name) == name


@pytest.mark.parametrize(
    ("name", "error"),
    [
        (None, TypeError),
        (42, TypeError),
        (b"emails", TypeError),
        ("", ValueError),
        ("x" * (QUEUE_NAME_MAX_LENGTH + 1), ValueError),
        ("a{b", ValueError),
        ("a}b", ValueError),
        ("a*", ValueError),
        ("a?", ValueError),
        ("a[b]", ValueError),
        ("a b", ValueError),
        ("a/b", ValueError),
        ("caf\u00e9", ValueError),
        ("a\n", ValueError),
    ],
    ids=[
        "none",
        "int",
        "bytes",
        "empty",
        "too-long",
        "open-brace",
        "close-brace",
        "star",
        "question-mark",
        "bracket",
        "space",
        "slash",
        "non-ascii",
        "trailing-newline",
    ],
)
def test_invalid_queue_names_are_refused(name: object, error: type[Exception]) -> None:
    """An invalid queue name raises TypeError/ValueError that says it is about the queue name."""
    with pytest.raises(error, match="queue name"):
        check_queue_name(name)


@pytest.mark.parametrize(
    "mid",
    ["m", "welcome:42", "x" * MID_MAX_BYTES, "\u00e9" * (MID_MAX_BYTES // 2), "{weird} *mid? [ok]"],
    ids=["one-char", "realistic", "max-ascii", "max-utf8", "glob-and-brace-chars"],
)
def test_valid_mids_are_returned_unchanged(mid: str) -> None:
    """A valid message id (up to 1 KiB of UTF-8, any characters) is returned as given."""
    assert check_mid(mid) == mid


@pytest.mark.parametrize(
    ("mid", "error"),
    [
        (None, TypeError),
        (7, TypeError),
        (b"m", TypeError),
        ("", ValueError),
        ("x" * (MID_MAX_BYTES + 1), ValueError),
        ("\u00e9" * (MID_MAX_BYTES // 2 + 1), ValueError),
        ("a\ud800b", ValueError),
    ],
    ids=["none", "int", "bytes", "empty", "too-long-ascii", "too-long-utf8", "lone-surrogate"],
)
def test_invalid_mids_are_refused(mid: object, error: type[Exception]) -> None:
    """An invalid mid raises TypeError/ValueError naming the argument."""
    with pytest.raises(error, match="mid"):
        check_mid(mid)


def test_check_mid_names_the_given_argument() -> None:
    """check_mid puts the caller's argument name in its message."""
    with pytest.raises(ValueError, match=r"mids\[3\]"):
        check_mid("", "mids[3]")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (1, 1.0),
        (0.25, 0.25),
        (timedelta(minutes=2), 120.0),
        (timedelta(milliseconds=5), 0.005),
        (MAX_DURATION_SECONDS, MAX_DURATION_SECONDS),
    ],
    ids=["zero", "int", "float", "timedelta-minutes", "timedelta-ms", "ten-years"],
)
def test_seconds_accepts_numbers_and_timedeltas(value: float | timedelta, expected: float) -> None:
    """seconds() turns ints, floats and timedeltas into float seconds."""
    result = seconds(value, "delay")
    assert result == pytest.approx(expected)
    assert type(result) is float


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (True, TypeError),
        ("1", TypeError),
        (None, TypeError),
        (-0.001, ValueError),
        (-1, ValueError),
        (timedelta(seconds=-1), ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-math.inf, ValueError),
        (MAX_DURATION_SECONDS + 1, ValueError),
        (10**400, ValueError),
    ],
    ids=[
        "bool",
        "str",
        "none",
        "small-negative",
        "negative",
        "negative-timedelta",
        "nan",
        "inf",
        "minus-inf",
        "over-ten-years",
        "huge-int",
    ],
)
def test_seconds_refuses_bad_durations(value: object, error: type[Exception]) -> None:
    """A duration that is not a finite, non-negative number of seconds is refused, naming the argument."""
    with pytest.raises(error, match="delay"):
        seconds(value, "delay")


def test_seconds_refuses_zero_when_not_allowed() -> None:
    """With allow_zero=False, zero is refused."""
    with pytest.raises(ValueError, match="lock_timeout must be greater than zero"):
        seconds(0, "lock_timeout", allow_zero=False)
    assert seconds(0.001, "lock_timeout", allow_zero=False) == 0.001


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, 0), (1.5, 1500), (0.0001, 1), (0.0015, 2), (2.0, 2000), (1e-9, 1)],
    ids=["zero", "exact", "tiny-rounds-up", "fraction-rounds-up", "whole", "nano"],
)
def test_to_ms_rounds_up_to_whole_milliseconds(value: float, expected: int) -> None:
    """to_ms never turns a positive duration into 0 ms."""
    assert to_ms(value) == expected


def test_positive_int_accepts_and_refuses() -> None:
    """positive_int accepts ints >= 1 (and <= maximum), refusing bools, non-ints and small values."""
    assert positive_int(1, "n") == 1
    assert positive_int(10, "n", maximum=10) == 10
    with pytest.raises(TypeError, match="n must be an int"):
        positive_int(True, "n")
    with pytest.raises(TypeError, match="n must be an int"):
        positive_int(1.0, "n")
    with pytest.raises(ValueError, match="n must be at least 1"):
        positive_int(0, "n")
    with pytest.raises(ValueError, match="n must be at most 10"):
        positive_int(11, "n", maximum=10)


def test_random_mids_are_distinct_short_url_safe_ids() -> None:
    """Random mids are 12 URL-safe base64 characters (72 random bits), all distinct.

    (v2: they were UUID strings; 12 characters fit Redis's smallest string allocation.)"""
    import re

    from vermilion._enqueue_args import random_mids

    mids = random_mids(10_000)
    assert len(set(mids)) == 10_000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{12}", mid) for mid in mids)
    # None starts with "-", which a command line reads as an option (1 in 64 did).
    assert not [mid for mid in mids if mid.startswith("-")]
    # Every character of the alphabet turns up: the bits are spread over all 12 places.
    assert len({c for mid in mids for c in mid}) == 64
    assert random_mids(0) == []
