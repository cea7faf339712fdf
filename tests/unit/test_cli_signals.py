"""The command line's stop signals on an event loop without signal handlers (as on Windows)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from vermilion._cli._serve import _StopSignals


def _no_loop_signal_handlers(*args: Any) -> None:
    raise NotImplementedError


async def test_fallback_handlers_stop_then_force_and_are_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "add_signal_handler", _no_loop_signal_handlers)
    before = {sig: signal.getsignal(sig) for sig in _StopSignals.SIGNALS}

    with _StopSignals(stop_timeout=30.0) as signals:
        assert all(signal.getsignal(sig) is not before[sig] for sig in _StopSignals.SIGNALS)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(signals.stop.wait(), timeout=5)
        assert not signals.force.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(signals.force.wait(), timeout=5)

    assert {sig: signal.getsignal(sig) for sig in _StopSignals.SIGNALS} == before
