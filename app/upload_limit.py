"""The upload size limit, enforced while the body arrives rather than after buffering it."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large_detail(limit: int) -> str:
    return f"the upload is larger than {limit} bytes"


class UploadTooLarge(HTTPException):
    """Raised from ``receive`` mid-body. An HTTPException, so FastAPI's body parsing lets it
    through to the exception handler instead of turning it into a generic 400."""

    def __init__(self, limit: int) -> None:
        # The rest of the body stays unread, so the connection cannot be reused.
        super().__init__(status_code=413, detail=too_large_detail(limit), headers={"Connection": "close"})


class UploadLimitMiddleware:
    """Answer 413 as soon as a request body passes ``max_bytes()`` bytes.

    The check sits in ``receive``, so it runs when a route starts reading the body, after
    routing (metrics still see the route). A Content-Length over the limit fails the first
    read, before any byte is taken in. Without one (chunked uploads), or when it lies, the
    bytes are counted as they arrive and the read that passes the limit fails; the rest
    of the body is never read.
    """

    def __init__(self, app: ASGIApp, max_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        declared = Headers(scope=scope).get("content-length", "")
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > limit:
                raise UploadTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise UploadTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except UploadTooLarge:
            # FastAPI's exception handler normally answers; this covers a body read elsewhere.
            if response_started:
                raise
            await _refuse(limit, scope, receive, send)


async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(
        {"detail": too_large_detail(limit)}, status_code=413, headers={"Connection": "close"}
    )
    await response(scope, receive, send)
