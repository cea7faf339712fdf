"""The Lua scripts: loading them from the package, and their SHA1 digests.

Each operation has its own file in ``lua/``. The shared helpers of
``lua/_common.lua`` are placed after the operation's optional ``#!lua`` line
(which Redis requires on the first line) and before its body, unless the body
places them itself with ``--#include _common`` (enqueue answers its usual call
before defining anything); a line ``--#include <name>`` in a body is replaced
by ``lua/<name>.lua``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["SCRIPTS", "Script"]

_OPERATIONS = (
    "enqueue",
    "dequeue",
    "ack",
    "extend",
    "status",
    "counts",
    "content",
    "clear",
    "version",
    "migrate",
    "presence",
    "failed",
    "replay",
    "purge",
    "schedule",
    "configure",
)


@dataclass(frozen=True, slots=True)
class Script:
    """One operation's full source, ready for ``EVALSHA``."""

    name: str
    source: bytes
    sha: bytes
    read_only: bool


def _read(name: str) -> str:
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


_INCLUDE = re.compile(r"^--#include (_[a-z]+)$", re.MULTILINE)
_INCLUDE_COMMON = re.compile(r"^--#include _common$", re.MULTILINE)


def _with_includes(body: str) -> str:
    return _INCLUDE.sub(lambda match: _read(match.group(1)), body)


def _build(name: str, common: str) -> Script:
    raw = _read(name)
    if _INCLUDE_COMMON.search(raw):
        common = ""
    body = _with_includes(raw)
    shebang = ""
    if body.startswith("#!"):
        shebang, _, body = body.partition("\n")
        shebang += "\n"
    source = f"{shebang}{common}\n{body}".encode()
    return Script(
        name=name,
        source=source,
        sha=hashlib.sha1(source, usedforsecurity=False).hexdigest().encode(),
        read_only="flags=no-writes" in shebang,
    )


def _load_all() -> dict[str, Script]:
    common = _read("_common")
    return {name: _build(name, common) for name in _OPERATIONS}


SCRIPTS: dict[str, Script] = _load_all()
