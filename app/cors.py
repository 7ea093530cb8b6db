"""CORS: off unless FASHION_CORS_ORIGINS names origins, then Starlette's CORSMiddleware."""

from __future__ import annotations

from collections.abc import Callable

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

ALLOWED_METHODS = ["GET", "POST"]
ALLOWED_HEADERS = ["Authorization", "X-API-Key", "X-Request-ID"]
# A page's script may read the id of each answer, to report it with an error.
EXPOSED_HEADERS = ["X-Request-ID"]


class ConfiguredCORS:
    """Starlette's CORSMiddleware for the configured origins; without any, nothing at all.

    The app is assembled before its settings are read (the lifespan reads them), so the
    decision is taken at the first request, when ``origins()`` is known.
    """

    def __init__(self, app: ASGIApp, origins: Callable[[], tuple[str, ...]]) -> None:
        self.app = app
        self.origins = origins
        self._cors: tuple[tuple[str, ...], CORSMiddleware] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origins = self.origins() if scope["type"] == "http" else ()
        if not origins:
            await self.app(scope, receive, send)
            return
        if self._cors is None or self._cors[0] != origins:
            cors = CORSMiddleware(
                self.app,
                allow_origins=origins,
                allow_methods=ALLOWED_METHODS,
                allow_headers=ALLOWED_HEADERS,
                expose_headers=EXPOSED_HEADERS,
            )
            self._cors = (origins, cors)
        await self._cors[1](scope, receive, send)
