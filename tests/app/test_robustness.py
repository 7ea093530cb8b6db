"""Photos of the same items (big RGB JPEGs, dark on white) still get mostly the same class."""

import io
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

from app.main import create_app
from app.settings import Settings

# Resizing 28 -> 224 -> 28 and JPEG artefacts cost a few predictions; most must survive.
FLOOR = 0.85


def as_photo(pixels: torch.Tensor, invert: bool) -> bytes:
    image = Image.fromarray(pixels.numpy(), mode="L")
    if invert:
        image = ImageOps.invert(image)  # a dark item on white, like a shop photo
    image = image.resize((224, 224), Image.Resampling.BICUBIC).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def classify(client: TestClient, payloads: list[bytes], names: str) -> list[dict]:
    predictions: list[dict] = []
    for start in range(0, len(payloads), 64):
        chunk = payloads[start : start + 64]
        files = [
            ("files", (f"{names}-{start + i}.img", data, "application/octet-stream"))
            for i, data in enumerate(chunk)
        ]
        response = client.post("/predict/batch", files=files, params={"top_k": 1})
        assert response.status_code == 200, response.text
        predictions.extend(response.json()["predictions"])
    return predictions


@pytest.mark.slow
def test_big_rgb_jpegs_and_inverted_photos_mostly_keep_their_class(
    shipped_model: Path, real_test_images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = real_test_images
    pngs = []
    for pixels in images:
        buffer = io.BytesIO()
        Image.fromarray(pixels.numpy(), mode="L").save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    with TestClient(create_app(Settings(model_path=shipped_model, device="cpu"))) as client:
        original = classify(client, pngs, "original")
        photos = classify(client, [as_photo(p, invert=False) for p in images], "photo")
        inverted = classify(client, [as_photo(p, invert=True) for p in images], "inverted")

    base = torch.tensor([p["class_index"] for p in original])
    report = []
    for name, predictions in (("224x224 RGB JPEG", photos), ("inverted 224x224 RGB JPEG", inverted)):
        classes = torch.tensor([p["class_index"] for p in predictions])
        agreement = (classes == base).float().mean().item()
        accuracy = (classes == labels).float().mean().item()
        report.append((name, agreement, accuracy))
        print(f"\n{name}: same class as the 28x28 PNG for {agreement:.1%}; accuracy {accuracy:.1%}")
    print(f"28x28 PNG accuracy {(base == labels).float().mean().item():.1%}")
    assert all(p["preprocessing"]["inverted"] for p in inverted)
    assert not any(p["preprocessing"]["inverted"] for p in photos)
    for name, agreement, _ in report:
        assert agreement >= FLOOR, f"{name}: only {agreement:.1%} agree"
