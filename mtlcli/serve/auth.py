"""The API key: every request but GET /health carries ``Authorization: Bearer <key>``, or gets 401.

/health stays open so a load balancer can probe without the key. The key is compared in constant
time (``hmac.compare_digest``), so answer times do not tell how much of a guess was right.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.responses import JSONResponse

OPEN_PATHS = ("/health",)


class RequireKey:
    """ASGI middleware in front of the app: a request without the key never reaches it."""

    def __init__(self, app: Any, key: str):
        self.app, self.key = app, key.encode("utf-8")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        problem = self.problem(dict(scope["headers"]).get(b"authorization"))
        if problem is None:
            await self.app(scope, receive, send)
            return
        response = JSONResponse({"error": problem}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def problem(self, header: bytes | None) -> str | None:
        """Why ``header`` does not authorize the request, or None when it does."""
        if header is None:
            return "no API key: send the header Authorization: Bearer <key>"
        scheme, _, token = header.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return "the Authorization header must be: Bearer <key>"
        if not hmac.compare_digest(token.strip(), self.key):
            return "wrong API key"
        return None
