"""One training epoch of the tutorial's MLP: the tutorial's own loop against ours, same run.

    python -m bench.train_loop --data-dir ../shared/datasets/fashion-mnist

The tutorial decodes every item through ``ToTensor()`` in a DataLoader; we hold the
uint8 tensor in memory and normalise per batch. Same network, optimiser, batch size and
threads on both sides; prints seconds per epoch and the ratio.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import ToTensor

from models.metadata import TUTORIAL_INPUT
from models.networks import build_model
from training.config import parse_args
from training.data import load_fashion_mnist, prepare_fashion_mnist
from training.train import train_one_epoch


def tutorial_epoch(root: str, batch_size: int) -> float:
    """The quickstart tutorial's train() loop, verbatim in spirit."""
    training_data = datasets.FashionMNIST(root=root, train=True, download=False, transform=ToTensor())
    dataloader = DataLoader(training_data, batch_size=batch_size)
    model = build_model("mlp")
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for x, y in dataloader:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start


def our_epoch(root: str, batch_size: int) -> float:
    args = parse_args(["--preset", "quickstart", "--batch-size", str(batch_size), "--quiet"])
    images, labels = load_fashion_mnist(root, train=True)
    model = build_model("mlp")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    train_one_epoch(model, nn.CrossEntropyLoss(), optimizer, None, None, images, labels,
                    TUTORIAL_INPUT, args, 0, torch.device("cpu"))  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default="../shared/datasets/fashion-mnist")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="epochs timed per side; the median is reported")
    args = parser.parse_args()
    root = str(prepare_fashion_mnist(args.data_dir))
    tutorial = sorted(tutorial_epoch(root, args.batch_size) for _ in range(args.rounds))[args.rounds // 2]
    ours = sorted(our_epoch(root, args.batch_size) for _ in range(args.rounds))[args.rounds // 2]
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    print(f"| loop (mlp, batch {args.batch_size}, one epoch) | seconds |")
    print("| --- | --- |")
    print(f"| tutorial: DataLoader + ToTensor per item | {tutorial:.2f} |")
    print(f"| ours: in-memory uint8, per-batch normalise | {ours:.2f} |")
    print(f"speed-up: {tutorial / ours:.1f}x")


if __name__ == "__main__":
    main()
