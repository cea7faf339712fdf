"""FastAPI: enqueue from an endpoint; the app's own worker handles the queue.

    pip install vermilion fastapi uvicorn
    VERMILION_URL=redis://127.0.0.1:6379/0 uvicorn fastapi_app:app

    curl -i localhost:8000/welcome -H 'content-type: application/json' -d '{"email": "ada@example.com"}'
    curl localhost:8000/status

The queue and the worker live as long as the app: the lifespan opens the queue,
starts the worker, and on shutdown stops the worker (running handlers finish)
before it closes the queue.
"""

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response, status
from pydantic import BaseModel, Field

from vermilion import AsyncWorker, Message, Queue, Success

logger = logging.getLogger(__name__)

WELCOME_WINDOW = 24 * 3600.0
"""Seconds during which a second welcome email to the same address is refused."""


async def send_welcome(msg: Message) -> Success:
    """The handler: runs in the app's worker, once per message."""
    logger.info("sending a welcome email to %s (attempt %d)", msg.content["email"], msg.attempt)
    # ... call the mail service here; an exception fails the message (see on_exception)
    return Success(backoff=WELCOME_WINDOW)  # the mid stays de-duplicated for a day


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ.get("VERMILION_URL", "redis://127.0.0.1:6379/0")
    name = os.environ.get("VERMILION_QUEUE", "emails")
    # Contexts exit in reverse: the worker stops first, then the queue closes its client.
    async with Queue(name, url) as queue, AsyncWorker(queue, send_welcome, concurrency=20) as worker:
        app.state.queue = queue
        app.state.worker = worker
        yield


def get_queue(request: Request) -> Queue:
    queue: Queue = request.app.state.queue
    return queue


def get_worker(request: Request) -> AsyncWorker:
    worker: AsyncWorker = request.app.state.worker
    return worker


app = FastAPI(lifespan=lifespan)


class Signup(BaseModel):
    email: str = Field(min_length=3, max_length=254)


@app.post("/welcome", status_code=status.HTTP_202_ACCEPTED)
async def welcome(
    signup: Signup, response: Response, queue: Annotated[Queue, Depends(get_queue)]
) -> dict[str, Any]:
    email = signup.email.strip().lower()
    result = await queue.enqueue({"email": email}, mid=f"welcome:{email}")
    if not result.ok:  # "already-queued", "locked" or "backoff": this address is taken care of
        response.status_code = status.HTTP_409_CONFLICT
    return asdict(result)  # {"ok": ..., "mid": ..., "action": ..., "error": ...}


@app.get("/status")
async def worker_status(worker: Annotated[AsyncWorker, Depends(get_worker)]) -> dict[str, Any]:
    return (await worker.status()).as_dict()
