"""The ``vermilion`` logger. The library adds no handler but a ``NullHandler``."""

from __future__ import annotations

import logging

__all__ = ["logger", "set_min_log_level"]

logger = logging.getLogger("vermilion")
logger.addHandler(logging.NullHandler())


def set_min_log_level(level: int | str) -> None:
    """Set the least severe level the ``vermilion`` logger passes on.

    ``level`` is a ``logging`` level number or name (``"debug"``, ``"WARNING"``...).
    """
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown log level {level!r}")
        level = resolved
    elif isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"level must be an int or a level name, not {type(level).__name__}")
    logger.setLevel(level)
