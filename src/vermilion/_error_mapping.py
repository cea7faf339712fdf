"""redis-py's exceptions turned into vermilion's, at the one boundary where they arise.

Owns which redis-py (or socket) error becomes which :mod:`._exceptions`
class, with the error codes redis-py strips put back, and the naming of a
command an ACL denied inside a script. It decides nothing about sending or
re-sending: :mod:`._transport` does.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions as redis_errors

from ._exceptions import ConfigurationError, ProtocolError, ScriptError, VermilionConnectionError
from ._scripts import Script

__all__ = [
    "CONNECTION_ERRORS",
    "is_tls_failure",
    "naming_a_denied_command",
    "refused_as",
    "translate_errors",
    "translated",
]

CONNECTION_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
"""What a dropped, refused or silent connection raises."""

# redis-py strips the error code from the errors it maps to a class of its own;
# the code is what a user searches for, so it is put back.
_ERROR_CODES: dict[type[redis_errors.ResponseError], str] = {
    redis_errors.OutOfMemoryError: "OOM: Redis reached maxmemory",
    redis_errors.ReadOnlyError: "READONLY: the server is a read-only replica",
    redis_errors.NoPermissionError: "NOPERM: the user lacks a permission",
}


def _with_error_code(exc: redis_errors.ResponseError) -> str:
    for error_class, code in _ERROR_CODES.items():
        if isinstance(exc, error_class):
            return f"{code}; {exc}"
    return str(exc)


def translated(exc: BaseException) -> BaseException:
    """vermilion's exception for one of redis-py's (or a socket's); others as they are."""
    if isinstance(exc, redis_errors.AuthenticationError):
        return ConfigurationError(f"Redis refused the credentials: {exc}")
    if isinstance(exc, redis_errors.BusyLoadingError):
        return VermilionConnectionError(
            f"Redis is loading its data set and refused the command (LOADING): {exc}"
        )
    if isinstance(exc, CONNECTION_ERRORS):
        return VermilionConnectionError(f"Redis connection failed: {exc}")
    if isinstance(exc, redis_errors.AskError):  # MOVED or ASK reached a one-server client
        return ScriptError(
            f"Redis refused the command: {'MOVED' if isinstance(exc, redis_errors.MovedError) else 'ASK'}"
            f" {exc}: the server is a Redis Cluster node; connect with a redis+cluster:// URL or"
            " a redis.asyncio.RedisCluster client"
        )
    if isinstance(exc, redis_errors.ResponseError):
        message = str(exc)
        if message.startswith("VERMILION "):
            return ScriptError(message.removeprefix("VERMILION ").split(" script:")[0])
        return ScriptError(f"Redis refused the command: {_with_error_code(exc)}")
    if isinstance(exc, redis_errors.RedisError):
        return ProtocolError(f"Redis client error: {exc}")
    return exc


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn redis-py's exceptions into vermilion's, at this one boundary."""
    try:
        yield
    except (redis_errors.RedisError, OSError) as exc:
        raise translated(exc) from exc


def refused_as(exc: ScriptError, error_class: type[redis_errors.RedisError]) -> bool:
    """Whether Redis refused the call that raised ``exc`` with ``error_class`` (NOSCRIPT, NOPERM)."""
    return isinstance(exc.__cause__, error_class)


# Redis 7.0 says only "The user executing the script can't run this command or
# subcommand", Valkey "User u has no permissions to run the 'time' command"; both
# give the script's line, where vermilion's own source names the command. A line
# may call more than one, and a helper's line none: Valkey's words then name it,
# and the slice helpers of lua/_state.lua add "(calling RPUSH)" on either server.
_DENIED_IN_SCRIPT = re.compile(r"can't run this command|no permissions to run the '")
_SCRIPT_LINE = re.compile(r"@user_script:(\d+)")
_NAMED = re.compile(r"no permissions to run the '([a-z|]+)' command|\(calling ([A-Za-z]+)\)")
_CALLED_COMMAND = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'")
_GRANTS_LISTED = "every command vermilion needs is listed under 'Least privilege' in its docs"


def naming_a_denied_command(exc: ScriptError, script: Script) -> ScriptError:
    """``exc``, or, if an ACL denied a command inside ``script``, an error that names it."""
    message = str(exc.__cause__)
    line = _SCRIPT_LINE.search(message)
    if not _DENIED_IN_SCRIPT.search(message) or line is None:
        return exc
    lines = script.source.decode().splitlines()
    number = int(line.group(1))
    text = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    named = _NAMED.search(message)
    if named is not None:
        commands = [(named.group(1) or named.group(2)).lower()]
    else:
        commands = list(dict.fromkeys(name.lower() for name in _CALLED_COMMAND.findall(text)))
    if not commands:  # a command chosen at run time: show the line
        advice = (
            f"a command the {script.name} script calls (its line {number}: {text}): grant the "
            "commands listed under 'Least privilege' in vermilion's docs"
        )
    elif len(commands) == 1:
        advice = (
            f"{commands[0].upper()}, which the {script.name} script calls: grant it with ACL "
            f"SETUSER <user> +{commands[0]} ({_GRANTS_LISTED})"
        )
    else:  # Redis 7.0 does not say which of the line's commands it denied
        grants = " ".join(f"+{command}" for command in commands)
        advice = (
            f"{' or '.join(command.upper() for command in commands)}, which the {script.name} "
            f"script calls on its line {number}: grant them with ACL SETUSER <user> {grants} "
            f"({_GRANTS_LISTED})"
        )
    return ScriptError(f"Redis refused the command: the ACL user may not run {advice}. Redis said: {message}")


def is_tls_failure(exc: BaseException) -> bool:
    """Whether a connection error came from TLS (a certificate refused, say).

    Unlike a server that is down, such a setup does not mend itself by waiting.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False
