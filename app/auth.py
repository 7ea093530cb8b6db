"""Optional API key: when FASHION_API_KEY is set, the model's routes ask for it.

The key is accepted as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (each
trimmed of surrounding spaces) and compared in constant time; a request that presents a
wrong key in either header is refused, whatever the other says. Health checks and the web
page stay open, so a load balancer and a browser still reach them.

Two places check it: ``ApiKeyMiddleware`` refuses a protected POST before its body is read (a caller
without the key spends neither our bandwidth nor our parsers), and the ``ApiKey``
dependency guards each protected route, GETs included, and documents its 401.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.dependencies import loaded_settings, service_state
from app.errors import error_content

UNAUTHORIZED = "missing or invalid API key: send Authorization: Bearer <key> or X-API-Key: <key>"
ADMIN_DISABLED = "the repository calls are disabled: the server has no FASHION_ADMIN_KEY"
ADMIN_UNAUTHORIZED = (
    "missing or invalid admin key: send Authorization: Bearer <admin key> or X-API-Key: <admin key>"
)
# Marks an operation guarded by the admin key, not the API key (``protected_posts`` skips it).
ADMIN_OPERATION = {"x-admin-key": True}
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def presented_keys(headers: Headers) -> list[str]:
    """The keys a request presents, from either header, trimmed; a malformed Authorization
    header counts as a wrong key."""
    keys = []
    if (x_api_key := headers.get("x-api-key")) is not None:
        keys.append(x_api_key.strip())
    if (authorization := headers.get("authorization")) is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        keys.append(credentials.strip() if scheme.lower() == "bearer" else "")
    return keys


def key_accepted(headers: Headers, expected: SecretStr) -> bool:
    """At least one key presented, and every one presented the right one."""
    wanted = expected.get_secret_value().encode()
    keys = presented_keys(headers)
    # Every comparison runs, so the time taken does not tell which header was wrong.
    matches = [hmac.compare_digest(key.encode(), wanted) for key in keys]
    return bool(matches) and all(matches)


async def require_api_key(request: Request) -> None:
    """Let the request through when no key is configured or the right one is presented."""
    # Async although it never waits: a plain def would run in the thread pool, a round
    # trip to another thread on every protected request. The settings are read from the
    # app, not through sub-dependencies: each one FastAPI solves costs every request.
    settings = loaded_settings(service_state(request))
    if settings.api_key is not None and not key_accepted(request.headers, settings.api_key):
        raise HTTPException(401, detail=UNAUTHORIZED, headers=CHALLENGE)


ApiKey = Depends(require_api_key)


async def require_admin_key(request: Request) -> None:
    """Let a call that changes what is served through only with FASHION_ADMIN_KEY; none set, none do."""
    settings = loaded_settings(service_state(request))
    if settings.admin_key is None:
        raise HTTPException(403, detail=ADMIN_DISABLED)
    if not key_accepted(request.headers, settings.admin_key):
        raise HTTPException(401, detail=ADMIN_UNAUTHORIZED, headers=CHALLENGE)


AdminKey = Depends(require_admin_key)


def protected_posts(app: FastAPI) -> Callable[[str], bool]:
    """Whether a path is one of ``app``'s POST routes that ask for the key: those whose
    OpenAPI operation documents a 401 (read once, on first use, when every route is in)."""
    patterns: list[re.Pattern[str]] = []

    def protected(path: str) -> bool:
        if not patterns:
            for template, operations in app.openapi()["paths"].items():
                post = operations.get("post", {})
                if "401" in post.get("responses", {}) and not post.get("x-admin-key"):
                    patterns.append(
                        re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$")
                    )
        return any(pattern.match(path) for pattern in patterns)

    return protected


class ApiKeyMiddleware:
    """Refuse a POST to a protected route without the key before anything reads its body.
    GETs carry no body and are left to the routes' ``ApiKey``; so is a POST to any other path
    (a 404 or 405 as ever)."""

    def __init__(
        self, app: ASGIApp, api_key: Callable[[], SecretStr | None], protected: Callable[[str], bool]
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.protected = protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            expected = self.api_key()
            if (
                expected is not None
                and self.protected(scope["path"])
                and not key_accepted(Headers(scope=scope), expected)
            ):
                # The body stays unread: the connection cannot be reused.
                headers = {**CHALLENGE, "Connection": "close"}
                response = JSONResponse(error_content(scope["path"], UNAUTHORIZED), 401, headers=headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
