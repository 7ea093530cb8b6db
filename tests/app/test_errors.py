"""Unexpected errors: logged with the traceback, answered with a bare 500, and the server goes on."""

import logging

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.images import png_bytes


def test_an_unexpected_error_is_logged_and_answered_with_a_generic_500(
    thread_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(thread_settings)
    with TestClient(app) as client:
        predictor = app.state.service.predictor

        def broken(*args: object) -> None:
            raise RuntimeError("CUDA error at /opt/secret/kernel.cu:12")

        # The forward pass runs on the inference worker's thread; its error must still reach the route.
        monkeypatch.setattr(predictor, "predict", broken)
        with caplog.at_level(logging.ERROR, logger="app"):
            response = client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")})
        assert response.status_code == 500
        assert response.json() == {"detail": "internal server error"}
        assert "secret" not in response.text
        records = [r for r in caplog.records if r.name == "app" and r.exc_info]
        assert records and "POST /predict" in records[0].getMessage()
        assert isinstance(records[0].exc_info[1], RuntimeError)  # type: ignore[index]
        assert client.get("/health").status_code == 200
        assert 'route="/predict",status="500"} 1.0' in client.get("/metrics").text


def test_unknown_paths_and_methods_answer_json(client: TestClient) -> None:
    assert client.get("/nowhere").json() == {"detail": "Not Found"}
    response = client.get("/predict")
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
