"""The model the repository ships: present, loadable by the server's code, and as accurate as it says."""

from pathlib import Path

import pytest
import torch

from app.predictor import Predictor
from models.checkpoint import FASHION_MNIST_CLASSES, load_checkpoint
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


def test_the_shipped_model_reaches_its_recorded_accuracy_on_the_real_test_set(
    real_data_dir: Path, tmp_path: Path
) -> None:
    loaded = load_checkpoint(SHIPPED)  # the loader the server uses, weights_only=True
    images, labels = load_fashion_mnist(prepare_fashion_mnist(real_data_dir, tmp_path / "cache"), train=False)
    figures = evaluate_checkpoint(loaded, images, labels)  # batch norm folded, flip-averaged, as served
    print(f"shipped model: test accuracy {figures['accuracy']:.4f}")
    assert figures["accuracy"] >= 0.940
    assert figures["accuracy"] == pytest.approx(loaded.metrics["test_accuracy"], abs=0.0005)
    # And through the server's own predictor, on the uint8 pixels its decoder produces.
    predictor = Predictor.load(SHIPPED, device="cpu")
    probabilities = torch.cat([predictor.predict(batch.unsqueeze(1)) for batch in images.split(1000)])
    served = (probabilities.argmax(1) == labels).float().mean().item()
    assert served == pytest.approx(figures["accuracy"], abs=0.0005)
