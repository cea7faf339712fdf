"""The value types of the command line's options: each turns text into a value or a one-line reason.

An ``argparse.ArgumentTypeError`` raised here becomes a usage error (exit code
2) naming the option; the parser (:mod:`._parser`) uses them, and nothing
here knows of commands.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["duration", "int_at_least", "non_negative_int", "port", "positive_duration", "positive_int"]


def duration(text: str) -> float:
    """Seconds: a finite number, not negative."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite, non-negative number of seconds, got {text!r}")
    return value


def positive_duration(text: str) -> float:
    """Seconds above zero."""
    value = duration(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def int_at_least(minimum: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return int_at_least(1, text)


def non_negative_int(text: str) -> int:
    return int_at_least(0, text)


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, got {value}")
    return value
