"""A function run in a forked child process, its return value pickled back through a pipe.

The checker explores half of a large frontier in a child: the search is CPU-bound in
Python, so a thread would not help, and a fork shares the frontier and the seen set
without sending them.
"""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["Forked"]


class Forked:
    def __init__(self, fn: Callable[[], Any]) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller (pytest's stack among it)
            os.close(read_end)
            try:
                payload = pickle.dumps((True, fn()), protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException:
                payload = pickle.dumps((False, traceback.format_exc()))
            with os.fdopen(write_end, "wb") as out:
                out.write(payload)
            os._exit(0)
        os.close(write_end)
        self.pid = pid
        self._read_end = read_end

    def result(self) -> Any:
        """The child's return value (read before it is waited for: it may fill the pipe)."""
        with os.fdopen(self._read_end, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(self.pid, 0)
        if not data:
            raise RuntimeError(f"the checker's child {self.pid} died (wait status {status})")
        ok, value = pickle.loads(data)
        if not ok:
            raise RuntimeError(f"the checker's child {self.pid} failed:\n{value}")
        return value
