"""Argument checks shared by the public API (pure: no I/O)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

QUEUE_NAME_MAX_LENGTH = 200
MID_MAX_BYTES = 1024
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]+")

# Redis sorted-set scores are doubles and ms timestamps must stay exact; ten
# years is far beyond any sensible delay or lease and keeps every sum exact.
MAX_DURATION_SECONDS = 10 * 365 * 24 * 3600.0


def check_queue_name(name: object) -> str:
    """Return ``name`` if it is a valid queue name, else raise.

    Names become part of Redis keys inside a Cluster hash tag, and the glob
    pattern of ``queue_names``: braces would break the tag, glob characters
    would make patterns match other queues.
    """
    if not isinstance(name, str):
        raise TypeError(f"queue name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("queue name must not be empty")
    if len(name) > QUEUE_NAME_MAX_LENGTH:
        raise ValueError(
            f"queue name is {len(name)} characters long; at most {QUEUE_NAME_MAX_LENGTH} allowed"
        )
    if not _QUEUE_NAME.fullmatch(name):
        raise ValueError(f"queue name {name!r} may only hold letters, digits and the characters _ . : -")
    return name


def check_mid(mid: object, argument: str = "mid") -> str:
    """Return ``mid`` if it is a valid message id, else raise."""
    if not isinstance(mid, str):
        raise TypeError(f"{argument} must be a str, not {type(mid).__name__}")
    if not mid:
        raise ValueError(f"{argument} must not be empty")
    try:
        size = len(mid.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{argument} must be valid Unicode text (no lone surrogates)") from None
    if size > MID_MAX_BYTES:
        raise ValueError(f"{argument} is {size} bytes long; at most {MID_MAX_BYTES} allowed")
    return mid


def batch(values: object, argument: str) -> list[Any]:
    """``values`` as a list, refusing what iterates but is surely not a batch.

    A str or bytes iterates over its characters or byte values, a dict over
    its keys: taken as a batch, each would become many wrong messages.
    """
    if isinstance(values, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            f"{argument} must be an iterable of items, not a {type(values).__name__} "
            f"(which would be taken item by item): wrap it in a list"
        )
    if isinstance(values, Mapping):
        raise TypeError(
            f"{argument} must be an iterable of items, not a mapping: pass its values() or items()"
        )
    try:
        items = iter(values)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{argument} must be an iterable, not {type(values).__name__}") from None
    return list(items)


def seconds(value: object, argument: str, *, allow_zero: bool = True) -> float:
    """Convert a duration (seconds as ``float``/``int``, or ``timedelta``) to seconds."""
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            result = float(value)
        except OverflowError:
            raise ValueError(f"{argument} must be at most ten years, got {value} s") from None
    else:
        raise TypeError(f"{argument} must be a number of seconds or a timedelta, not {type(value).__name__}")
    if math.isnan(result) or math.isinf(result):
        raise ValueError(f"{argument} must be finite, got {result}")
    if result < 0:
        raise ValueError(f"{argument} must not be negative, got {result}")
    if not allow_zero and result == 0:
        raise ValueError(f"{argument} must be greater than zero")
    if result > MAX_DURATION_SECONDS:
        raise ValueError(f"{argument} must be at most ten years, got {result} s")
    return result


def to_ms(value: float) -> int:
    """Seconds to whole milliseconds, rounding up so a positive duration never becomes 0."""
    return math.ceil(value * 1000)


def positive_int(value: object, argument: str, *, maximum: int | None = None) -> int:
    return _int_at_least(1, value, argument, maximum)


def non_negative_int(value: object, argument: str, *, maximum: int | None = None) -> int:
    return _int_at_least(0, value, argument, maximum)


def _int_at_least(minimum: int, value: object, argument: str, maximum: int | None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{argument} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{argument} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{argument} must be at most {maximum}, got {value}")
    return value
