"""Over HTTP, real test images get exactly the predictions offline evaluation gives."""

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from models.checkpoint import load_checkpoint
from models.networks import class_probabilities
from models.preprocessing import normalize


def offline_predictions(checkpoint: Path, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What evaluation does: the unfused network on normalize(uint8 pixels), averaged with the
    mirror image when the checkpoint says so (the shipped one does), at the checkpoint's
    calibration temperature (the shipped one has one)."""
    loaded = load_checkpoint(checkpoint)
    spec = loaded.input_spec
    with torch.inference_mode():
        x = normalize(images.unsqueeze(1), spec.mean, spec.std)
        temperature = loaded.calibration.temperature
        probabilities = class_probabilities(loaded.model, x, loaded.flip_average, temperature)
    return probabilities.argmax(1), probabilities.max(1).values


def served_predictions(client: TestClient, pngs: list[Path], batch_size: int) -> list[dict]:
    predictions: list[dict] = []
    for start in range(0, len(pngs), batch_size):
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in pngs[start : start + batch_size]]
        response = client.post("/predict/batch", files=files, params={"top_k": 1})
        assert response.status_code == 200, response.text
        predictions.extend(response.json()["predictions"])
    return predictions


@pytest.mark.parametrize("which", ["trained", "shipped"])
def test_http_predictions_equal_offline_predictions(
    which: str,
    request: pytest.FixtureRequest,
    real_test_images: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
) -> None:
    checkpoint: Path = request.getfixturevalue(
        "trained_checkpoint" if which == "trained" else "shipped_model"
    )
    images, labels = real_test_images
    pngs = []
    for index, pixels in enumerate(images):
        path = tmp_path / f"test-{index:03d}.png"
        Image.fromarray(pixels.numpy(), mode="L").save(path)
        pngs.append(path)
    expected, confidence = offline_predictions(checkpoint, images)

    settings = Settings(model_path=checkpoint, device="cpu")
    with TestClient(create_app(settings)) as client:
        served = served_predictions(client, pngs, settings.max_batch_files)

    assert [p["class_index"] for p in served] == expected.tolist()
    assert [p["preprocessing"] for p in served] == [{"original_size": [28, 28], "inverted": False}] * len(
        pngs
    )
    torch.testing.assert_close(torch.tensor([p["confidence"] for p in served]), confidence, atol=1e-4, rtol=0)
    accuracy = (expected == labels).float().mean().item()
    print(f"\n{which} checkpoint: {len(pngs)} test images, HTTP == offline, accuracy {accuracy:.3f}")
