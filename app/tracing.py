"""Traces (OpenTelemetry), off unless ``FASHION_OTEL_ENDPOINT`` names an OTLP/HTTP collector.

Each request is a server span, made by OpenTelemetry's ASGI instrumentation (the middleware
under its FastAPI instrumentation; it continues a client's W3C ``traceparent``), with the
request id as the attribute ``request.id``. Its steps are child spans: ``decode``,
``queue wait`` and ``forward pass``. The worker runs in another process and holds no tracer:
it stamps when a traced request's steps began and ended (``messages.Timings``, on one clock
for every process of the machine) and the server records the spans with those times.

Off, nothing here runs on a request: the middleware passes each one straight through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__, request_context
from app.inference.messages import Timings
from app.metrics import route_template

SERVICE_NAME = "fashion-mnist-serving"
REQUEST_ID = "request.id"
EXPORT_TIMEOUT_S = 3.0


def otlp_exporter(endpoint: str) -> SpanExporter:
    """Spans sent as OTLP protobuf over HTTP to ``endpoint`` (its full URL, /v1/traces included)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Each export, retries included, gives up after this: a collector that is down must not
    # hold the server's shut-down (which sends what is buffered) for long.
    return OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_S)


class Tracing:
    """A tracer provider of the app's own (never the process-global one: tests run many apps)."""

    def __init__(self, exporter: SpanExporter, batch: bool = True) -> None:
        resource = Resource.create({"service.name": SERVICE_NAME, "service.version": __version__})
        self.provider = TracerProvider(resource=resource)
        # Batched, spans leave from a thread of the exporter's, off the request's path; one by
        # one (tests), each span is exported when it ends.
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("app")

    def instrument(self, app: ASGIApp) -> ASGIApp:
        """``app`` inside a server span per request; spans for each ASGI message are left out."""
        return OpenTelemetryMiddleware(
            _NameByRoute(app),
            default_span_details=_method_only,
            server_request_hook=_name_request,
            tracer=self.provider.get_tracer("opentelemetry.instrumentation.asgi"),
            exclude_spans=["receive", "send"],
        )

    def step(self, name: str, start_ns: int, end_ns: int, **attributes: Any) -> None:
        """A finished step of the current request, as a child of its span."""
        span = self.tracer.start_span(name, start_time=start_ns)
        span.set_attribute(REQUEST_ID, request_context.current_id() or "")
        for key, value in attributes.items():
            span.set_attribute(key, value)
        span.end(end_time=end_ns)

    def worker_steps(self, timings: Timings) -> None:
        """The steps the worker stamped: decode (of small uploads), queue wait, forward pass."""
        if timings.decode_start:
            self.step("decode", timings.decode_start, timings.decode_end, **{"decode.where": "worker"})
        if timings.pass_start:
            self.step("queue wait", timings.queued, timings.pass_start)
            size = {"batch.size": timings.batch_size}
            self.step("forward pass", timings.pass_start, timings.pass_end, **size)

    @staticmethod
    def recording() -> bool:
        """Whether the code running now is inside a span being recorded."""
        return trace.get_current_span().is_recording()

    def shutdown(self) -> None:
        """Send what is still buffered, then stop."""
        self.provider.shutdown()


def _method_only(scope: Scope) -> tuple[str, dict[str, str]]:
    return str(scope.get("method", "HTTP")), {}


class _NameByRoute:
    """Name the request's span ``METHOD /route/template`` as its answer starts, once routing
    has found the route (the span ends with the answer's last byte): never the raw path, so
    span names stay a bounded set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        span = trace.get_current_span()

        async def naming_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                template = route_template(scope)
                span.update_name(f"{scope.get('method', 'HTTP')} {template}")
                span.set_attribute("http.route", template)
            await send(message)

        await self.app(scope, receive, naming_send)


def _name_request(span: Any, scope: Scope) -> None:
    if span.is_recording():
        span.set_attribute(REQUEST_ID, request_context.current_id() or "")


class TracingMiddleware:
    """A server span per request when tracing is on; otherwise the request passes straight on.

    The app is assembled before its settings are read (the lifespan reads them), so whether
    to trace is decided per request, from ``tracing()``.
    """

    def __init__(self, app: ASGIApp, tracing: Callable[[], Tracing | None]) -> None:
        self.app = app
        self.tracing = tracing
        self._traced: tuple[Tracing, ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracing = self.tracing() if scope["type"] == "http" else None
        if tracing is None:
            await self.app(scope, receive, send)
            return
        if self._traced is None or self._traced[0] is not tracing:
            self._traced = (tracing, tracing.instrument(self.app))
        await self._traced[1](scope, receive, send)
