"""aiohttp: enqueue from a handler; the app's own worker handles the queue.

    pip install vermilion aiohttp
    VERMILION_URL=redis://127.0.0.1:6379/0 python aiohttp_app.py

    curl -i localhost:8080/welcome -H 'content-type: application/json' -d '{"email": "ada@example.com"}'
    curl localhost:8080/status

A ``cleanup_ctx`` generator runs its first half at startup and its second half
at cleanup: the queue and the worker live as long as the app, and on cleanup
the worker stops (running handlers finish) before the queue closes.
"""

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import asdict

from aiohttp import web

from vermilion import AsyncWorker, Message, Queue, Success

logger = logging.getLogger(__name__)

WELCOME_WINDOW = 24 * 3600.0
"""Seconds during which a second welcome email to the same address is refused."""

queue_key = web.AppKey("queue", Queue)
worker_key = web.AppKey("worker", AsyncWorker)


async def send_welcome(msg: Message) -> Success:
    """The handler: runs in the app's worker, once per message."""
    logger.info("sending a welcome email to %s (attempt %d)", msg.content["email"], msg.attempt)
    # ... call the mail service here; an exception fails the message (see on_exception)
    return Success(backoff=WELCOME_WINDOW)  # the mid stays de-duplicated for a day


async def vermilion_ctx(app: web.Application) -> AsyncIterator[None]:
    url = os.environ.get("VERMILION_URL", "redis://127.0.0.1:6379/0")
    name = os.environ.get("VERMILION_QUEUE", "emails")
    # Contexts exit in reverse: the worker stops first, then the queue closes its client.
    async with Queue(name, url) as queue, AsyncWorker(queue, send_welcome, concurrency=20) as worker:
        app[queue_key] = queue
        app[worker_key] = worker
        yield


async def welcome(request: web.Request) -> web.Response:
    body = await request.json()
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str) or not 3 <= len(email) <= 254:
        raise web.HTTPBadRequest(text='expected {"email": "<address>"}')
    email = email.strip().lower()
    result = await request.app[queue_key].enqueue({"email": email}, mid=f"welcome:{email}")
    # Refused ("already-queued", "locked" or "backoff"): this address is taken care of.
    return web.json_response(asdict(result), status=202 if result.ok else 409)


async def worker_status(request: web.Request) -> web.Response:
    return web.json_response((await request.app[worker_key].status()).as_dict())


def create_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(vermilion_ctx)
    app.router.add_post("/welcome", welcome)
    app.router.add_get("/status", worker_status)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    web.run_app(create_app())
