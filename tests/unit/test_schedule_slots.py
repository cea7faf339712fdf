"""Schedules without a server: the slots of a cron expression, and every argument refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from vermilion import Queue, Schedule, SerializationError, schedule
from vermilion._cron import Cron, load_timezone

UTC = timezone.utc


def ms(text: str, zone: str = "UTC") -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


def iso(slot_ms: int) -> str:
    return datetime.fromtimestamp(slot_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")


@pytest.fixture
async def queue() -> AsyncIterator[Queue]:
    queue = Queue("schedule-unit", "redis://127.0.0.1:1/0")  # never connects
    yield queue
    await queue.aclose()


def test_next_after_is_strictly_after() -> None:
    """The next slot of an exact slot time is the one after it; of any other time, the first after it."""
    cron = Cron("0 3 * * *", UTC)
    assert iso(cron.next_after(ms("2026-12-08T03:00:00")) or 0) == "2026-12-09T03:00:00"
    assert iso(cron.next_after(ms("2026-12-08T02:59:59.999")) or 0) == "2026-12-08T03:00:00"
    assert iso(cron.next_after(ms("2026-12-08T03:00:00.001")) or 0) == "2026-12-09T03:00:00"


def test_latest_takes_the_latest_slots_of_the_interval_in_order() -> None:
    """(after, until]: the latest `limit` slots, ascending; bounds exclusive then inclusive."""
    cron = Cron("*/15 * * * *", UTC)
    after, until = ms("2026-12-08T10:00:00"), ms("2026-12-08T11:00:00")
    assert [iso(s) for s in cron.latest(after, until, 10)] == [
        "2026-12-08T10:15:00",
        "2026-12-08T10:30:00",
        "2026-12-08T10:45:00",
        "2026-12-08T11:00:00",
    ]
    assert [iso(s) for s in cron.latest(after, until, 2)] == ["2026-12-08T10:45:00", "2026-12-08T11:00:00"]
    assert [iso(s) for s in cron.latest(after, until - 1, 1)] == ["2026-12-08T10:45:00"]
    assert cron.latest(until, until, 5) == []
    assert cron.latest(after, after + 1000, 5) == []


def test_a_long_downtime_costs_limit_steps() -> None:
    """Reading backwards: ten years of every-second slots missed, one asked for, answered at once."""
    cron = Cron("* * * * * *", UTC)
    until = ms("2036-01-01T00:00:00")
    assert [iso(s) for s in cron.latest(ms("2026-01-01T00:00:00"), until, 1)] == ["2036-01-01T00:00:00"]


def test_the_time_zone_decides_the_slot() -> None:
    """03:00 in Paris is 02:00 UTC in winter and 01:00 UTC in summer."""
    paris = Cron("0 3 * * *", load_timezone("Europe/Paris"))
    assert iso(paris.next_after(ms("2026-12-08T00:00:00")) or 0) == "2026-12-08T02:00:00"
    assert iso(paris.next_after(ms("2026-07-08T00:00:00")) or 0) == "2026-07-08T01:00:00"


def test_a_slot_in_the_hour_daylight_saving_skips_runs_once_when_the_clock_jumps() -> None:
    """02:30 does not exist in Paris on 2026-03-29: the slot runs at 03:00 local (01:00 UTC), once."""
    paris = Cron("30 2 * * *", load_timezone("Europe/Paris"))
    slots = paris.latest(ms("2026-03-28T12:00:00"), ms("2026-03-30T12:00:00"), 10)
    assert [iso(s) for s in slots] == ["2026-03-29T01:00:00", "2026-03-30T00:30:00"]


async def test_mids_name_the_slot_in_utc(queue: Queue) -> None:
    """<name>@<slot in UTC>, whatever zone the slot is given in; next_slot reads the schedule's zone."""
    item = schedule(queue, "nightly-report", cron="0 3 * * *", tz="Europe/Paris")
    slot = item.next_slot(datetime(2026, 12, 8, tzinfo=UTC))
    assert slot == datetime(2026, 12, 8, 3, tzinfo=ZoneInfo("Europe/Paris"))
    assert item.mid(slot) == "nightly-report@2026-12-08T02:00:00Z"
    assert item.mid(slot.astimezone(timezone(timedelta(hours=5)))) == "nightly-report@2026-12-08T02:00:00Z"
    assert item.catch_up == 1
    assert item.content is None
    assert repr(item) == "<Schedule 'nightly-report' '0 3 * * *' Europe/Paris on queue 'schedule-unit'>"
    with pytest.raises(TypeError, match="slot must be an aware datetime"):
        item.mid(datetime(2026, 12, 8))
    with pytest.raises(TypeError, match="after must be an aware datetime"):
        item.next_slot(datetime(2026, 12, 8))


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"cron": "0 3 * *"}, ValueError, "cron '0 3 \\* \\*' is not a valid cron expression"),
        ({"cron": "61 * * * *"}, ValueError, "is not a valid cron expression"),
        ({"cron": "@daily"}, ValueError, "is not a valid cron expression"),
        ({"cron": "0 0 30 2 *"}, ValueError, "is not a valid cron expression"),
        ({"cron": 5}, TypeError, "cron must be a str, not int"),
        ({"tz": "Mars/Olympus"}, ValueError, "tz 'Mars/Olympus' is not a known time zone name"),
        ({"tz": 1}, TypeError, "tz must be a time zone name or a tzinfo, not int"),
        ({"catch_up": 0}, ValueError, "catch_up must be from 1 to 1000, got 0"),
        ({"catch_up": 1001}, ValueError, "catch_up must be from 1 to 1000"),
        ({"catch_up": True}, TypeError, "catch_up must be an int, not bool"),
        ({"content": object()}, SerializationError, "content cannot be serialized"),
    ],
)
async def test_bad_arguments_are_refused_naming_them(
    queue: Queue, options: dict[str, object], error: type[Exception], match: str
) -> None:
    arguments: dict[str, object] = {"cron": "* * * * *", **options}
    with pytest.raises(error, match=match):
        Schedule(queue, "report", **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [("", ValueError, "must have 1-200 characters"), ("a b", ValueError, "letters, digits"),
     ("x" * 201, ValueError, "1-200"), (None, TypeError, "name must be a str, not NoneType")],
)  # fmt: skip
async def test_bad_names_are_refused(queue: Queue, name: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Schedule(queue, name, cron="* * * * *")  # type: ignore[arg-type]


def test_the_queue_must_be_a_queue() -> None:
    with pytest.raises(TypeError, match=r"queue must be a vermilion\.Queue, not str"):
        Schedule("reports", "daily", cron="0 3 * * *")  # type: ignore[arg-type]


def test_without_cronsim_a_schedule_names_the_extra_and_import_costs_nothing() -> None:
    """`import vermilion` needs no cronsim; making a schedule without it says what to install."""
    code = (
        "import sys; sys.modules['cronsim'] = None\n"
        "import vermilion\n"
        "assert 'cronsim' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "q = vermilion.Queue('q', 'redis://127.0.0.1:1/0')\n"
        "try:\n"
        "    vermilion.schedule(q, 'n', cron='* * * * *')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "schedules need the cronsim package: pip install 'vermilion[cron]'"
