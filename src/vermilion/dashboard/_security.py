"""The dashboard's guards: who may run an action, and the headers every answer carries.

An action (replay, purge) changes Redis, so it passes three checks, in order:
actions are enabled; the request comes from the dashboard's own page (not a
cross-site request: ``Sec-Fetch-Site`` and ``Origin``, when the browser sends
them, must name this site); and it carries the token in ``X-Vermilion-Token``,
compared in constant time. A form on another site cannot set that header, and
a cross-site ``fetch`` that sets it needs a CORS preflight, which the
dashboard never grants.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TOKEN_HEADER", "ActionGuard", "SecurityHeaders", "check_token"]

TOKEN_HEADER = "X-Vermilion-Token"
_MIN_TOKEN_LENGTH = 16

# No inline script or style may run: data from Redis is only ever text, and
# even a missed escape could not execute.
_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        b" connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """ASGI middleware: every HTTP answer carries the headers above."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def check_token(token: str | None, actions: bool) -> str | None:
    """The token to require, checked against ``actions``."""
    if not actions:
        if token is not None:
            raise ValueError("token is given but actions are off: pass actions=True to enable them")
        return None
    if not isinstance(token, str):
        raise TypeError("actions=True needs a token (a str of at least 16 characters)")
    if len(token) < _MIN_TOKEN_LENGTH or not token.isprintable() or token.strip() != token:
        raise ValueError(
            f"token must be at least {_MIN_TOKEN_LENGTH} printable characters without surrounding spaces"
        )
    return token


class ActionGuard:
    """Decides whether a request may run an action; answers the refusal if not."""

    def __init__(self, token: str | None) -> None:
        self._token = None if token is None else token.encode()

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def refusal(self, request: Request) -> JSONResponse | None:
        """``None`` if the request may act, else the answer that refuses it."""
        if self._token is None:
            return _refuse(403, "actions are disabled (start the dashboard with actions enabled)")
        if not _same_site(request):
            return _refuse(403, "cross-site request refused")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _refuse(415, "actions take a JSON body (Content-Type: application/json)")
        given = request.headers.get(TOKEN_HEADER, "").encode()
        if not hmac.compare_digest(given, self._token):
            return _refuse(401, f"missing or wrong token ({TOKEN_HEADER} header)")
        return None


def _same_site(request: Request) -> bool:
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not sent by browsers for every same-origin request; the token still applies
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def _refuse(status: int, error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)
