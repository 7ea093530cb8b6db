"""Unexpected errors: logged with the traceback, answered with a bare 500, and the server goes on."""

import logging

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.predictor import Predictor
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
        monkeypatch.setattr(predictor, "predict_scored", broken)
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


def test_a_non_finite_prediction_is_a_500_that_says_so_and_the_server_goes_on(
    thread_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Predictor.predict_scored

    def black_is_nan(self: Predictor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        probabilities, scores = real(self, batch)
        probabilities = probabilities.clone()
        probabilities[batch.flatten(1).float().sum(dim=1) == 0] = float("nan")
        return probabilities, scores

    with TestClient(create_app(thread_settings)) as client:
        monkeypatch.setattr(Predictor, "predict_scored", black_is_nan)  # after the start-up checks
        black = png_bytes(np.zeros((28, 28), dtype=np.uint8))
        response = client.post("/predict", files={"file": ("black.png", black, "image/png")})
        assert response.status_code == 500
        assert response.json() == {
            "detail": "the model gave no finite probabilities for image 0 of this request"
        }
        assert (
            client.post("/predict", files={"file": ("item.png", png_bytes(), "image/png")}).status_code == 200
        )
