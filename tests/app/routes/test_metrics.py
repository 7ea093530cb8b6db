"""GET /metrics."""

from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.images import png_bytes, product_photo


def metric_value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in the metrics")


def test_metrics_count_requests_latency_predictions_and_name_the_model(client: TestClient) -> None:
    upload = {"file": ("a.png", png_bytes(), "image/png")}
    predicted = client.post("/predict", files=upload).json()["class_name"]
    client.post("/predict", files=upload)
    client.post("/predict", files={"file": ("a.png", b"", "image/png")})
    client.get("/nowhere")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    requests = 'fashion_http_requests_total{method="POST",route="/predict",status="%s"}'
    assert metric_value(text, requests % "200") == 2
    assert metric_value(text, requests % "400") == 1
    assert metric_value(text, 'fashion_http_requests_total{method="GET",route="unmatched",status="404"}') == 1
    assert (
        metric_value(text, 'fashion_http_request_duration_seconds_count{method="POST",route="/predict"}') == 3
    )
    assert 'fashion_http_request_duration_seconds_bucket{le="0.1",method="POST",route="/predict"}' in text
    version = client.get("/health").json()["model_version"]
    model = f'model="fashion-mnist",model_version="{version}"'
    assert metric_value(text, f'fashion_predictions_total{{class_name="{predicted}",{model}}}') == 2
    assert metric_value(text, f'fashion_predictions_total{{class_name="Ankle boot",{model}}}') in (0, 2)
    assert 'fashion_model_info{arch="cnn",device="cpu",' in text
    assert f'{model},parameters="' in text


def test_refused_uploads_are_counted_under_their_route(tiny_checkpoint: Path) -> None:
    with TestClient(
        create_app(Settings(model_path=tiny_checkpoint, device="cpu", max_upload_bytes=100))
    ) as client:
        assert client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")}).status_code == 413
        text = client.get("/metrics").text
    assert metric_value(text, 'fashion_http_requests_total{method="POST",route="/predict",status="413"}') == 1


def test_each_app_has_its_own_registry(settings: Settings) -> None:
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        first.get("/classes")
        first.get("/classes")
        second.get("/classes")
        sample = 'fashion_http_requests_total{method="GET",route="/classes",status="200"}'
        assert metric_value(first.get("/metrics").text, sample) == 2
        assert metric_value(second.get("/metrics").text, sample) == 1


def test_decode_queue_wait_and_forward_time_are_recorded_where_they_happen(client: TestClient) -> None:
    small = {"file": ("a.png", png_bytes(), "image/png")}  # decoded in the inference worker
    photo = {"file": ("b.png", png_bytes(product_photo()), "image/png")}  # in a decoder process
    assert client.post("/predict", files=small).status_code == 200
    assert client.post("/predict", files=photo).status_code == 200
    text = client.get("/metrics").text
    assert metric_value(text, 'fashion_decode_seconds_count{where="worker"}') == 1
    assert metric_value(text, 'fashion_decode_seconds_count{where="decoder"}') == 1
    assert metric_value(text, 'fashion_decode_seconds_sum{where="decoder"}') > 0
    assert metric_value(text, "fashion_queue_wait_seconds_count") == 2
    assert metric_value(text, "fashion_inference_seconds_count") == 2
    assert metric_value(text, "fashion_batch_size_count") == 2
