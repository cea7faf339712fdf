"""The first call checks the server: too old is refused, eviction is warned about once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from vermilion import ConfigurationError, Queue
from vermilion._embedded import EmbeddedServer
from vermilion._transport import Transport


async def test_old_server_is_refused_with_a_clear_error(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that reports Redis 6.2 is refused before any script runs."""
    real_run = Transport.run

    async def old_server(self: Transport, args: Sequence[Any], **options: Any) -> Any:
        if args[:2] == ("INFO", "server"):
            return b"# Server\r\nredis_version:6.2.14\r\nrun_id:abc\r\n"
        return await real_run(self, args, **options)

    monkeypatch.setattr(Transport, "run", old_server)
    with pytest.raises(ConfigurationError, match=r"Redis 7\.0\.0 or newer.*6\.2\.14"):
        await queue.enqueue("x")
    monkeypatch.undo()
    assert await queue.size() == 0  # nothing was written


async def test_evicting_policy_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    """An evicting maxmemory-policy logs one warning per server, not one per queue."""
    with EmbeddedServer() as server:
        first = Queue("evict-a", server.url)
        second = Queue("evict-b", server.url)
        await first.redis.config_set("maxmemory-policy", "allkeys-lru")
        await first.size()
        await second.size()
        await first.aclose()
        await second.aclose()
    warnings = [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert len(warnings) == 1
    assert "allkeys-lru" in warnings[0].getMessage()


async def test_noeviction_is_not_warned_about(queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    """The default noeviction policy is quiet."""
    policy = (await queue.redis.config_get("maxmemory-policy"))["maxmemory-policy"]
    await queue.size()
    if policy == "noeviction":
        assert not [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    else:  # a server under test that evicts: the warning must name its policy
        pytest.skip(f"the server under test evicts ({policy})")
