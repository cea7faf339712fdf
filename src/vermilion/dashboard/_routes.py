"""The dashboard's HTTP endpoints: the page, its JSON, and the two actions.

Reads come from the sampler's latest readings (plots, counts, workers) or, for
failed messages, straight from Redis through ``Queue.failed``; actions go
through ``ActionGuard`` first. Every answer is JSON or the one page; no
handler builds HTML from data (the template escapes, the page's script sets
text only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from vermilion import __version__
from vermilion._queue import Queue

from ._sampler import Sampler
from ._security import TOKEN_HEADER, ActionGuard
from ._views import failed_view, status_view, worker_view

__all__ = ["MAX_FAILED_PAGE", "Endpoints", "redis_error"]

_HERE = Path(__file__).parent
MAX_FAILED_PAGE = 500
_FIRST_SAMPLE_WAIT = 2.0  # seconds a first page view waits for the sampler's first reading


def _templates() -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return Jinja2Templates(env=environment)


async def redis_error(request: Request, exc: Exception) -> Response:
    """A Redis call that failed (unreachable, refused): 503 with the reason, for the page to show."""
    return _bad_request(f"Redis: {type(exc).__name__}: {exc}", 503)


def _bad_request(error: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be within {low}..{high}, got {value}")
    return value


class Endpoints:
    """The routes of one dashboard, over its sampler and its guard."""

    def __init__(self, sampler: Sampler, guard: ActionGuard) -> None:
        self.sampler = sampler
        self.guard = guard
        self._templates = _templates()

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.index, name="index"),
            Route("/api/overview", self.overview),
            Route("/api/queues/{name}", self.queue_detail),
            Route("/api/queues/{name}/failed", self.failed),
            Route("/api/queues/{name}/replay", self.replay, methods=["POST"]),
            Route("/api/queues/{name}/purge-failed", self.purge_failed, methods=["POST"]),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ]

    async def _ready(self) -> None:
        """Start sampling on first use: a mounted app gets no lifespan events of its own."""
        self.sampler.start()
        await self.sampler.first_sample(_FIRST_SAMPLE_WAIT)

    def _queue(self, request: Request) -> Queue | None:
        name = request.path_params["name"]
        if name not in self.sampler.latest:
            return None
        self.sampler.watch(name)  # a page shows it: read it at every sample
        return self.sampler.queue(name)

    def _overview(self) -> dict[str, Any]:
        return {
            "queues": [status_view(name, self.sampler.latest[name].status) for name in self.sampler.names],
            "error": self.sampler.error,
        }

    async def index(self, request: Request) -> Response:
        await self._ready()
        context = {
            "overview": self._overview(),
            "actions": self.guard.enabled,
            "interval_ms": round(self.sampler.interval * 1000),
            "token_header": TOKEN_HEADER,
            "root": request.url_for("index").path,
            "version": __version__,
        }
        return self._templates.TemplateResponse(request, "index.html", context)

    async def overview(self, request: Request) -> Response:
        await self._ready()
        return JSONResponse(self._overview())

    async def queue_detail(self, request: Request) -> Response:
        await self._ready()
        queue = self._queue(request)
        if queue is None:
            return _bad_request("no such queue", 404)
        sample = self.sampler.latest[queue.name]
        return JSONResponse(
            {
                "status": status_view(queue.name, sample.status),
                "series": self.sampler.series[queue.name].as_lists(),
                "workers": [worker_view(worker) for worker in sample.workers],
            }
        )

    async def failed(self, request: Request) -> Response:
        await self._ready()
        queue = self._queue(request)
        if queue is None:
            return _bad_request("no such queue", 404)
        try:
            limit = _query_int(request, "limit", 50, 1, MAX_FAILED_PAGE)
            offset = _query_int(request, "offset", 0, 0, 10**9)
        except ValueError as exc:
            return _bad_request(str(exc))
        messages = await queue.failed(limit=limit, offset=offset)
        return JSONResponse({"failed": [failed_view(message) for message in messages]})

    async def _action_target(self, request: Request) -> tuple[Queue, list[str] | None] | Response:
        """The queue and the mids (``None``: all) of an allowed action, or the refusal."""
        refusal = self.guard.refusal(request)
        if refusal is not None:
            return refusal
        await self._ready()
        queue = self._queue(request)
        if queue is None:
            return _bad_request("no such queue", 404)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _bad_request("the body is not JSON")
        if not isinstance(body, dict):
            return _bad_request('the body must be {"mids": [...]} or {"all": true}')
        if body.get("all") is True and "mids" not in body:
            return queue, None
        mids = body.get("mids")
        if not isinstance(mids, list) or not mids or not all(isinstance(mid, str) for mid in mids):
            return _bad_request('the body must be {"mids": [...]} (non-empty, strings) or {"all": true}')
        return queue, mids

    async def replay(self, request: Request) -> Response:
        target = await self._action_target(request)
        if isinstance(target, Response):
            return target
        queue, mids = target
        try:
            if mids is None:
                return JSONResponse({"replayed": await queue.replay_failed(), "results": []})
            results = await queue.replay(*mids)
        except ValueError as exc:  # a malformed mid
            return _bad_request(str(exc))
        views = [{"mid": result.mid, "ok": result.ok, "error": result.error} for result in results]
        return JSONResponse({"replayed": sum(result.ok for result in results), "results": views})

    async def purge_failed(self, request: Request) -> Response:
        target = await self._action_target(request)
        if isinstance(target, Response):
            return target
        queue, mids = target
        try:
            purged = await queue.purge_failed(*(mids or ()))
        except ValueError as exc:
            return _bad_request(str(exc))
        return JSONResponse({"purged": purged})
