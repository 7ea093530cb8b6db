"""``python -m training.sample_images``: a folder of labelled images to try training on your own.

    python -m training.sample_images --data-dir ../shared/datasets/fashion-mnist --output my-images

Writes some Fashion-MNIST items of a few classes, under names of your choosing, as a user's
own pictures would be: half as 28x28 grayscale PNGs, half as shop-style photos (dark on
white, enlarged, RGB JPEG). ``labels.csv`` lists the training images (from the training
split) and ``test.csv`` held-out ones (from the test split), as ``filename,label`` rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.metadata import FASHION_MNIST_CLASSES
from training.config import POSITIVE, HelpFormatter, Parser
from training.data import DEFAULT_CACHE_DIR, load_fashion_mnist, prepare_fashion_mnist
from training.errors import DatasetError

# Three easily told apart classes, under the names a user would give them.
DEFAULT_CLASSES = "pants=Trouser, shoe=Sneaker, handbag=Bag"


def parse_mapping(text: str) -> dict[str, int]:
    """``"pants=Trouser, shoe=Sneaker"`` -> {"pants": 1, "shoe": 7}."""
    mapping: dict[str, int] = {}
    for item in text.split(","):
        name, _, source = (part.strip() for part in item.partition("="))
        if not name or source not in FASHION_MNIST_CLASSES:
            raise DatasetError(
                f"--classes: {item.strip()!r} is not name=Fashion-MNIST class; the classes are "
                f"{', '.join(FASHION_MNIST_CLASSES)}"
            )
        mapping[name] = FASHION_MNIST_CLASSES.index(source)
    return mapping


def write_images(
    folder: Path, csv_name: str, images: torch.Tensor, labels: torch.Tensor, per_class: int,
    classes: dict[str, int],
) -> Path:  # fmt: skip
    """``per_class`` images of each class into ``folder``, listed in ``folder/csv_name``."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(csv_name).stem
    rows = ["filename,label"]
    for name, index in classes.items():
        chosen = (labels == index).nonzero().flatten()[:per_class]
        for n, i in enumerate(chosen.tolist()):
            pixels = images[i].numpy().astype(np.uint8)
            if n % 2:
                photo = Image.fromarray(255 - pixels).resize((84, 84), Image.Resampling.BICUBIC)
                filename = f"{stem}-{name}-{n}.jpg"
                photo.convert("RGB").save(folder / filename, quality=90)
            else:
                filename = f"{stem}-{name}-{n}.png"
                Image.fromarray(pixels).save(folder / filename)
            rows.append(f"{filename},{name}")
    csv = folder / csv_name
    csv.write_text("\n".join(rows) + "\n")
    return csv


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m training.sample_images",
        description="Write a folder of labelled images, made from Fashion-MNIST items, to try training "
        "on your own images",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--data-dir", default="data/fashion-mnist", help="folder with the four .gz files")
    parser.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE_DIR), help="writable folder for the extracted IDX files"
    )
    parser.add_argument("--output", default="my-images", help="folder to write the images and CSVs into")
    parser.add_argument(
        "--classes", default=DEFAULT_CLASSES, help="your class names, each = the Fashion-MNIST class it takes"
    )
    parser.add_argument("--per-class", type=POSITIVE, default=100, help="training images of each class")
    parser.add_argument("--test-per-class", type=POSITIVE, default=100, help="held-out images of each class")
    return parser


def main(args: argparse.Namespace) -> None:
    classes = parse_mapping(args.classes)
    root = prepare_fashion_mnist(args.data_dir, args.cache_dir)
    output = Path(args.output)
    train = write_images(output, "labels.csv", *load_fashion_mnist(root, train=True), args.per_class, classes)
    test = write_images(
        output, "test.csv", *load_fashion_mnist(root, train=False), args.test_per_class, classes
    )
    print(f"wrote {len(classes)} classes ({', '.join(classes)}) to {output}: {train.name} and {test.name}")


def run(argv: list[str] | None = None) -> None:
    try:
        main(get_args_parser().parse_args(argv))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run()
