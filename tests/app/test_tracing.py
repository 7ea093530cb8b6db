"""Traces: a span per request with its decode, queue wait and forward pass as children, joined
across the inference process, with the request id on each."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from app.main import create_app
from app.settings import Settings
from bench.otlp_sink import SinkServer
from tests.app.images import png_bytes, product_photo

PNG = {"file": ("item.png", png_bytes(), "image/png")}
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]  # one of each
    return named


def status_code(span: ReadableSpan) -> object:
    """The answer's status, under either the current or the stable HTTP semantic conventions."""
    assert span.attributes is not None
    return span.attributes.get("http.response.status_code", span.attributes.get("http.status_code"))


def test_a_request_through_the_worker_process_is_one_trace_of_its_steps(settings: Settings) -> None:
    assert settings.inference_process  # the worker is another process: its spans must join
    exporter = InMemorySpanExporter()
    with TestClient(create_app(settings, span_exporter=exporter)) as client:
        response = client.post(
            "/predict", files=PNG, headers={"X-Request-ID": "trace-me", "traceparent": TRACEPARENT}
        )
    assert response.status_code == 200
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"POST /predict", "decode", "queue wait", "forward pass"}
    request = spans.pop("POST /predict")
    # The client's trace continues (W3C traceparent), and the request id ties it to the log.
    assert f"{request.context.trace_id:032x}" == CLIENT_TRACE
    assert request.attributes is not None
    assert request.attributes["request.id"] == "trace-me"
    assert request.attributes["http.route"] == "/predict"
    assert status_code(request) == 200
    for span in spans.values():
        assert span.parent is not None and span.parent.span_id == request.context.span_id
        assert span.context.trace_id == request.context.trace_id
        assert span.attributes is not None and span.attributes["request.id"] == "trace-me"
        assert span.start_time is not None and span.end_time is not None
        assert request.start_time <= span.start_time <= span.end_time <= request.end_time  # type: ignore[operator]
    decode, wait, forward = spans["decode"], spans["queue wait"], spans["forward pass"]
    assert decode.attributes["decode.where"] == "worker"  # type: ignore[index]
    # The steps, in order, as the worker stamped them.
    assert decode.end_time <= wait.start_time <= wait.end_time <= forward.start_time  # type: ignore[operator]
    assert forward.attributes["batch.size"] >= 1  # type: ignore[index,operator]


def test_an_upload_for_the_decoders_has_its_decode_span_from_them(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    photo = png_bytes(product_photo())  # bigger than the worker decodes itself
    with TestClient(create_app(settings, span_exporter=exporter)) as client:
        response = client.post("/predict", files={"file": ("photo.png", photo, "image/png")})
    assert response.status_code == 200
    spans = by_name(exporter.get_finished_spans())
    assert spans["decode"].attributes["decode.where"] == "decoder"  # type: ignore[index]
    assert spans["decode"].attributes["request.id"] == response.headers["x-request-id"]  # type: ignore[index]
    assert {"queue wait", "forward pass"} <= set(spans)


def test_a_failed_request_is_traced_with_its_status(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    with TestClient(create_app(settings, span_exporter=exporter)) as client:
        response = client.post("/predict", files={"file": ("empty.png", b"", "image/png")})
    assert response.status_code == 400
    request = by_name(exporter.get_finished_spans())["POST /predict"]
    assert request.attributes is not None
    assert status_code(request) == 400
    assert request.attributes["request.id"] == response.headers["x-request-id"]


def test_tracing_is_off_without_an_endpoint(settings: Settings) -> None:
    assert settings.otel_endpoint is None
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.post("/predict", files=PNG).status_code == 200
        assert app.state.service.tracing is None


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://otel-collector:4318", "http://otel-collector:4318/v1/traces"),
        ("http://otel-collector:4318/", "http://otel-collector:4318/v1/traces"),
        ("https://traces.example.com/otlp/v1/traces", "https://traces.example.com/otlp/v1/traces"),
        ("", None),
    ],
)
def test_the_endpoint_is_a_collector_address_or_its_traces_url(
    tiny_checkpoint: Path, endpoint: str, expected: str | None
) -> None:
    assert Settings(model_path=tiny_checkpoint, otel_endpoint=endpoint).otel_endpoint == expected


def test_an_endpoint_setting_sends_the_spans_there_over_otlp_http(tiny_checkpoint: Path) -> None:
    sink = SinkServer()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    settings = Settings(
        model_path=tiny_checkpoint, device="cpu", inference_process=False, otel_endpoint=sink.endpoint
    )
    try:
        with TestClient(create_app(settings)) as client:
            assert client.post("/predict", files=PNG).status_code == 200
        # Batched in the exporter's thread; what is left is sent at shut-down.
        assert sink.exports and sink.exports[0][:2] == ("/v1/traces", "application/x-protobuf")
    finally:
        sink.shutdown()
        sink.server_close()


def test_a_request_the_sampler_leaves_out_has_no_spans_and_no_stamps(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's own variables choose the share traced (here: none), read when tracing starts.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exporter = InMemorySpanExporter()
    app = create_app(settings, span_exporter=exporter)
    with TestClient(app) as client:
        assert client.post("/predict", files=PNG).status_code == 200
        assert not app.state.service.tracing.recording()  # outside any request, nothing either
    assert exporter.get_finished_spans() == ()


def test_a_500_marks_its_request_span_as_an_error(
    thread_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    app = create_app(thread_settings, span_exporter=exporter)
    with TestClient(app) as client:

        def broken(*args: object) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(app.state.service.predictor, "predict_scored", broken)
        assert client.post("/predict", files=PNG).status_code == 500
    request = by_name(exporter.get_finished_spans())["POST /predict"]
    assert status_code(request) == 500
    assert request.status.status_code is StatusCode.ERROR
