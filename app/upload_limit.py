"""Limits on the request body, enforced while it arrives: its size, and how long it may take."""

from __future__ import annotations

import math
from collections.abc import Callable

import anyio
from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import TrackedSend, error_content


def too_large_detail(limit: int) -> str:
    return f"the upload is larger than {limit} bytes"


def too_slow_detail(timeout_s: float) -> str:
    return f"the request body did not arrive within {timeout_s:g} s"


class BodyRefused(HTTPException):
    """Raised from ``receive`` mid-body. An HTTPException, so FastAPI's body parsing lets it
    through to the exception handler instead of turning it into a generic 400."""

    def __init__(self, status_code: int, detail: str) -> None:
        # The rest of the body stays unread, so the connection cannot be reused.
        super().__init__(status_code=status_code, detail=detail, headers={"Connection": "close"})


class UploadTooLarge(BodyRefused):
    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_detail(limit))


class BodyTimeout(BodyRefused):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, too_slow_detail(timeout_s))


class UploadLimitMiddleware:
    """Answer 413 as soon as a request body passes ``max_bytes()`` bytes, and 408 when it has
    not all arrived ``body_timeout_s()`` seconds after the route started reading it.

    The checks sit in ``receive``, so they run when a route reads the body, after routing
    (metrics still see the route). A Content-Length over the limit fails the first read,
    before any byte is taken in. Without one (chunked uploads), or when it lies, the bytes
    are counted as they arrive and the read that passes the limit fails; the rest of the
    body is never read. The deadline covers the whole body, not the gap between chunks, so
    a client trickling a byte at a time cannot hold a connection for ever; reads after the
    body's last chunk (waiting for a disconnect) have none.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: Callable[[], int], body_timeout_s: Callable[[], float] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        timeout_s = self.body_timeout_s() if self.body_timeout_s else math.inf
        declared = Headers(scope=scope).get("content-length", "")
        received = 0
        deadline: float | None = None  # set by the first read
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, deadline, body_done
            if body_done:
                return await receive()
            if declared.isdigit() and int(declared) > limit:
                raise UploadTooLarge(limit)
            if deadline is None:
                deadline = anyio.current_time() + timeout_s
            with anyio.move_on_after(deadline - anyio.current_time()) as waiting:
                message = await receive()
            if waiting.cancelled_caught:
                raise BodyTimeout(timeout_s)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise UploadTooLarge(limit)
                body_done = not message.get("more_body", False)
            else:  # http.disconnect: the client is gone, there is no body left to wait for
                body_done = True
            return message

        tracked = TrackedSend(send)
        try:
            await self.app(scope, limited_receive, tracked)
        except BodyRefused as exc:
            # FastAPI's exception handler normally answers; this covers a body read elsewhere.
            if tracked.response_started:
                raise
            content = error_content(scope["path"], exc.detail)
            response = JSONResponse(content, status_code=exc.status_code, headers=exc.headers)
            await response(scope, receive, send)
