"""Values that cross the public API: statuses, outcomes, results (pure, no Redis)."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta

import pytest

from vermilion import EnqueueResult, Failure, Message, MessageInfo, MessageStatus, QueueStatus, Retry, Success


def test_message_status_has_exactly_the_designed_values() -> None:
    """MessageStatus holds the seven Carmine statuses plus 'failed', as str values."""
    assert {status.value for status in MessageStatus} == {
        "queued",
        "queued-with-backoff",
        "locked",
        "locked-with-requeue",
        "done-awaiting-gc",
        "done-with-backoff",
        "done-with-requeue",
        "failed",
    }


@pytest.mark.parametrize("status", list(MessageStatus), ids=[status.value for status in MessageStatus])
def test_message_status_is_a_str_equal_to_its_value(status: MessageStatus) -> None:
    """Each status compares equal to, prints as, and parses from its wire string."""
    assert isinstance(status, str)
    assert status == status.value
    assert str(status) == status.value
    assert f"{status}" == status.value
    assert MessageStatus(status.value) is status


def test_message_status_refuses_unknown_strings() -> None:
    """An unknown status string is not a MessageStatus."""
    with pytest.raises(ValueError, match="unknown"):
        MessageStatus("unknown")


@pytest.mark.parametrize("outcome", [Success, Retry], ids=["success", "retry"])
@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        (None, None),
        (0, None),
        (0.0, None),
        (timedelta(0), None),
        (1.5, 1.5),
        (3, 3.0),
        (timedelta(seconds=2, milliseconds=500), 2.5),
    ],
    ids=["none", "zero-int", "zero-float", "zero-timedelta", "float", "int", "timedelta"],
)
def test_outcome_backoff_is_normalised_to_seconds(
    outcome: type[Success] | type[Retry], backoff: float | timedelta | None, expected: float | None
) -> None:
    """Success/Retry store their backoff as float seconds, with zero meaning no backoff."""
    assert outcome(backoff=backoff).backoff == expected


@pytest.mark.parametrize("outcome", [Success, Retry], ids=["success", "retry"])
@pytest.mark.parametrize(
    ("backoff", "error"),
    [(-1, ValueError), (math.nan, ValueError), (math.inf, ValueError), (True, TypeError), ("1", TypeError)],
    ids=["negative", "nan", "inf", "bool", "str"],
)
def test_outcome_backoff_refuses_bad_values(
    outcome: type[Success] | type[Retry], backoff: object, error: type[Exception]
) -> None:
    """A bad backoff raises TypeError/ValueError naming 'backoff'."""
    with pytest.raises(error, match="backoff"):
        outcome(backoff=backoff)  # type: ignore[arg-type]


def test_failure_reason_must_be_a_str() -> None:
    """Failure keeps a str reason (default empty) and refuses anything else."""
    assert Failure().reason == ""
    assert Failure("boom").reason == "boom"
    with pytest.raises(TypeError, match="reason must be a str, not int"):
        Failure(42)  # type: ignore[arg-type]


def test_outcomes_are_immutable_and_comparable() -> None:
    """Outcomes are frozen values that compare by content."""
    assert Success(2) == Success(timedelta(seconds=2))
    different: list[object] = [Retry(), Success()]
    assert different[0] != different[1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Success().backoff = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Failure().reason = "x"  # type: ignore[misc]


def test_enqueue_result_defaults() -> None:
    """EnqueueResult carries ok/mid and either an action or an error."""
    added = EnqueueResult(ok=True, mid="m", action="added")
    refused = EnqueueResult(ok=False, mid="m", error="locked")
    assert (added.action, added.error) == ("added", None)
    assert (refused.action, refused.error) == (None, "locked")
    with pytest.raises(dataclasses.FrozenInstanceError):
        added.ok = False  # type: ignore[misc]


def test_queue_status_fields() -> None:
    """QueueStatus exposes the documented counts and lag in order."""
    status = QueueStatus(nqueued=1, nlocked=2, nbackoff=3, ntotal=7, ndone=1, nfailed=4, lag=0.5)
    assert [field.name for field in dataclasses.fields(status)] == [
        "nqueued",
        "nlocked",
        "nbackoff",
        "ntotal",
        "ndone",
        "nfailed",
        "lag",
        "nfailed_dropped",
    ]
    assert dataclasses.astuple(status) == (1, 2, 3, 7, 1, 4, 0.5, 0)


def test_message_repr_hides_the_lease_token() -> None:
    """Message shows its content, mid and attempt but not its lease token."""
    message = Message(
        content={"a": 1}, mid="m1", queue="q", attempt=2, lock_timeout=30.0, age=0.25, lease_token=987654321
    )
    text = repr(message)
    assert "m1" in text
    assert "attempt=2" in text
    assert "987654321" not in text
    assert message.lease_token == 987654321
    assert Message(content=None, mid="m", queue="q", attempt=1, lock_timeout=1.0, age=0.0).lease_token == 0


def test_message_info_fields() -> None:
    """MessageInfo holds mid, status, attempts, age, backoff, content and error (None by default)."""
    info = MessageInfo(mid="m", status=MessageStatus.LOCKED, attempts=1, age=0.5, backoff=None, content=[1])
    assert [field.name for field in dataclasses.fields(info)] == [
        "mid",
        "status",
        "attempts",
        "age",
        "backoff",
        "content",
        "error",
    ]
    assert info.status == "locked"
    assert info.error is None
