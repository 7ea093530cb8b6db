"""Traces (OpenTelemetry), off unless ``FASHION_OTEL_ENDPOINT`` names an OTLP/HTTP collector.

Each request is a server span, named by its route and continuing a client's W3C
``traceparent``, with the request id as the attribute ``request.id``. Its steps are child
spans: ``decode``, ``queue wait`` and ``forward pass``. The worker runs in another process
and holds no tracer: it stamps when a traced request's steps began and ended
(``messages.Timings``, on one clock for every process of the machine) and the server records
the spans with those times.

The server span is made here, not by OpenTelemetry's ASGI instrumentation: that one collects
its attributes and runs its metric hooks on every request, sampled or not, and a request the
sampler leaves out (``OTEL_TRACES_SAMPLER``) should cost next to nothing. Off, nothing here
runs on a request: the middleware passes each one straight through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__, request_context
from app.access_log import clean_path
from app.inference.messages import Timings
from app.metrics import route_template

SERVICE_NAME = "fashion-mnist-serving"
REQUEST_ID = "request.id"
EXPORT_TIMEOUT_S = 3.0
_PROPAGATED = (b"traceparent", b"tracestate")  # W3C trace context: all a span continues from


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

    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``app`` on a request inside its server span (unless the sampler leaves it out)."""
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _PROPAGATED
        }
        method = scope["method"][:16]
        peer = scope.get("client")
        span = self.tracer.start_span(
            method,
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": clean_path(scope["path"]),
                "url.scheme": scope.get("scheme", "http"),
                "client.address": peer[0] if peer else "",
                REQUEST_ID: request_context.current_id() or "",
            },
        )
        if not span.is_recording():  # left out by the sampler: nothing more to do
            await app(scope, receive, send)
            return

        async def traced_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Routing is done by now: the span is named by the route's template, never the
                # raw path, so span names stay a bounded set.
                template, status = route_template(scope), message["status"]
                span.update_name(f"{method} {template}")
                span.set_attributes({"http.route": template, "http.response.status_code": status})
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await app(scope, receive, traced_send)
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def step(self, name: str, start_ns: int, end_ns: int, **attributes: Any) -> None:
        """A finished step of the current request, as a child of its span."""
        attributes[REQUEST_ID] = request_context.current_id() or ""
        self.tracer.start_span(name, start_time=start_ns, attributes=attributes).end(end_time=end_ns)

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


class TracingMiddleware:
    """A server span per request when tracing is on; otherwise the request passes straight on.

    The app is assembled before its settings are read (the lifespan reads them), so whether
    to trace is decided per request, from ``tracing()``.
    """

    def __init__(self, app: ASGIApp, tracing: Callable[[], Tracing | None]) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracing = self.tracing() if scope["type"] == "http" else None
        if tracing is None:
            await self.app(scope, receive, send)
        else:
            await tracing.serve(self.app, scope, receive, send)
