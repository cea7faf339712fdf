"""Bad arguments raise TypeError/ValueError naming the argument, before anything reaches Redis."""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.conftest import QueueFactory
from tests.helpers import scan_queue_keys
from vermilion import JsonSerializer, Queue, ScriptError, SerializationError, clear_queues, queue_names
from vermilion._keys import QueueKeys
from vermilion._validation import check_queue_name
from vermilion._wire import EnqueueOptions


class _Opaque:
    pass


# -- the Queue constructor -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", ValueError),
        ("q" * 201, ValueError),
        (None, TypeError),
        (42, TypeError),
        (b"emails", TypeError),
        ("a{b", ValueError),
        ("a}b", ValueError),
        ("emails*", ValueError),
        ("emails?", ValueError),
        ("emails[1]", ValueError),
        ("my queue", ValueError),
        ("caf\u00e9", ValueError),
    ],
    ids=[
        "empty",
        "too-long",
        "none",
        "int",
        "bytes",
        "open-brace",
        "close-brace",
        "star",
        "question-mark",
        "bracket",
        "space",
        "non-ascii",
    ],
)
async def test_bad_queue_names_are_refused(name: Any, error: type[Exception], redis: aioredis.Redis) -> None:
    """The Queue constructor refuses a bad name with an error about the queue name; no key exists."""
    with pytest.raises(error, match="queue name"):
        Queue(name, "redis://127.0.0.1:6379/0")
    if isinstance(name, str):
        assert await redis.exists(*QueueKeys.for_queue(name).keys) == 0


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"max_payload_bytes": 0}, ValueError, "max_payload_bytes"),
        ({"max_payload_bytes": "1"}, TypeError, "max_payload_bytes"),
        ({"max_payload_bytes": True}, TypeError, "max_payload_bytes"),
        ({"failure_history": -1}, ValueError, "failure_history"),
        ({"failure_history": 1.5}, TypeError, "failure_history"),
        ({"failure_history": True}, TypeError, "failure_history"),
        ({"failure_history_bytes": -1}, ValueError, "failure_history_bytes"),
        ({"failure_history_bytes": 2.0}, TypeError, "failure_history_bytes"),
        ({"url": 6379}, TypeError, "url"),
        ({"url": "redis://127.0.0.1:6379/0", "redis": "client"}, ValueError, "url or redis"),
        ({"redis": "redis://127.0.0.1:6379/0"}, TypeError, "redis must be"),
        ({"serializer": _Opaque()}, TypeError, "serializer"),
    ],
    ids=[
        "zero-payload-cap",
        "str-payload-cap",
        "bool-payload-cap",
        "negative-history",
        "float-history",
        "bool-history",
        "negative-history-bytes",
        "float-history-bytes",
        "int-url",
        "url-and-redis",
        "url-as-redis",
        "serializer-without-methods",
    ],
)
def test_bad_queue_options_are_refused(options: dict[str, Any], error: type[Exception], match: str) -> None:
    """The Queue constructor refuses bad options with an error naming the option."""
    with pytest.raises(error, match=match):
        Queue("q", **options)


# -- enqueue -----------------------------------------------------------------------------

BAD_ENQUEUES: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"mid": ""}, ValueError, "mid"),
    ({"mid": 42}, TypeError, "mid"),
    ({"mid": b"m"}, TypeError, "mid"),
    ({"mid": "m" * 1025}, ValueError, "mid"),
    ({"mid": "\u00e9" * 513}, ValueError, "mid"),
    ({"mid": "m\udc80"}, ValueError, "mid"),
    ({"delay": -1}, ValueError, "delay"),
    ({"delay": -0.001}, ValueError, "delay"),
    ({"delay": timedelta(seconds=-1)}, ValueError, "delay"),
    ({"delay": math.nan}, ValueError, "delay"),
    ({"delay": math.inf}, ValueError, "delay"),
    ({"delay": -math.inf}, ValueError, "delay"),
    ({"delay": "5"}, TypeError, "delay"),
    ({"delay": True}, TypeError, "delay"),
    ({"delay": None}, TypeError, "delay"),
    ({"delay": 10**400}, ValueError, "delay"),
    ({"lock_timeout": 0}, ValueError, "lock_timeout"),
    ({"lock_timeout": -1}, ValueError, "lock_timeout"),
    ({"lock_timeout": timedelta(0)}, ValueError, "lock_timeout"),
    ({"lock_timeout": math.nan}, ValueError, "lock_timeout"),
    ({"lock_timeout": math.inf}, ValueError, "lock_timeout"),
    ({"lock_timeout": "30"}, TypeError, "lock_timeout"),
    ({"lock_timeout": False}, TypeError, "lock_timeout"),
    ({"can_update": 1}, TypeError, "can_update"),
    ({"can_update": None}, TypeError, "can_update"),
    ({"can_requeue": "yes"}, TypeError, "can_requeue"),
    ({"reset_delay": 0}, TypeError, "reset_delay"),
    ({"content": {1, 2}}, SerializationError, "content"),
    ({"content": _Opaque()}, SerializationError, "content"),
    ({"content": {"nested": [frozenset()]}}, SerializationError, "content"),
    ({"content": 2**64}, SerializationError, "content"),
    ({"content": "x" * 100}, ValueError, "content .*max_payload_bytes"),
]
BAD_ENQUEUE_IDS = [
    "mid-empty",
    "mid-int",
    "mid-bytes",
    "mid-over-1kib",
    "mid-over-1kib-utf8",
    "mid-lone-surrogate",
    "delay-negative",
    "delay-slightly-negative",
    "delay-negative-timedelta",
    "delay-nan",
    "delay-inf",
    "delay-minus-inf",
    "delay-str",
    "delay-bool",
    "delay-none",
    "delay-huge-int",
    "lock-zero",
    "lock-negative",
    "lock-zero-timedelta",
    "lock-nan",
    "lock-inf",
    "lock-str",
    "lock-bool",
    "can-update-int",
    "can-update-none",
    "can-requeue-str",
    "reset-delay-int",
    "content-set",
    "content-object",
    "content-nested-frozenset",
    "content-int-too-large",
    "content-over-cap",
]


@pytest.mark.parametrize(("arguments", "error", "match"), BAD_ENQUEUES, ids=BAD_ENQUEUE_IDS)
async def test_enqueue_refuses_bad_arguments_before_writing(
    make_queue: QueueFactory,
    redis: aioredis.Redis,
    arguments: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    """enqueue raises an error naming the bad argument and writes nothing."""
    queue = await make_queue(max_payload_bytes=64)
    options = {"mid": "m", **arguments}
    content = options.pop("content", "ok")
    with pytest.raises(error, match=match):
        await queue.enqueue(content, **options)
    assert await scan_queue_keys(redis, queue.name) == []


BAD_ITEMS = [
    pytest.param(arguments, error, match, id=case_id)
    for (arguments, error, match), case_id in zip(BAD_ENQUEUES, BAD_ENQUEUE_IDS, strict=True)
    if set(arguments) <= {"mid", "content"}
]


@pytest.mark.parametrize(("arguments", "error", "match"), BAD_ITEMS)
async def test_enqueue_many_refuses_a_bad_item_in_the_middle(
    make_queue: QueueFactory,
    redis: aioredis.Redis,
    arguments: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    """A bad second item of three makes enqueue_many raise for it and write nothing at all."""
    queue = await make_queue(max_payload_bytes=64)
    contents: list[Any] = ["first", arguments.get("content", "second"), "third"]
    mids: list[Any] = ["a", arguments.get("mid", "b"), "c"]
    if "content" in arguments:
        match = match.replace("content", r"contents\[1\]")
    with pytest.raises(error, match=match):
        await queue.enqueue_many(contents, mids=mids)
    assert await scan_queue_keys(redis, queue.name) == []


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"delay": -1}, ValueError, "delay"),
        ({"lock_timeout": 0}, ValueError, "lock_timeout"),
        ({"can_update": "no"}, TypeError, "can_update"),
        ({"can_requeue": 1}, TypeError, "can_requeue"),
        ({"reset_delay": None}, TypeError, "reset_delay"),
    ],
    ids=["negative-delay", "zero-lock", "str-can-update", "int-can-requeue", "none-reset-delay"],
)
async def test_enqueue_many_refuses_bad_options(
    queue: Queue, redis: aioredis.Redis, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    """enqueue_many refuses a bad batch-wide option, naming it, and writes nothing."""
    with pytest.raises(error, match=match):
        await queue.enqueue_many(["a", "b"], **options)
    assert await scan_queue_keys(redis, queue.name) == []


@pytest.mark.parametrize(
    ("contents", "mids", "error", "match"),
    [
        (["a", "b"], ["a"], ValueError, "mids has 1 entries for 2 contents"),
        (["a"], ["a", "b"], ValueError, "mids has 2 entries for 1 contents"),
        (["x"] * 10_001, None, ValueError, "at most 10000"),
        ("abc", None, TypeError, "contents must be an iterable of items, not a str"),
        (b"abc", None, TypeError, "contents must be an iterable of items, not a bytes"),
        (bytearray(b"ab"), None, TypeError, "not a bytearray"),
        (memoryview(b"ab"), None, TypeError, "not a memoryview"),
        ({"a": 1}, None, TypeError, r"not a mapping: pass its values\(\) or items\(\)"),
        (42, None, TypeError, "contents must be an iterable, not int"),
        (["a", "b", "c"], "abc", TypeError, "mids must be an iterable of items, not a str"),
    ],
    ids=[
        "fewer-mids",
        "more-mids",
        "too-many",
        "str",
        "bytes",
        "bytearray",
        "memoryview",
        "dict",
        "int",
        "str-mids",
    ],
)
async def test_enqueue_many_refuses_bad_batches(
    queue: Queue,
    redis: aioredis.Redis,
    contents: Any,
    mids: Any,
    error: type[Exception],
    match: str,
) -> None:
    """Mismatched mids, an oversized batch, or a str, bytes or mapping where a batch belongs
    (it would be taken item by item) are refused before anything is written."""
    with pytest.raises(error, match=match):
        await queue.enqueue_many(contents, mids=mids)
    assert await scan_queue_keys(redis, queue.name) == []


async def test_json_queue_refuses_what_json_cannot_hold(
    make_queue: QueueFactory, redis: aioredis.Redis
) -> None:
    """A JSON queue refuses bytes and NaN with a SerializationError naming the content."""
    queue = await make_queue(serializer=JsonSerializer())
    with pytest.raises(SerializationError, match="content"):
        await queue.enqueue(b"raw")
    with pytest.raises(SerializationError, match="content"):
        await queue.enqueue({"x": math.nan})
    assert await scan_queue_keys(redis, queue.name) == []


# -- inspection and admin ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mid", "error"),
    [("", ValueError), (None, TypeError), ("m" * 1025, ValueError), ("\ud800", ValueError)],
    ids=["empty", "none", "too-long", "lone-surrogate"],
)
async def test_message_status_refuses_bad_mids(queue: Queue, mid: Any, error: type[Exception]) -> None:
    """message_status refuses a bad mid with an error naming it."""
    with pytest.raises(error, match="mid"):
        await queue.message_status(mid)


@pytest.mark.parametrize(
    ("pattern", "error"),
    [("", ValueError), ("a{b}", ValueError), ("}", ValueError), (None, TypeError), (b"*", TypeError)],
    ids=["empty", "braces", "close-brace", "none", "bytes"],
)
async def test_queue_names_refuses_bad_patterns(
    redis: aioredis.Redis, pattern: Any, error: type[Exception]
) -> None:
    """queue_names refuses a pattern that is not a non-empty brace-free str."""
    with pytest.raises(error, match="pattern"):
        await queue_names(redis, pattern)


async def test_queue_names_skips_keys_of_no_queue_with_a_warning(
    queue: Queue, redis: aioredis.Redis, stray_keys: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """A stray key made queue_names raise (a non-UTF-8 name: UnicodeDecodeError) or list a name no
    Queue could open; now each is skipped with a warning naming the key, and real queues listed."""
    await queue.enqueue("x")
    with caplog.at_level(logging.WARNING, logger="vermilion"):
        names = await queue_names(redis)
    assert queue.name in names
    assert all(check_queue_name(name) == name for name in names)
    warned = " ".join(record.getMessage() for record in caplog.records)
    for key in stray_keys:
        assert repr(key) in warned


async def test_clear_queues_checks_every_name_before_deleting(queue: Queue, redis: aioredis.Redis) -> None:
    """A bad name anywhere makes clear_queues raise before it deletes any queue."""
    await queue.enqueue("x")
    with pytest.raises(ValueError, match="queue name"):
        await clear_queues(redis, queue.name, "bad name*")
    with pytest.raises(TypeError, match="queue name"):
        await clear_queues(redis, queue.name, 7)  # type: ignore[arg-type]
    assert await queue.size() == 1


# -- the scripts' own checks -----------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "messages", "match"),
    [
        (EnqueueOptions(delay_ms=-1), [("a", b"\xa1x")], "bad delay_ms"),
        (EnqueueOptions(lock_ms=0), [("a", b"\xa1x")], "bad lock_ms"),
        (EnqueueOptions(lock_ms=-5), [("a", b"\xa1x")], "bad lock_ms"),
        (EnqueueOptions(), [("a", b"\xa1x"), ("", b"\xa1x"), ("c", b"\xa1x")], "empty mid"),
    ],
    ids=["negative-delay", "zero-lock", "negative-lock", "empty-mid-in-the-middle"],
)
async def test_enqueue_script_checks_the_whole_batch_before_writing(
    queue: Queue,
    redis: aioredis.Redis,
    options: EnqueueOptions,
    messages: list[tuple[str, bytes]],
    match: str,
) -> None:
    """The enqueue script refuses a bad call, or a batch with a bad mid in the middle, and writes nothing."""
    conn, keys = queue._protocol
    with pytest.raises(ScriptError, match=match):
        await conn.enqueue(keys, options, messages)
    assert await scan_queue_keys(redis, queue.name) == []
