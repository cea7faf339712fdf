"""Cron expressions, read by ``cronsim`` (the ``vermilion[cron]`` extra): the slots of a schedule.

Pure: no I/O. Times cross this module as Unix ms (the server's clock, as the
schedule script reads it); slots are whole seconds, evaluated in the
schedule's time zone, daylight saving time included (cronsim follows Debian
cron: a slot in a skipped hour runs when the clock jumps, one in a repeated
hour runs once). ``cronsim`` is imported only here, and only when a schedule
is made, so that ``import vermilion`` needs nothing of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Cron", "load_timezone"]

_INSTALL_HINT = "schedules need the cronsim package: pip install 'vermilion[cron]'"


def _cronsim() -> Any:
    try:
        import cronsim
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return cronsim


def load_timezone(tz: object) -> tzinfo:
    """``tz`` (an IANA name such as ``"Europe/Paris"``, or a ``tzinfo``) as a ``tzinfo``."""
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str):
        raise TypeError(f"tz must be a time zone name or a tzinfo, not {type(tz).__name__}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"tz {tz!r} is not a known time zone name ({exc})") from None


def _at(ms: int, zone: tzinfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, zone)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000  # slots are whole seconds: exact


class Cron:
    """One cron expression in one time zone: its slots as Unix ms."""

    def __init__(self, expression: object, zone: tzinfo) -> None:
        if not isinstance(expression, str):
            raise TypeError(f"cron must be a str, not {type(expression).__name__}")
        cronsim = _cronsim()
        self.expression = expression
        self.zone = zone
        try:
            cronsim.CronSim(expression, datetime.now(zone))
        except cronsim.CronSimError as exc:
            raise ValueError(f"cron {expression!r} is not a valid cron expression: {exc}") from None
        if self.next_after(_ms(datetime.now(timezone.utc))) is None:
            raise ValueError(f"cron {expression!r} has no time slot in the next 50 years")

    def _iterate(self, start_ms: int, *, reverse: bool) -> Iterator[datetime]:
        return iter(_cronsim().CronSim(self.expression, _at(start_ms, self.zone), reverse=reverse))

    def next_after(self, ms: int) -> int | None:
        """The first slot strictly after ``ms``, or None if none comes within 50 years."""
        try:
            return _ms(next(self._iterate(ms, reverse=False)))
        except StopIteration:
            return None

    def latest(self, after_ms: int, until_ms: int, limit: int) -> list[int]:
        """Up to ``limit`` slots in ``(after_ms, until_ms]``, the latest ones, in ascending order.

        Read backwards from ``until_ms``, so that a long downtime costs
        ``limit`` steps, not one per missed slot.
        """
        found: list[int] = []
        if until_ms <= after_ms:
            return found
        # Reverse iteration yields slots strictly before its start: start just after until_ms.
        for moment in self._iterate((until_ms // 1000 + 1) * 1000, reverse=True):
            slot = _ms(moment)
            if slot <= after_ms or len(found) == limit:
                break
            found.append(slot)
        found.reverse()
        return found
