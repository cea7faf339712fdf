"""The checker's Redis plumbing: a raw connection, and the batches that run a state's steps.

redis-py's pipeline spent more time packing and parsing the ~35 commands of a step than
the server spent on them, so the search talks over a raw socket (hiredis packs and parses).
Every scripted operation of a state restores that same state first, so all of them go to
the server in one batch (per operation: the RESTORE helper script below, the operation's
script, the OBSERVE helper that reads the keys back and DUMPs them), one round trip per
state instead of one per operation. And the next state's batch is
written before this one's replies are checked, so that the server runs one while the
checker checks the other: the two use both cores.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import redis

from vermilion._wire import pack_command

__all__ = ["Call", "Job", "Result", "Wire"]

# hiredis's C packer (its stub types one argument only): the hot path's variable commands.
_pack: Any = hiredis.pack_command

# One scripted operation: the script's name and its argv.
Call = tuple[str, Sequence[str]]


@dataclass(frozen=True)
class Job:
    """A state's scripted operations: each run from the state's keys and clock."""

    dumps: tuple[bytes | None, ...]
    clock: int
    calls: Sequence[Call]
    tag: Any = None  # the caller's, handed back with the results


@dataclass(frozen=True)
class Result:
    """One operation's outcome: the script's reply (an exception value if it raised), the
    replies of the read commands, and the DUMP of every data key after the script."""

    call: Call
    reply: Any
    reads: list[Any]
    dumps: tuple[bytes | None, ...]


# Two helper scripts, so that an operation's batch is three commands with three replies
# (parsing ~30 replies an operation cost the checker more than anything but the checks):
# RESTORE puts a state back (KEYS: the data keys, then the clock; ARGV: the clock, then each
# data key's DUMP, '' for a key that does not exist: a DUMP is never empty).
RESTORE = """
redis.call('DEL', unpack(KEYS))
for i = 1, #KEYS - 1 do
  if ARGV[i + 1] ~= '' then redis.call('RESTORE', KEYS[i], 0, ARGV[i + 1]) end
end
redis.call('SET', KEYS[#KEYS], ARGV[1])
return 1
"""
# OBSERVE runs read commands, each given as its length and then its words, and answers
# their replies in one array (a nil reply as nil).
OBSERVE = """
local out, i = {}, 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  out[#out + 1] = redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return out
"""


class Wire:
    def __init__(
        self,
        client: redis.Redis,
        sources: dict[str, bytes | str],
        *,
        data_keys: Sequence[bytes],
        clock_key: bytes,
        script_keys: dict[str, tuple[Any, ...]],
        queue_keys: tuple[Any, ...],
        reads: list[list[Any]],
    ) -> None:
        self.r = client
        self._sources = {**sources, "_restore": RESTORE, "_observe": OBSERVE}
        self.sha = self._load()
        self._data_keys = list(data_keys)
        self._restore_keys = (len(data_keys) + 1, *data_keys, clock_key)
        # The keys (their count first) each script takes; queue_keys unless named.
        self._script_keys = script_keys
        self._queue_keys = queue_keys
        self.n_reads = len(reads)
        # After each operation: the reads, then the DUMP of every data key.
        observed = [*reads, *(["DUMP", key] for key in self._data_keys)]
        self._observe_argv = [x for c in observed for x in (len(c), *c)]
        self._packed_dumps = b"".join([pack_command(["DUMP", key]) for key in self._data_keys])
        self._owed = 0  # replies written for but not read yet (a batch in flight)
        self._connect()
        self._packed_observe = b""
        self._repack()

    def _load(self) -> dict[str, str]:
        return {name: self.r.script_load(src) for name, src in self._sources.items()}

    def _repack(self) -> None:
        self._packed_observe = _pack(("EVALSHA", self.sha["_observe"], 0, *self._observe_argv))

    def drain(self) -> None:
        """Read what is still owed: a batch in flight (a check failed meanwhile) must not
        restore keys after they are cleaned up."""
        if self._owed:
            self._read(self._owed)

    def close(self) -> None:
        self.sock.close()

    def _connect(self) -> None:
        kw = self.r.connection_pool.connection_kwargs
        self.sock = socket.create_connection((kw.get("host", "127.0.0.1"), kw.get("port", 6379)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()
        setup: list[list[Any]] = []
        if kw.get("password"):
            setup.append(["AUTH", *([kw["username"]] if kw.get("username") else []), kw["password"]])
        if kw.get("db"):
            setup.append(["SELECT", kw["db"]])
        packed = b"".join([pack_command(c) for c in setup])
        _raise_errors(self._roundtrip(packed, len(setup)), "setting up the checker's connection")

    def _roundtrip(self, packed: bytes, n: int) -> list[Any]:
        self._write(packed, n)
        return self._read(n)

    def _write(self, packed: bytes, n: int) -> None:
        self.sock.sendall(packed)
        self._owed += n

    def _read(self, n: int) -> list[Any]:
        out: list[Any] = []
        while len(out) < n:
            reply = self.reader.gets()
            if reply is False:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("the server closed the checker's connection")
                self.reader.feed(data)
                continue
            out.append(reply)
        self._owed -= n
        return out

    def dump(self) -> tuple[bytes | None, ...]:
        """DUMP every data key as it is now on the server."""
        res = self._roundtrip(self._packed_dumps, len(self._data_keys))
        _raise_errors(res, "dumping the keys")
        return tuple(res)

    # -- batches --

    def _pack(self, job: Job) -> tuple[bytes, int]:
        dumps = [b"" if d is None else d for d in job.dumps]
        restore = _pack(("EVALSHA", self.sha["_restore"], *self._restore_keys, job.clock, *dumps))
        parts: list[bytes] = []
        for script, argv in job.calls:
            keys = self._script_keys.get(script, self._queue_keys)
            parts += (restore, _pack(("EVALSHA", self.sha[script], *keys, *argv)), self._packed_observe)
        return b"".join(parts), 3 * len(job.calls)

    def _split(self, job: Job, replies: list[Any]) -> list[Result]:
        out: list[Result] = []
        for i, call in enumerate(job.calls):
            restored, reply, observed = replies[3 * i : 3 * i + 3]
            _raise_errors((restored, observed), "restoring a state or reading it back")
            reads, dumps = observed[: self.n_reads], tuple(observed[self.n_reads :])
            out.append(Result(call, reply, reads, dumps))
        return out

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, list[Result]]]:
        """Each job's results, in order; the next job is written before a job's results
        are handed over (so the server runs it meanwhile)."""
        it = iter(jobs)
        inflight: deque[tuple[Job, int]] = deque()

        def write(job: Job) -> None:
            packed, n = self._pack(job)
            self._write(packed, n)
            inflight.append((job, n))

        first = next(it, None)
        if first is not None:
            write(first)
        while inflight:
            job, n = inflight.popleft()
            following = next(it, None)
            if following is not None:
                write(following)
            replies = self._read(n)
            while _noscript(replies):
                # Someone flushed the server's script cache (a SCRIPT FLUSH elsewhere): the
                # batch in flight failed too; load the scripts and send both again (each
                # restores its state first).
                for _, m in inflight:
                    self._read(m)
                pending = [j for j, _ in inflight]
                inflight.clear()
                self.sha = self._load()
                self._repack()
                packed, n = self._pack(job)
                replies = self._roundtrip(packed, n)
                for j in pending:
                    write(j)
            yield job, self._split(job, replies)


def _noscript(replies: list[Any]) -> bool:
    return any(isinstance(x, Exception) and str(x).startswith("NOSCRIPT") for x in replies)


def _raise_errors(replies: Iterable[Any], doing: str) -> None:
    for x in replies:
        if isinstance(x, Exception):
            raise RuntimeError(f"redis error while {doing}: {x}")
