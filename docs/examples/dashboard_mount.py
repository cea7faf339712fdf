"""FastAPI: the vermilion dashboard mounted in your app, at /ops/queues/.

    pip install 'vermilion[dashboard]' fastapi uvicorn
    export VERMILION_URL=redis://127.0.0.1:6379/0
    export VERMILION_DASHBOARD_TOKEN=$(openssl rand -hex 16)   # optional: enables replay and purge
    uvicorn dashboard_mount:app

Then open http://127.0.0.1:8000/ops/queues/. The dashboard does no authentication
of its own for reading: protect /ops as you protect your other admin pages.
"""

import os

from fastapi import FastAPI

from vermilion import dashboard

token = os.environ.get("VERMILION_DASHBOARD_TOKEN")

app = FastAPI()
# The URL comes from $VERMILION_URL; actions only with a token.
app.mount("/ops/queues", dashboard.app(actions=token is not None, token=token))


@app.get("/")
async def home() -> dict[str, str]:
    return {"dashboard": "/ops/queues/"}
