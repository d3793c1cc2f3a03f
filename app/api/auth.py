"""The API key, checked from the request's headers before anything reads its body.

A route dependency runs only after FastAPI has read and parsed the body: a malformed body
got its 422 before the 401, and a 15 MB upload was parsed for a caller without a key. This
pure ASGI middleware sits outside the body-size limit and answers 401 from the headers
alone. `/api/health` stays open; so do the docs when the settings open them.
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response

HEADER = b"x-api-key"
OPEN_PATHS = frozenset({"/api/health"})
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class ApiKeyGuard:
    def __init__(self, app: ASGIApp, api_key: str | None, open_docs: bool = False):
        self.app = app
        self.key = api_key.encode() if api_key is not None else None
        self.open_paths = OPEN_PATHS | DOC_PATHS if open_docs else OPEN_PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HEADER)
        if given is None or not secrets.compare_digest(given, self.key):
            await error_response(401, "X-API-Key: missing or wrong API key", "X-API-Key")(scope, receive, send)
            return
        await self.app(scope, receive, send)
