"""Recurring messages: a ``Schedule`` enqueues one message per time slot of a cron expression.

Each slot's message has the mid ``<name>@<slot in UTC>``, and the schedule
script enqueues it and moves the schedule's watermark past it in one atomic
step, so any number of schedulers (workers with ``schedules=``, ``vermilion
scheduler`` processes) enqueue each slot exactly once, even after the message
was handled and its mid forgotten. Slot times are read from the Redis
server's clock. A scheduler sleeps until the next slot, and reads the
server's clock again at least every five minutes (so a host clock that drifts
or a suspended machine costs no slot).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import datetime, timezone, tzinfo
from typing import Any

from ._cron import Cron, load_timezone
from ._exceptions import ConfigurationError, VermilionError
from ._logs import logger
from ._policies import error_backoff
from ._queue import Queue
from ._schedule_calls import REFUSED_FULL, TickReply, tick
from ._serialization import encode_content

__all__ = ["MAX_CATCH_UP", "Schedule", "ScheduleRunner", "run_schedules", "schedule"]

MAX_CATCH_UP = 1000
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_MAX_SLEEP = 300.0
_ERROR_BACKOFF_BASE = 0.5


class Schedule:
    """A message enqueued on ``queue`` at every time slot of a cron expression.

    Make one with ``Schedule(...)`` or its alias ``vermilion.schedule(...)``; run it in a worker
    (``AsyncWorker(..., schedules=[...])``), in ``vermilion scheduler``, with
    :func:`run_schedules`, or call :meth:`tick` from a loop of your own.

    Args:
        queue: the queue the messages go to.
        name: 1-200 characters from ``A-Z a-z 0-9 _ . : -``, unique per queue;
            each slot's mid is ``<name>@<slot>``, e.g.
            ``nightly-report@2026-12-08T03:00:00Z``.
        cron: five fields (minute hour day month weekday), or six with seconds
            first, as cron reads them (``@daily`` and the like are not accepted).
        content: the content of every slot's message (serialized now, once).
        tz: the time zone the expression is read in: an IANA name or a
            ``tzinfo`` (UTC by default).
        catch_up: how many slots at most one pass enqueues when several are due
            (after downtime): the latest ones; older missed slots are skipped.
            1 (the default) enqueues only the latest missed slot.

    The arguments are kept as attributes of the same names (``tz`` as a
    ``tzinfo``); change none of them: the content and the expression were
    read when the schedule was made.
    """

    def __init__(
        self,
        queue: Queue,
        name: str,
        *,
        cron: str,
        content: Any = None,
        tz: str | tzinfo = "UTC",
        catch_up: int = 1,
    ) -> None:
        if not isinstance(queue, Queue):
            raise TypeError(f"queue must be a vermilion.Queue, not {type(queue).__name__}")
        if queue.shards > 1:
            # A schedule's watermark and its slots' mids live in one slot: one shard.
            raise ValueError(f"queue {queue.name!r} is sharded: schedules need an unsharded queue")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"name {name!r} must have 1-200 characters, letters, digits and the characters _ . : -"
            )
        if isinstance(catch_up, bool) or not isinstance(catch_up, int):
            raise TypeError(f"catch_up must be an int, not {type(catch_up).__name__}")
        if not 1 <= catch_up <= MAX_CATCH_UP:
            raise ValueError(f"catch_up must be from 1 to {MAX_CATCH_UP}, got {catch_up}")
        self.queue: Queue = queue
        self.name: str = name
        self.tz: tzinfo = load_timezone(tz)
        self._cron = Cron(cron, self.tz)
        self.cron: str = cron
        self.catch_up: int = catch_up
        self.content: Any = content
        self._payload = encode_content(queue.serializer, content, queue.max_payload_bytes, "content")

    def __repr__(self) -> str:
        return f"<Schedule {self.name!r} {self.cron!r} {self.tz} on queue {self.queue.name!r}>"

    def mid(self, slot: datetime) -> str:
        """The mid of the message of ``slot`` (an aware datetime): ``<name>@<slot in UTC>``."""
        moment = _aware(slot, "slot")
        return f"{self.name}@{moment.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"

    def next_slot(self, after: datetime) -> datetime | None:
        """The first slot strictly after ``after`` (an aware datetime), or None within 50 years."""
        slot = self._cron.next_after(int(_aware(after, "after").timestamp() * 1000))
        return None if slot is None else self._slot_time(slot)

    def _slot_time(self, slot_ms: int) -> datetime:
        return datetime.fromtimestamp(slot_ms / 1000, self.tz)

    async def _send(self, slots: Sequence[int]) -> TickReply:
        client, keys = self.queue._protocol
        pairs = [(slot, self.mid(self._slot_time(slot))) for slot in slots]
        reply = await tick(client, keys, self.name, self._payload, pairs)
        for slot, result in zip(slots, reply.results, strict=True):
            if result == 1:
                logger.info("schedule %r enqueued slot %s", self.name, self.mid(self._slot_time(slot)))
            elif result == REFUSED_FULL:
                logger.warning(
                    "schedule %r skipped slot %s: queue %r is full (max_size)",
                    self.name,
                    self.mid(self._slot_time(slot)),
                    self.queue.name,
                )
        return reply

    async def tick(self) -> list[datetime]:
        """Enqueue the slots due now by the server's clock (one pass); return those this call enqueued.

        A schedule's first pass ever only starts it: its first slot is the
        first after that moment. Slots that another scheduler enqueued, or
        that the catch-up rule skips, are not returned.
        """
        reply = await self._send(())
        due = self._cron.latest(reply.watermark_ms, reply.now_ms, self.catch_up)
        if not due:
            return []
        done = await self._send(due)
        return [self._slot_time(slot) for slot, result in zip(due, done.results, strict=True) if result == 1]

    async def run(self) -> None:
        """Enqueue every slot as it comes, until cancelled; Redis errors are logged and retried."""
        slots: list[int] = []
        failures = 0
        while True:
            try:
                reply = await self._send(slots)
            except ConfigurationError:
                raise
            except VermilionError as exc:
                failures += 1
                delay = error_backoff(failures, _ERROR_BACKOFF_BASE)
                logger.warning("schedule %r: %s; trying again in %.2f s", self.name, exc, delay)
                await asyncio.sleep(delay)
                slots = []
                continue
            failures = 0
            slots = self._cron.latest(reply.watermark_ms, reply.now_ms, self.catch_up)
            if not slots:
                slots = await self._sleep_until_next(reply)

    async def _sleep_until_next(self, reply: TickReply) -> list[int]:
        """Sleep until the next slot, or five minutes at most; return the slots to send then.

        The server's clock at the wake-up is estimated from the last reply; the
        next call checks the slots against the real one.
        """
        loop = asyncio.get_running_loop()
        received = loop.time()
        upcoming = self._cron.next_after(max(reply.now_ms, reply.watermark_ms))
        if upcoming is None or upcoming - reply.now_ms > _MAX_SLEEP * 1000:
            await asyncio.sleep(_MAX_SLEEP)
            return []  # only re-read the server's clock
        await asyncio.sleep((upcoming - reply.now_ms) / 1000)
        estimate = reply.now_ms + int((loop.time() - received) * 1000)
        return self._cron.latest(reply.watermark_ms, max(estimate, upcoming), self.catch_up)


def _aware(value: object, argument: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TypeError(f"{argument} must be an aware datetime (with a tzinfo)")
    return value


schedule = Schedule
"""``vermilion.schedule(queue, name, cron=..., content=...)``: the same as :class:`Schedule`."""


def check_schedules(schedules: Iterable[object], argument: str = "schedules") -> list[Schedule]:
    """``schedules`` as a list, refusing what is not a Schedule and two of one name on one queue."""
    if isinstance(schedules, Schedule):
        raise TypeError(f"{argument} must be an iterable of Schedule: wrap the schedule in a list")
    found: list[Schedule] = []
    names: set[tuple[str, str]] = set()
    for item in schedules:
        if not isinstance(item, Schedule):
            raise TypeError(f"{argument} must hold Schedule objects, not {type(item).__name__}")
        key = (item.queue.name, item.name)
        if key in names:
            raise ValueError(
                f"{argument} holds two schedules named {item.name!r} on queue {item.queue.name!r}"
            )
        names.add(key)
        found.append(item)
    return found


async def run_schedules(schedules: Iterable[Schedule]) -> None:
    """Run every schedule until cancelled, or until one meets a ``ConfigurationError``, raised here.

    Returns at once when ``schedules`` is empty.
    """
    tasks = [
        asyncio.create_task(item.run(), name=f"vermilion-schedule-{item.name}")
        for item in check_schedules(schedules)
    ]
    if not tasks:
        return
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


Supervisor = Callable[[Callable[[], Coroutine[Any, Any, None]], str], Coroutine[Any, Any, None]]


class ScheduleRunner:
    """The schedules of one worker: run in a task while the worker runs."""

    def __init__(self, schedules: Iterable[Schedule]) -> None:
        self.schedules = check_schedules(schedules)
        self._task: asyncio.Task[None] | None = None

    def launch(self, supervise: Supervisor) -> None:
        """Start running the schedules (if any) in a task that ``supervise`` restarts if it raises."""
        if self.schedules:
            self._task = asyncio.create_task(
                supervise(lambda: run_schedules(self.schedules), "schedules"), name="vermilion-schedules"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
