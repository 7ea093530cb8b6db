"""Calibrated confidence and the out-of-distribution flag, as clients see them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.conftest import SHIPPED_MODEL
from tests.app.images import png_bytes

BLACK = png_bytes(np.zeros((28, 28), dtype=np.uint8))
NOISE = png_bytes(np.random.default_rng(0).integers(0, 256, (28, 28)).astype(np.uint8))


@pytest.fixture(scope="module")
def shipped() -> Iterator[TestClient]:
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"{SHIPPED_MODEL} is missing")
    with TestClient(create_app(Settings(model_path=SHIPPED_MODEL, device="cpu"))) as client:
        yield client


def flagged_count(client: TestClient) -> float:
    text = client.get("/metrics").text
    return float(
        re.search(r"^fashion_out_of_distribution_predictions_total\{[^}]*\} (\S+)$", text, re.M).group(1)
    )


def test_a_blank_picture_is_flagged_yet_still_gets_its_classes(shipped: TestClient) -> None:
    before = flagged_count(shipped)

    response = shipped.post(
        "/predict", files={"file": ("black.png", BLACK, "image/png")}, params={"top_k": 10}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["out_of_distribution"] is True
    assert body["ood_score"] > shipped.get("/model").json()["ood"]["threshold"]
    assert len(body["top_k"]) == 10 and sum(c["probability"] for c in body["top_k"]) == pytest.approx(
        1, abs=1e-4
    )
    assert flagged_count(shipped) == before + 1


def test_a_real_test_image_is_not_flagged(
    shipped: TestClient, real_test_images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = real_test_images
    response = shipped.post(
        "/predict", files={"file": ("item.png", png_bytes(images[0].numpy()), "image/png")}
    )
    body = response.json()
    assert body["class_index"] == int(labels[0])
    assert body["out_of_distribution"] is False
    assert isinstance(body["ood_score"], float)


def test_batch_predictions_each_carry_the_flag(shipped: TestClient, real_test_images: tuple) -> None:
    item = png_bytes(real_test_images[0][1].numpy())
    files = [("files", (name, data, "image/png")) for name, data in (("a", item), ("b", NOISE), ("c", BLACK))]
    predictions = shipped.post("/predict/batch", files=files).json()["predictions"]
    assert [p["out_of_distribution"] for p in predictions] == [False, True, True]


def test_the_model_endpoint_shows_the_temperature_and_the_threshold(shipped: TestClient) -> None:
    info = shipped.get("/model").json()
    assert 0.3 < info["temperature"] < 1  # label smoothing left it under-confident: T < 1 sharpens
    assert info["ood"]["method"] == "mahalanobis+energy"
    assert info["ood"]["validation_flag_rate"] <= 0.05


def test_v2_gives_the_score_and_the_flag_as_outputs(shipped: TestClient) -> None:
    metadata = shipped.get("/v2/models/fashion-mnist").json()
    outputs = {o["name"]: o["datatype"] for o in metadata["outputs"]}
    assert outputs["ood_score"] == "FP32" and outputs["out_of_distribution"] == "BOOL"
    pixels = np.stack([np.zeros((28, 28)), np.random.default_rng(1).integers(0, 256, (28, 28))]).astype(
        np.uint8
    )
    request = {
        "inputs": [
            {"name": "pixels", "datatype": "UINT8", "shape": [2, 28, 28], "data": pixels.ravel().tolist()}
        ],
        "outputs": [{"name": "out_of_distribution"}, {"name": "ood_score"}],
    }
    body = shipped.post("/v2/models/fashion-mnist/infer", json=request).json()
    flags, scores = body["outputs"]
    assert flags == {"name": "out_of_distribution", "datatype": "BOOL", "shape": [2], "data": [True, True]}
    assert scores["datatype"] == "FP32" and len(scores["data"]) == 2


def test_an_operator_threshold_overrides_the_checkpoint_s(monkeypatch: pytest.MonkeyPatch) -> None:
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"{SHIPPED_MODEL} is missing")
    monkeypatch.setenv("FASHION_OOD_THRESHOLD", "1e6")
    monkeypatch.setenv("FASHION_MODEL_PATH", str(SHIPPED_MODEL))
    with TestClient(create_app()) as client:
        body = client.post("/predict", files={"file": ("black.png", BLACK, "image/png")}).json()
        assert body["out_of_distribution"] is False and body["ood_score"] < 1e6
        assert client.get("/model").json()["ood"]["threshold"] == 1e6


def test_a_checkpoint_without_a_score_serves_as_before(client: TestClient, tiny_checkpoint: Path) -> None:
    body = client.post("/predict", files={"file": ("black.png", BLACK, "image/png")}).json()
    assert "ood_score" not in body and "out_of_distribution" not in body  # as input_image: absent
    assert body["class_name"] and body["confidence"] > 0
    assert client.get("/model").json()["ood"] is None and client.get("/model").json()["temperature"] == 1.0
    names = [o["name"] for o in client.get("/v2/models/fashion-mnist").json()["outputs"]]
    assert names == ["probabilities", "class_index", "class_name"]
    request = {
        "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}],
        "outputs": [{"name": "ood_score"}],
    }
    response = client.post("/v2/models/fashion-mnist/infer", json=request)
    assert response.status_code == 400 and "unknown output 'ood_score'" in response.json()["error"]
