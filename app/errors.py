"""Error answers: always JSON ``{"detail": "..."}`` with a short message, never a traceback
(``{"error": "..."}`` on the Open Inference Protocol's ``/v2`` routes, as that protocol says).

Also the OpenAPI descriptions of those answers, so /docs shows each with an example.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.inference.protocol import (
    InferenceTimeoutError,
    InferenceUnavailableError,
    NonFiniteOutputError,
    QueueFullError,
)
from app.schemas import ErrorResponse
from app.v2.codec import ProtocolError
from models.images import FORMAT_NAMES, ImageError, NotAnImageError

logger = logging.getLogger("app")

SUPPORTED_FORMATS = FORMAT_NAMES
INTERNAL_ERROR = "internal server error"

# status: (when, an example detail)
_ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "The upload is empty, not a decodable image, truncated, over the pixel limit, or too costly to "
        "decode (its CPU time or memory budget)",
        "the file is empty",
    ),
    401: (
        "FASHION_API_KEY is set and the request does not carry it",
        "missing or invalid API key: send Authorization: Bearer <key> or X-API-Key: <key>",
    ),
    404: (
        "The model named by `model` is not served",
        "unknown model 'shoes'; this server serves 'fashion-mnist'",
    ),
    408: (
        "The request body did not all arrive within the body timeout",
        "the request body did not arrive within 30 s",
    ),
    413: ("The request body is larger than the upload limit", "the upload is larger than 10485760 bytes"),
    415: (
        "The file is a known non-image type (PDF, SVG, HTML, JSON, text), or an image format the "
        "service does not read (ICO, PSD, EPS, ...)",
        f"the file is PDF, not an image; send a {SUPPORTED_FORMATS} image",
    ),
    422: (
        "A parameter or the file field is missing or invalid",
        "top_k: Input should be less than or equal to 10",
    ),
    500: ("An unexpected error, logged on the server", INTERNAL_ERROR),
    503: (
        "The model is not loaded (the service is starting or failed to start), or the queue is full "
        "(retry after the Retry-After header's seconds)",
        "the model is not loaded",
    ),
    504: ("The prediction did not come within the request timeout", "no prediction within 30 s; retry"),
}
BUSY = "the server is busy; retry shortly"
NOT_A_FILE = "expected a file, got a text field; send the image as a file part (with a filename)"
# A body that is not a multipart form (the raw image, as curl --data-binary sends it): the
# uploads are multipart only, so one parser, with its limits, reads every upload.
NOT_MULTIPART = {
    "file": "file: Field required; send the image as a multipart/form-data field named file, "
    "as curl -F file=@image.png does",
    "files": "files: Field required; send the images as multipart/form-data fields named files, "
    "as curl -F files=@a.png -F files=@b.png does",
}
# Seconds a client should wait after a full queue: a hint, not a promise. In a second one
# worker answers a few hundred images (docs/BENCHMARKS.md), a good share of a full queue.
RETRY_AFTER_S = 1


def error_responses(
    *statuses: int, overrides: dict[int, tuple[str, str]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for these statuses, each with a schema and an example.

    ``overrides`` maps a status to a route's own (description, example detail).
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, example = (overrides or {}).get(status, _ERRORS[status])
        responses[status] = {
            "model": ErrorResponse,
            "description": description,
            "content": {"application/json": {"example": {"detail": example}}},
        }
    return responses


def image_error(exc: ImageError, prefix: str = "", batch: bool = False) -> HTTPException:
    """The HTTP answer for an upload the preprocessing rejected."""
    if isinstance(exc, NotAnImageError):
        detail = f"{prefix}{exc}; send a {SUPPORTED_FORMATS} image"
        # In a batch, one bad file is a 400 naming it (the request as a whole is fine).
        return HTTPException(400 if batch else 415, detail=detail)
    return HTTPException(400, detail=f"{prefix}{exc}")


def error_content(path: str, message: str) -> dict[str, str]:
    """An error's JSON body for a request to ``path``."""
    if path == "/v2" or path.startswith("/v2/"):
        return {"error": message}
    return {"detail": message}


def _describe_validation(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors():
        # loc is ("query", "top_k") or ("body", "file"): the parameter name is what a client knows.
        name = ".".join(str(part) for part in error.get("loc", ())[1:]) or "request"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if message.startswith("Expected UploadFile"):
            # FastAPI's wording names a Python class; a part without a filename is a text field.
            message = NOT_A_FILE
        problems.append(f"{name}: {message}")
    return "; ".join(problems)


def _missing_upload(request: Request, exc: RequestValidationError) -> str | None:
    """The fixed hint for an upload field missing from a body that is not a multipart form."""
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return None
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        if error.get("type") == "missing" and len(loc) == 2 and loc[0] == "body" and loc[1] in NOT_MULTIPART:
            return NOT_MULTIPART[str(loc[1])]
    return None


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = _missing_upload(request, exc) or _describe_validation(exc)
    return JSONResponse(error_content(request.url.path, detail), status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    content = error_content(request.url.path, str(exc.detail))
    return JSONResponse(content, status_code=exc.status_code, headers=exc.headers)


async def _protocol_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProtocolError)
    return JSONResponse(error_content(request.url.path, str(exc)), status_code=exc.status)


async def _queue_full(request: Request, exc: Exception) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(error_content(request.url.path, BUSY), status_code=503, headers=headers)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    # The message names what happened, nothing internal.
    return JSONResponse(error_content(request.url.path, str(exc)), status_code=503, headers=headers)


async def _timed_out(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_content(request.url.path, str(exc)), status_code=504)


async def _not_finite(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_content(request.url.path, str(exc)), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Validation errors as one readable string, like every other error; the engine's 503 and 504."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ProtocolError, _protocol_error)
    app.add_exception_handler(QueueFullError, _queue_full)
    app.add_exception_handler(InferenceTimeoutError, _timed_out)
    app.add_exception_handler(InferenceUnavailableError, _unavailable)
    app.add_exception_handler(NonFiniteOutputError, _not_finite)


class TrackedSend:
    """An ASGI ``send`` that remembers whether the response has started.

    A middleware that answers for a failed request may do so only before the first
    ``http.response.start``; after it, the only thing left is to drop the connection.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self.response_started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
        await self._send(message)


class UnexpectedErrorMiddleware:
    """Log an unhandled exception with its traceback and answer a bare 500.

    Unlike an ``Exception`` handler, this does not re-raise to the server, which would
    log the same traceback a second time.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception:
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if tracked.response_started:
                raise  # too late for a clean answer: the server drops the connection
            response = JSONResponse(error_content(scope["path"], INTERNAL_ERROR), status_code=500)
            await response(scope, receive, send)
