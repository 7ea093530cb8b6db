"""Each request's id, echoed as X-Request-ID on every answer, and its one access line.

The outermost middleware, so it sees every answer the app gives: a 401 from the API key, a
413 from the upload limit, a 404, a 500. The access line (logger ``app.access``) holds the
request id, method, path, status, latency, body bytes read, the client, the model, and for
predictions each image's class, confidence and out-of-distribution flag; never the upload,
and the path only cut to a bounded, printable length.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import request_context
from app.metrics import route_template
from app.proxies import ClientAddress

logger = logging.getLogger("app.access")

_MAX_PATH = 200  # enough for every route; a longer path is cut, not logged whole
_PRINTABLE = {i: "?" for i in range(0x20)} | {0x7F: "?"}

# (model name, model version), both None until the model is loaded
ModelInfo = Callable[[], tuple[str | None, str | None]]


def clean_path(path: str) -> str:
    """The path as it may appear in a log line: bounded, without control characters."""
    if len(path) > _MAX_PATH:
        path = path[:_MAX_PATH] + "..."
    return path.translate(_PRINTABLE)


class AccessLogMiddleware:
    """Give each HTTP request an id (kept from X-Request-ID when valid), answer with it, log it."""

    def __init__(
        self, app: ASGIApp, model: ModelInfo, trusted_proxies: Callable[[], tuple[str, ...]]
    ) -> None:
        self.app = app
        self.model = model
        self.trusted_proxies = trusted_proxies
        self._clients: tuple[tuple[str, ...], ClientAddress] | None = None

    def _client(self, scope: Scope) -> str | None:
        trusted = self.trusted_proxies()
        if self._clients is None or self._clients[0] != trusted:
            self._clients = (trusted, ClientAddress(trusted))
        peer = scope.get("client")
        return self._clients[1].of(peer[0] if peer else None, scope["headers"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_context.resolve_id(scope["headers"])
        header = (request_context.HEADER, request_id.encode("ascii"))
        context, token = request_context.begin(request_id)
        status = 500  # unless a response starts: an exception escaped
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def identified_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, counting_receive, identified_send)
        finally:
            try:
                self._log(scope, context, status, received, time.perf_counter() - start)
            finally:
                request_context.end(token)

    def _log(
        self,
        scope: Scope,
        context: request_context.RequestContext,
        status: int,
        received: int,
        elapsed_s: float,
    ) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        method, path = scope["method"][:16], clean_path(scope["path"])
        # The version that answered, for a prediction; else the default model's newest.
        name, version = context.model or self.model()
        fields = {
            "request_id": context.request_id,
            "method": method,
            "path": path,
            "route": route_template(scope),
            "status": status,
            "latency_ms": round(elapsed_s * 1000, 3),
            "request_bytes": received,
            "client": self._client(scope),
            "model": name,
            "model_version": version,
        }
        predicted = ""
        predictions = context.predictions
        if len(predictions) == 1:
            best = predictions[0].top[0]
            fields["class_name"], fields["confidence"] = best.name, round(best.probability, 6)
            if predictions[0].out_of_distribution is not None:
                fields["out_of_distribution"] = predictions[0].out_of_distribution
            flag = " (out of distribution)" if predictions[0].out_of_distribution else ""
            predicted = f" -> {best.name} {best.probability:.3f}{flag}"
        elif predictions:
            fields["class_names"] = [p.top[0].name for p in predictions]
            fields["confidences"] = [round(p.top[0].probability, 6) for p in predictions]
            if predictions[0].out_of_distribution is not None:
                fields["out_of_distribution"] = [bool(p.out_of_distribution) for p in predictions]
            predicted = f" -> {len(predictions)} predictions"
        client, model = fields["client"] or "-", f"{name}@{version}" if version else "-"
        logger.info(
            '%s "%s %s" %d %.1f ms %d B %s%s',
            client,
            method,
            path,
            status,
            elapsed_s * 1000,
            received,
            model,
            predicted,
            extra=fields,
        )
