"""One Redis client, and so one connection pool, shared by the app and its queue.

    pip install vermilion fastapi uvicorn
    VERMILION_URL=redis://127.0.0.1:6379/0 uvicorn shared_pool:app

    curl -i localhost:8000/welcome -H 'content-type: application/json' -d '{"email": "ada@example.com"}'
    curl localhost:8000/welcomed/ada@example.com

The app makes one ``redis.asyncio.Redis`` client for its own keys and lends it
to the queue with ``Queue(name, redis=client)``. A queue never closes a client
it was given: the app closes it, after the worker has stopped. The client
decodes replies to ``str`` for the app's convenience; vermilion reads its own
replies with decoding disabled, so message payloads stay bytes either way.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from functools import partial
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Request, Response, status
from pydantic import BaseModel, Field

from vermilion import AsyncWorker, Message, Queue, Success

WELCOME_WINDOW = 24 * 3600.0
"""Seconds during which a second welcome email to the same address is refused."""


def welcomed_key(queue_name: str) -> str:
    """The app's own hash: email address -> when its welcome email was sent."""
    return f"{queue_name}:welcomed"


async def send_welcome(redis: aioredis.Redis, msg: Message) -> Success:
    """The handler, given the shared client with ``partial``."""
    # ... call the mail service here, then remember when:
    sent_at = datetime.now(timezone.utc).isoformat()
    await redis.hset(welcomed_key(msg.queue), msg.content["email"], sent_at)
    return Success(backoff=WELCOME_WINDOW)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ.get("VERMILION_URL", "redis://127.0.0.1:6379/0")
    name = os.environ.get("VERMILION_QUEUE", "emails")
    # The one client of the app. Its timeouts apply to vermilion's calls too (BLPOP
    # sets its own), so bound them as vermilion does for the clients it makes.
    redis = aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30)
    # Exits in reverse: the worker stops, the queue lets go (it does not close a
    # client it was given), and only then does the client close its pool.
    async with (
        redis,
        Queue(name, redis=redis) as queue,
        AsyncWorker(queue, partial(send_welcome, redis), concurrency=20) as worker,
    ):
        app.state.redis = redis
        app.state.queue = queue
        app.state.worker = worker
        yield


def get_redis(request: Request) -> aioredis.Redis:
    redis: aioredis.Redis = request.app.state.redis
    return redis


def get_queue(request: Request) -> Queue:
    queue: Queue = request.app.state.queue
    return queue


app = FastAPI(lifespan=lifespan)


class Signup(BaseModel):
    email: str = Field(min_length=3, max_length=254)


@app.post("/welcome", status_code=status.HTTP_202_ACCEPTED)
async def welcome(
    signup: Signup, response: Response, queue: Annotated[Queue, Depends(get_queue)]
) -> dict[str, Any]:
    email = signup.email.strip().lower()
    result = await queue.enqueue({"email": email}, mid=f"welcome:{email}")
    if not result.ok:
        response.status_code = status.HTTP_409_CONFLICT
    return asdict(result)


@app.get("/welcomed/{email}")
async def welcomed(
    email: str,
    redis: Annotated[aioredis.Redis, Depends(get_redis)],
    queue: Annotated[Queue, Depends(get_queue)],
) -> dict[str, Any]:
    # A decoding client answers str (or None): no .decode() here.
    sent_at = await redis.hget(welcomed_key(queue.name), email.strip().lower())
    return {"email": email, "sent_at": sent_at}
