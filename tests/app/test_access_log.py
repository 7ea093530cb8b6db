"""Request ids on every answer, and one access line per request, as JSON an operator can parse."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.access_log import clean_path
from app.logs import json_formatter
from app.main import create_app
from app.request_context import RequestIdFilter
from app.settings import Settings
from tests.app.images import png_bytes

KEY = "s3cret-key"
PNG = {"file": ("item.png", png_bytes(), "image/png")}


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the app's loggers write, through the JSON formatter and the request id filter
    the service gives its own handler (pytest's capture sits on the root logger instead)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestIdFilter())
    app_logger = logging.getLogger("app")
    app_logger.addHandler(handler)
    try:
        yield stream
    finally:
        app_logger.removeHandler(handler)


def lines(stream: io.StringIO, logger: str | None = None) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in stream.getvalue().splitlines()]  # every line is JSON
    return [line for line in parsed if logger is None or line["logger"] == logger]


def access_line(stream: io.StringIO, request_id: str) -> dict[str, Any]:
    found = [line for line in lines(stream, "app.access") if line["request_id"] == request_id]
    assert len(found) == 1, found  # one access line per request, never two
    return found[0]


@pytest.fixture
def locked_settings(tiny_checkpoint: Path) -> Settings:
    return Settings(
        model_path=tiny_checkpoint,
        device="cpu",
        inference_process=False,
        api_key=KEY,  # type: ignore[arg-type]
        max_upload_bytes=4000,
    )


def test_every_answer_carries_the_request_id_and_has_one_access_line(
    locked_settings: Settings, json_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = {"X-API-Key": KEY}
    app = create_app(locked_settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        answers = {
            200: client.post("/predict", files=PNG, headers={**key, "X-Request-ID": "lb-7f3a:01"}),
            401: client.post("/predict", files=PNG),  # the API key middleware, before the route
            404: client.get("/nowhere"),
            405: client.get("/predict", headers=key),
            413: client.post("/predict", files={"file": ("big.png", b"x" * 5000, "image/png")}, headers=key),
            422: client.post("/predict?top_k=99", files=PNG, headers=key),
        }

        def broken(*args: object) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(app.state.service.predictor, "predict_scored", broken)
        answers[500] = client.post("/predict", files=PNG, headers=key)
    for status, response in answers.items():
        assert response.status_code == status
        request_id = response.headers["x-request-id"]
        line = access_line(json_log, request_id)
        assert (line["status"], line["method"]) == (status, response.request.method)
    assert answers[200].headers["x-request-id"] == "lb-7f3a:01"
    # A 500's own log line (the traceback) carries the id too: the log follows the request.
    failed = answers[500].headers["x-request-id"]
    assert any(line.get("request_id") == failed and "exc_info" in line for line in lines(json_log, "app"))


def test_a_503_before_the_model_is_loaded_carries_one_too(settings: Settings) -> None:
    client = TestClient(create_app(settings))  # no lifespan: nothing loaded
    response = client.post("/predict", files=PNG, headers={"X-Request-ID": "retry-2"})
    assert response.status_code == 503
    assert response.headers["x-request-id"] == "retry-2"


@pytest.mark.parametrize(
    "given",
    [
        "",
        "a" * 129,  # longer than anyone's id
        "has space",
        "new\nline",
        "<script>",
        "café",
        "a,b",  # two ids folded into one header
    ],
)
def test_an_unusable_request_id_is_replaced_by_a_new_one(client: TestClient, given: str) -> None:
    response = client.get("/health", headers={"X-Request-ID": given.encode()})
    request_id = response.headers["x-request-id"]
    assert request_id != given
    assert len(request_id) == 32 and int(request_id, 16) >= 0  # a uuid4, as hex


def test_a_valid_request_id_is_kept_and_each_request_without_one_gets_its_own(client: TestClient) -> None:
    longest = "A1b2._:-" * 16
    assert client.get("/health", headers={"X-Request-ID": longest}).headers["x-request-id"] == longest
    first, second = (client.get("/health").headers["x-request-id"] for _ in range(2))
    assert first != second


def test_two_request_id_headers_are_replaced(client: TestClient) -> None:
    response = client.get("/health", headers=[("X-Request-ID", "one"), ("X-Request-ID", "two")])
    assert response.headers["x-request-id"] not in ("one", "two")


def test_the_access_line_holds_the_fields_a_log_pipeline_needs(
    client: TestClient, json_log: io.StringIO
) -> None:
    response = client.post("/predict", files=PNG, headers={"X-Request-ID": "req-1"})
    body = response.json()
    line = access_line(json_log, "req-1")
    assert line["level"] == "INFO"
    assert line["time"].endswith("+00:00")
    assert line["method"] == "POST"
    assert line["path"] == line["route"] == "/predict"
    assert line["status"] == 200
    assert 0 < line["latency_ms"] < 60_000
    assert line["request_bytes"] == int(response.request.headers["content-length"])
    assert line["client"] == "testclient"
    assert line["model"] == "fashion-mnist"
    assert line["model_version"] == body["model_version"]
    assert line["class_name"] == body["class_name"]
    assert line["confidence"] == pytest.approx(body["confidence"], abs=1e-6)
    assert "png" not in json.dumps(line).lower()  # nothing of the upload but its size


def test_a_batch_logs_each_image_class_and_confidence(client: TestClient, json_log: io.StringIO) -> None:
    files = [("files", (f"{i}.png", png_bytes(), "image/png")) for i in range(3)]
    body = client.post("/predict/batch", files=files, headers={"X-Request-ID": "batch-1"}).json()
    line = access_line(json_log, "batch-1")
    assert line["class_names"] == [p["class_name"] for p in body["predictions"]]
    assert line["confidences"] == pytest.approx([p["confidence"] for p in body["predictions"]], abs=1e-6)


def test_a_v2_inference_logs_its_prediction(client: TestClient, json_log: io.StringIO) -> None:
    pixels = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}]}
    response = client.post("/v2/models/fashion-mnist/infer", json=pixels, headers={"X-Request-ID": "v2-1"})
    assert response.status_code == 200
    line = access_line(json_log, "v2-1")
    assert line["route"] == "/v2/models/{model_name}/infer"
    assert isinstance(line["class_name"], str) and 0 < line["confidence"] <= 1


def test_a_hostile_path_is_logged_bounded_and_printable(client: TestClient, json_log: io.StringIO) -> None:
    client.get("/" + "%0a" * 5 + "x" * 5000, headers={"X-Request-ID": "path-1"})
    line = access_line(json_log, "path-1")
    assert len(line["path"]) <= 210 and "\n" not in line["path"]
    assert line["route"] == "unmatched"
    assert clean_path("/a\x1b[31m\x7f") == "/a?[31m?"


def test_client_comes_from_x_forwarded_for_only_through_a_trusted_proxy(
    tiny_checkpoint: Path, json_log: io.StringIO
) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.9, 10.1.2.3"}
    untrusted = Settings(model_path=tiny_checkpoint, device="cpu", inference_process=False)
    with TestClient(create_app(untrusted), client=("10.0.0.2", 50000)) as client:
        client.get("/health", headers={**forwarded, "X-Request-ID": "direct"})
    trusted = untrusted.model_copy(update={"trusted_proxies": ("10.0.0.0/8",)})
    with TestClient(create_app(trusted), client=("10.0.0.2", 50000)) as client:
        client.get("/health", headers={**forwarded, "X-Request-ID": "proxied"})
        client.get("/health", headers={"X-Forwarded-For": "<b>me</b>", "X-Request-ID": "forged"})
    with TestClient(create_app(trusted), client=("198.51.100.7", 50000)) as client:
        client.get("/health", headers={**forwarded, "X-Request-ID": "outsider"})
    assert access_line(json_log, "direct")["client"] == "10.0.0.2"  # no proxy trusted: the peer
    assert access_line(json_log, "proxied")["client"] == "203.0.113.9"  # the hop before our proxies
    assert access_line(json_log, "forged")["client"] == "10.0.0.2"  # not an address: not believed
    assert access_line(json_log, "outsider")["client"] == "198.51.100.7"  # peer not trusted


def test_the_out_of_distribution_flag_is_logged_with_the_class(json_log: io.StringIO) -> None:
    from tests.app.conftest import SHIPPED_MODEL

    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"{SHIPPED_MODEL} is missing")
    import numpy as np

    black = png_bytes(np.zeros((28, 28), dtype=np.uint8))
    with TestClient(create_app(Settings(model_path=SHIPPED_MODEL, device="cpu"))) as shipped:
        body = shipped.post(
            "/predict", files={"file": ("b.png", black, "image/png")}, headers={"X-Request-ID": "ood-1"}
        ).json()
        files = [("files", (name, black, "image/png")) for name in ("a.png", "b.png")]
        shipped.post("/predict/batch", files=files, headers={"X-Request-ID": "ood-2"})
    assert body["out_of_distribution"] is True
    assert access_line(json_log, "ood-1")["out_of_distribution"] is True
    assert access_line(json_log, "ood-2")["out_of_distribution"] == [True, True]
