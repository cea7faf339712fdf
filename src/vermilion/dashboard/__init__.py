"""A web dashboard for vermilion's queues: ``vermilion.dashboard.app(...)``.

Needs the extra ``vermilion[dashboard]`` (Starlette and Jinja2; uvicorn for
``vermilion dashboard``). ``import vermilion`` never imports this package.

The app shows every queue's counts and lag, plots of the last minutes
(enqueued, handled and failed per second, queue size, lag, handling time), the
live workers, and the failed messages with replay and purge actions. One
background task samples Redis every ``interval`` seconds through vermilion's
public API; the page polls the app's JSON and redraws.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import AsyncIterator, Sequence

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware.trustedhost import TrustedHostMiddleware

from vermilion._exceptions import VermilionError
from vermilion._queue import DEFAULT_URL
from vermilion._serialization import Serializer

from ._routes import Endpoints, redis_error
from ._sampler import Sampler
from ._security import TOKEN_HEADER, ActionGuard, SecurityHeaders, check_token

__all__ = ["TOKEN_HEADER", "app"]

_CONNECT_TIMEOUT = 5.0
_SOCKET_TIMEOUT = 10.0


def _seconds(value: float, argument: str, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < low:
        raise ValueError(f"{argument} must be a finite number of seconds, at least {low:g}, got {value!r}")
    return float(value)


def app(
    url: str | None = None,
    *,
    redis: aioredis.Redis | None = None,
    actions: bool = False,
    token: str | None = None,
    serializer: Serializer | None = None,
    interval: float = 1.0,
    history: float = 600.0,
    allowed_hosts: Sequence[str] | None = None,
) -> Starlette:
    """The dashboard as an ASGI app, to serve or to mount in your Starlette/FastAPI app.

    Args:
        url: the Redis URL (default ``$VERMILION_URL``, else ``redis://127.0.0.1:6379/0``);
            the app opens its own client and closes it when it stops.
        redis: a ``redis.asyncio.Redis`` client you own, instead of ``url``.
        actions: allow replaying and purging failed messages from the page.
        token: required with ``actions=True`` (16 characters or more): the page
            sends it in the ``X-Vermilion-Token`` header, and an action without
            it is refused.
        serializer: how payloads are decoded for display (msgpack by default);
            a payload it cannot decode is shown as raw bytes.
        interval: seconds between two samples of Redis (at least 0.1).
        history: seconds of plots kept per queue (at least ``interval``).
        allowed_hosts: the host names the app answers to (the ``Host``
            header; ``*.example.com`` patterns allowed); a request naming
            another is refused with 400, which defeats DNS rebinding against a
            dashboard on a private address. ``None``: any host.

    Sampling starts with the app's lifespan, or at the first request when the
    app is mounted inside another (mounted apps get no lifespan events); it
    stops, and an owned client closes, when the lifespan ends or the event
    loop does.
    """
    if url is not None and redis is not None:
        raise ValueError("give either url or redis, not both")
    if not isinstance(actions, bool):
        raise TypeError(f"actions must be a bool, not {type(actions).__name__}")
    interval = _seconds(interval, "interval", 0.1)
    history = _seconds(history, "history", interval)
    guard = ActionGuard(check_token(token, actions))
    hosts = None if allowed_hosts is None else _hosts(allowed_hosts)
    if serializer is not None and not isinstance(serializer, Serializer):
        raise TypeError("serializer must have dumps(content) -> bytes and loads(bytes)")
    if redis is not None and not isinstance(redis, aioredis.Redis):
        raise TypeError(f"redis must be a redis.asyncio.Redis client, not {type(redis).__name__}")
    if url is not None and not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    client = redis if redis is not None else _client(url)
    sampler = Sampler(client, serializer, interval, history, owns_client=redis is None)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        sampler.start()
        try:
            yield
        finally:
            await sampler.stop()

    dashboard = Starlette(
        routes=Endpoints(sampler, guard).routes(),
        lifespan=lifespan,
        exception_handlers={VermilionError: redis_error},
    )
    if hosts is not None:
        dashboard.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)
    dashboard.add_middleware(SecurityHeaders)
    return dashboard


def _hosts(allowed_hosts: Sequence[str]) -> list[str]:
    if isinstance(allowed_hosts, str) or not all(isinstance(host, str) for host in allowed_hosts):
        raise TypeError("allowed_hosts must be a sequence of host names (str)")
    hosts = list(allowed_hosts)
    for host in hosts:
        if (
            not host
            or "*" in host[1:]
            or (host.startswith("*") and host != "*" and not host.startswith("*."))
        ):
            raise ValueError(f"allowed_hosts: {host!r} is not a host name or a '*.example.com' pattern")
    return hosts


def _client(url: str | None) -> aioredis.Redis:
    # Timeouts, so that a Redis gone silent shows as an error on the page instead of a stalled sampler.
    return aioredis.Redis.from_url(
        url or os.environ.get("VERMILION_URL") or DEFAULT_URL,
        socket_connect_timeout=_CONNECT_TIMEOUT,
        socket_timeout=_SOCKET_TIMEOUT,
    )
