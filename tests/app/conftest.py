"""Fixtures for the API tests: settings and a client on a tiny checkpoint, real test images."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from app.main import create_app
from app.settings import ENV_PREFIX, Settings
from models.checkpoint import make_checkpoint, save_checkpoint
from models.metadata import FASHION_MNIST_CLASSES, InputSpec
from models.networks import build_model
from models.preprocessing import normalize
from tests.conftest import REAL_DATA, REPO

SHIPPED_MODEL = REPO / "models" / "model.pth"
# Agreement and robustness use the first N images of the real test split.
N_REAL = 200


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's FASHION_* variables must not change what the tests see."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture
def settings(tiny_checkpoint: Path) -> Settings:
    return Settings(model_path=tiny_checkpoint, device="cpu")


@pytest.fixture
def thread_settings(tiny_checkpoint: Path) -> Settings:
    """Decoding and inference in threads of the test's own process, where a test can hold
    or break them (the default runs them in a child process)."""
    return Settings(model_path=tiny_checkpoint, device="cpu", inference_process=False)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app with its real lifespan, serving the tiny checkpoint."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Fashion-MNIST, extracted into a temporary cache (the originals are only read)."""
    if not (REAL_DATA / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"the real Fashion-MNIST files are not at {REAL_DATA}")
    from training.data import prepare_fashion_mnist

    return prepare_fashion_mnist(REAL_DATA, cache_dir=tmp_path_factory.mktemp("fashion-cache"))


@pytest.fixture(scope="session")
def real_test_images(fashion_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The first N_REAL test images (uint8 N x 28 x 28) and their labels."""
    from training.data import load_fashion_mnist

    images, labels = load_fashion_mnist(fashion_root, train=False)
    return images[:N_REAL], labels[:N_REAL]


@pytest.fixture(scope="session")
def trained_checkpoint(fashion_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained briefly on real images: confident, varied predictions, and real
    batch-norm statistics, so folding BN for inference actually changes the weights."""
    from training.data import load_fashion_mnist

    images, labels = load_fashion_mnist(fashion_root, train=True)
    images, labels = images[:6000], labels[:6000]
    args = {"widths": [8, 16], "pools_after": [0, 1]}
    torch.manual_seed(0)
    model = build_model("cnn", **args)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    spec = InputSpec()
    model.train()
    for start in range(0, len(images), 100):
        x = normalize(images[start : start + 100].unsqueeze(1), spec.mean, spec.std)
        loss = nn.functional.cross_entropy(model(x), labels[start : start + 100])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("trained") / "trained.pth"
    checkpoint = make_checkpoint(model.eval(), "cnn", args, FASHION_MNIST_CLASSES, spec)
    save_checkpoint(checkpoint, path)
    return path


@pytest.fixture
def shipped_model() -> Path:
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"{SHIPPED_MODEL} is not there yet: run python -m training")
    return SHIPPED_MODEL
