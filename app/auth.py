"""Optional API key: when FASHION_API_KEY is set, the model's routes ask for it.

The key is accepted as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` and
compared in constant time. Health checks and the web page stay open, so a load
balancer and a browser still reach them.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request

from app.dependencies import loaded_settings, service_state

UNAUTHORIZED = "missing or invalid API key: send Authorization: Bearer <key> or X-API-Key: <key>"


def _presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return credentials.strip()
    return None


async def require_api_key(request: Request) -> None:
    """Let the request through when no key is configured or the right one is presented."""
    # Async although it never waits: a plain def would run in the thread pool, a round
    # trip to another thread on every protected request. The settings are read from the
    # app, not through sub-dependencies: each one FastAPI solves costs every request.
    settings = loaded_settings(service_state(request))
    if settings.api_key is None:
        return
    # Read from the request itself, not as declared Header parameters: those would add
    # a validation (422) answer to every protected route's contract.
    presented_key = _presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    expected = settings.api_key.get_secret_value().encode()
    presented = (presented_key or "").encode()
    if not hmac.compare_digest(presented, expected):
        raise HTTPException(401, detail=UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


ApiKey = Depends(require_api_key)
