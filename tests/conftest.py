"""Fixtures shared by every test package: synthetic data, tiny checkpoints, the real data."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import pytest
import torch
from torchvision.datasets import FashionMNIST

from bench.uploads import find_data_dir
from models.checkpoint import make_checkpoint, save_checkpoint
from models.metadata import FASHION_MNIST_CLASSES, InputSpec
from models.networks import build_model

# Tests use tiny models: one thread is as fast and never oversubscribes a small CI box.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


# The four real .gz files: $FASHION_MNIST_DIR, else ../shared beside the checkout, else the
# workplace's shared folder (a CI clone may live elsewhere). Where none has them, tests
# that need them skip and name the first place looked.
REAL_DATA = find_data_dir() or Path(
    os.environ.get("FASHION_MNIST_DIR") or REPO.parent / "shared" / "datasets" / "fashion-mnist"
)
# A network small enough to train in a blink; still the real CNN code.
TINY_CNN_ARGS = {"widths": [4, 8], "pools_after": [0]}


def synthetic_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable fake items: class k is a square of brightness 40 + 21k on noise.

    Brightness, not position, tells the classes apart: the CNN's global average pooling
    sees it at once.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 30, (n, 28, 28), generator=generator, dtype=torch.uint8)
    for i, label in enumerate(labels.tolist()):
        images[i, 4:24, 4:24] = 40 + 21 * label
    return images, labels


def write_idx(path: Path, data: torch.Tensor) -> None:
    """Write an IDX file (the Fashion-MNIST format), gzipped; torchvision parses it back."""
    magic = 0x0803 if data.dim() == 3 else 0x0801
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in data.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + data.to(torch.uint8).numpy().tobytes())


def write_fake_fashion_mnist(folder: Path, n_train: int = 300, n_test: int = 100) -> Path:
    """The four .gz files, with the real names, holding synthetic images."""
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = synthetic_images(n_train, seed=1)
    test_x, test_y = synthetic_images(n_test, seed=2)
    names = [name for name, _ in FashionMNIST.resources]
    for name, data in zip(names, [train_x, train_y, test_x, test_y], strict=True):
        write_idx(folder / name, data)
    return folder


@pytest.fixture
def fake_data_dir(tmp_path: Path) -> Path:
    return write_fake_fashion_mnist(tmp_path / "fashion-mnist")


@pytest.fixture
def real_data_dir() -> Path:
    if not (REAL_DATA / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"the real Fashion-MNIST files are not at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """An untrained tiny CNN saved in the current checkpoint format."""
    return write_tiny_checkpoint(tmp_path / "tiny.pth")


def write_tiny_checkpoint(path: Path) -> Path:
    """Save an untrained tiny CNN (seed 0) in the current checkpoint format at ``path``."""
    torch.manual_seed(0)
    model = build_model("cnn", **TINY_CNN_ARGS)
    save_checkpoint(
        make_checkpoint(
            model, "cnn", TINY_CNN_ARGS, FASHION_MNIST_CLASSES, InputSpec(), metrics={"test_accuracy": 0.1}
        ),
        path,
    )
    return path
