"""The model the repository ships: present, loadable by the server's code, and as accurate as it says."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.predictor import Predictor
from models.checkpoint import load_checkpoint
from models.metadata import FASHION_MNIST_CLASSES
from tests.conftest import REPO
from training.data import load_fashion_mnist, prepare_fashion_mnist
from training.evaluate import evaluate_checkpoint

SHIPPED = REPO / "models" / "model.pth"


def test_the_shipped_model_is_small_and_complete() -> None:
    assert SHIPPED.stat().st_size <= 10_000_000
    loaded = load_checkpoint(SHIPPED)
    assert loaded.arch == "cnn"
    assert loaded.classes == list(FASHION_MNIST_CLASSES)
    assert loaded.metrics["test_split"] == "test" and loaded.metrics["test_count"] == 10_000
    assert {"train_seconds", "machine", "per_class_accuracy", "val_accuracy"} <= set(loaded.metrics)
    assert loaded.train_args["arch"] == "cnn" and loaded.train_args["val_size"] == 5000
    # Its figures were measured averaging each image with its mirror, and it is served so.
    assert loaded.flip_average is True
    for companion in ("model_metrics.json", "model_confusion.png", "model_curves.png", "README.md"):
        assert (SHIPPED.parent / companion).is_file(), companion


@pytest.mark.parametrize("runtime", ["torch", "openvino", "onnxruntime"])
def test_the_shipped_model_reaches_its_recorded_accuracy_on_the_real_test_set(
    runtime: str, real_data_dir: Path, tmp_path: Path
) -> None:
    loaded = load_checkpoint(SHIPPED)  # the loader the server uses, weights_only=True
    images, labels = load_fashion_mnist(prepare_fashion_mnist(real_data_dir, tmp_path / "cache"), train=False)
    figures = evaluate_checkpoint(loaded, images, labels)  # batch norm folded, flip-averaged, as served
    print(f"shipped model: test accuracy {figures['accuracy']:.4f}")
    assert figures["accuracy"] >= 0.940
    assert figures["accuracy"] == pytest.approx(loaded.metrics["test_accuracy"], abs=0.0005)
    # And through the server's own predictor, on the uint8 pixels its decoder produces, with
    # each runtime it can serve with.
    predictor = Predictor.load(SHIPPED, device="cpu", runtime=runtime)  # type: ignore[arg-type]
    assert predictor.runtime == runtime
    probabilities = torch.cat([predictor.predict(batch.unsqueeze(1)) for batch in images.split(1000)])
    served = (probabilities.argmax(1) == labels).float().mean().item()
    print(f"shipped model, served with {runtime}: test accuracy {served:.4f}")
    # Unchanged, to within one image of 10,000: a runtime that computes in less precision
    # (bfloat16 measured 94.07% against 94.12%) fails here.
    assert served == pytest.approx(figures["accuracy"], abs=1.5e-4)


def test_the_shipped_model_is_calibrated_and_flags_few_test_images(
    real_data_dir: Path, tmp_path: Path
) -> None:
    loaded = load_checkpoint(SHIPPED)
    assert loaded.calibration.fitted_on == "5000 validation images"
    assert loaded.ood is not None and loaded.ood.flag_rate <= 0.05
    images, labels = load_fashion_mnist(prepare_fashion_mnist(real_data_dir, tmp_path / "cache"), train=False)
    figures = evaluate_checkpoint(loaded, images, labels)
    print(f"shipped model: ECE {figures['ece_uncalibrated']:.4f} -> {figures['ece']:.4f}, "
          f"flagged {figures['ood_flagged']:.4f}")  # fmt: skip
    assert figures["ece"] <= 0.015 < figures["ece_uncalibrated"]
    assert figures["accuracy"] >= 0.940
    assert figures["ood_flagged"] <= 0.05


def picture(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def test_blank_and_noise_pictures_are_flagged_and_real_test_images_are_not(
    real_data_dir: Path, tmp_path: Path
) -> None:
    predictor = Predictor.load(SHIPPED, device="cpu")
    rng = np.random.default_rng(0)
    not_clothing = {
        "black": picture(np.zeros((28, 28))),
        "white": picture(np.full((64, 64), 255)),
        "grey": picture(np.full((28, 28), 128)),
        "noise": picture(rng.integers(0, 256, (28, 28))),
        "noise photo": picture(rng.integers(0, 256, (200, 300, 3)), "JPEG"),
        "gradient": picture(np.tile(np.linspace(0, 255, 128), (128, 1))),
    }
    for name, prediction in zip(
        not_clothing, predictor.classify_many(list(not_clothing.values())), strict=True
    ):
        assert prediction.out_of_distribution is True, (name, prediction.ood_score)
        assert prediction.ood_score is not None and prediction.ood_score > predictor.ood_threshold
    images, _ = load_fashion_mnist(prepare_fashion_mnist(real_data_dir, tmp_path / "cache"), train=False)
    real = predictor.classify_many([picture(pixels) for pixels in images[:300].numpy()])
    flagged = sum(bool(p.out_of_distribution) for p in real)
    assert flagged <= 15, f"{flagged} of 300 real test images flagged"
