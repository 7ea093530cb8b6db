"""GET /health and /health/live."""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.lifespan import StartupError
from app.main import create_app
from app.settings import Settings
from tests.app.images import png_bytes


def test_ready_once_the_model_is_loaded(client: TestClient, tiny_checkpoint: Path) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["device"] == "cpu"
    assert body["model_version"] == client.get("/model").json()["version"]
    assert body["uptime_s"] >= 0


def test_liveness_answers_with_or_without_a_model(settings: Settings) -> None:
    app = create_app(settings)
    assert TestClient(app).get("/health/live").json() == {"status": "alive"}
    with TestClient(app) as client:
        assert client.get("/health/live").status_code == 200


def test_not_ready_while_the_model_is_not_loaded(settings: Settings) -> None:
    # Without entering the client, the lifespan has not run: nothing is loaded yet.
    client = TestClient(create_app(settings))
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "loading", "detail": None}
    predict = client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")})
    assert predict.status_code == 503
    assert predict.json() == {"detail": "the model is not loaded"}


def test_not_ready_after_the_model_failed_to_load(tmp_path: Path) -> None:
    app = create_app(Settings(model_path=tmp_path / "missing.pth", device="cpu"))
    with pytest.raises(StartupError), TestClient(app):
        pass
    response = TestClient(app).get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "detail": "the model failed to load; see the server log"}
    assert str(tmp_path) not in response.text


def test_health_answers_while_a_prediction_runs(
    thread_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(thread_settings)) as client:
        _health_while_held(client, monkeypatch)


def _health_while_held(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = client.app.state.service.predictor  # type: ignore[attr-defined]
    started, release = threading.Event(), threading.Event()
    predict = predictor.predict_scored

    def held_predict(batch: Any) -> Any:
        started.set()
        release.wait(timeout=60)  # a safety net only: the test releases it
        return predict(batch)

    monkeypatch.setattr(predictor, "predict_scored", held_predict)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(client.post, "/predict", files={"file": ("a.png", png_bytes(), "image/png")})
        assert started.wait(timeout=60)
        # Were inference on the event loop, this request would wait for the release.
        health = client.get("/health")
        still_running = not pending.done()
        release.set()
        assert health.status_code == 200
        assert still_running
        assert pending.result(timeout=60).status_code == 200
