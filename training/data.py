"""Datasets: Fashion-MNIST from its four .gz files, or your own images listed in a CSV.

Everything ends up as one uint8 tensor of N x 28 x 28 pixels and one int64 tensor of
labels, held in memory and augmented per batch: far faster than decoding per item.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torchvision.datasets import FashionMNIST
from torchvision.datasets.utils import calculate_md5, download_url, extract_archive

from models.metadata import FASHION_MNIST_CLASSES
from training.custom_dataset import CustomImageDataset, parse_class_names
from training.errors import DatasetError

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "fashion-mnist-serving"


def _fetch(data_dir: Path, filename: str, md5: str) -> None:
    for mirror in FashionMNIST.mirrors:
        try:
            download_url(mirror + filename, str(data_dir), filename, md5)
            return
        except Exception as exc:  # try the next mirror
            logger.warning("download of %s from %s failed: %s", filename, mirror, exc)
    raise DatasetError(f"{data_dir / filename}: download failed from every mirror")


def prepare_fashion_mnist(
    data_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
    download: bool = False,
    verify: bool = True,
) -> Path:
    """Check the four .gz files in ``data_dir`` and extract them into our cache.

    ``data_dir`` is only read (it may be read-only); returns the root to hand to
    ``torchvision.datasets.FashionMNIST``. ``verify`` checks the published MD5s.
    """
    data_dir = Path(data_dir)
    digests = []
    for filename, md5 in FashionMNIST.resources:
        source = data_dir / filename
        if not source.is_file():
            if not download:
                raise DatasetError(
                    f"{source}: not found; put the four Fashion-MNIST .gz files "
                    f"({', '.join(name for name, _ in FashionMNIST.resources)}) in {data_dir}, "
                    "or add --download where there is internet"
                )
            data_dir.mkdir(parents=True, exist_ok=True)
            _fetch(data_dir, filename, md5)
        actual = calculate_md5(str(source))
        if verify and actual != md5:
            raise DatasetError(
                f"{source}: MD5 {actual} is not the published {md5}: the file is corrupt or "
                "not the original; fetch it again (--download) or, for a re-packed copy, "
                "pass --no-verify"
            )
        digests.append(actual)
    key = hashlib.sha256("".join(digests).encode()).hexdigest()[:12]
    root = Path(cache_dir) / f"fashion-mnist-{key}"
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for filename, _ in FashionMNIST.resources:
        target = raw / filename.removesuffix(".gz")
        if target.exists():
            continue
        # Extract beside the target and rename, so concurrent runs never read half a file.
        with tempfile.TemporaryDirectory(dir=raw) as tmp:
            try:
                extracted = extract_archive(str(data_dir / filename), tmp)
            except (OSError, EOFError) as exc:
                raise DatasetError(f"{data_dir / filename}: cannot decompress ({exc})") from None
            os.replace(extracted, target)
    return root


def load_fashion_mnist(root: str | os.PathLike[str], train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The training or test split as (uint8 N x 28 x 28 images, int64 labels)."""
    try:
        dataset = FashionMNIST(str(root), train=train, download=False)
    except Exception as exc:  # torchvision's parser on a damaged IDX file
        split = "train" if train else "t10k"
        raise DatasetError(f"{root}: cannot read the {split} IDX files ({exc})") from None
    return dataset.data.clone(), dataset.targets.clone()


# Fashion-MNIST's validation split as the shipped model was trained: 5,000 of 60,000 images.
FASHION_MNIST_VAL_SIZE = 5000
# Your own images: a fraction, since a fixed count can be all of a small dataset.
CUSTOM_VAL_FRACTION = 0.1


def resolve_val_size(val_size: int | float | str, custom: bool) -> int | float:
    """``--val-size auto``: 5,000 images of Fashion-MNIST, 10% of your own; else as given."""
    if val_size == "auto":
        return CUSTOM_VAL_FRACTION if custom else FASHION_MNIST_VAL_SIZE
    assert not isinstance(val_size, str)
    return val_size


def stratified_split(
    labels: torch.Tensor, val_size: int | float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val), drawn per class in proportion, seeded.

    ``val_size`` is a number of items, or a fraction (a float below 1) of each class, with
    at least one of each class that has two or more items, and never a class's last one.
    """
    n = len(labels)
    if val_size <= 0:
        return torch.arange(n), torch.empty(0, dtype=torch.int64)
    if isinstance(val_size, int) and val_size >= n:
        raise DatasetError(
            f"--val-size {val_size} leaves no training data ({n} items); hold out fewer, or a "
            "fraction such as --val-size 0.1"
        )
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    classes = labels.unique()
    per_class = [perm[labels[perm] == c] for c in classes]
    if isinstance(val_size, float):
        sizes = torch.tensor([len(p) for p in per_class])
        counts = (sizes * val_size).round().long().clamp(min=1).minimum(sizes - 1).clamp(min=0)
    else:
        quotas = torch.tensor([len(p) * val_size / n for p in per_class])
        counts = quotas.floor().long()
        # Largest remainders get the leftover places, so the total is exactly val_size.
        for i in torch.argsort(quotas - counts, descending=True)[: val_size - int(counts.sum())]:
            counts[i] += 1
    val = torch.cat([p[: int(k)] for p, k in zip(per_class, counts, strict=True)])
    mask = torch.ones(n, dtype=torch.bool)
    mask[val] = False
    return torch.arange(n)[mask], val.sort().values


def clear_cache(cache_dir: str | os.PathLike[str]) -> None:
    """Remove extracted copies (the .gz originals are never touched)."""
    shutil.rmtree(cache_dir, ignore_errors=True)


def log_classes(dataset: CustomImageDataset) -> None:
    """Name every class with its image count: a misspelt label shows up as a class of its own."""
    counts = torch.bincount(
        torch.tensor([label for _, _, label in dataset.samples]), minlength=len(dataset.classes)
    ).tolist()
    listed = ", ".join(f"{name} ({count})" for name, count in zip(dataset.classes, counts, strict=True))
    logger.info("%d classes (%s): %s", len(dataset.classes), dataset.classes_source, listed)
    empty = [name for name, count in zip(dataset.classes, counts, strict=True) if count == 0]
    if empty:
        logger.warning(
            "%d of %d classes have no images (%s); name only yours with --classes",
            len(empty),
            len(dataset.classes),
            ", ".join(empty),
        )


def load_data(args: argparse.Namespace) -> dict[str, Any]:
    """Training and test tensors, the class names, and what the test split is."""
    if args.images or args.annotations:
        if not (args.images and args.annotations):
            raise DatasetError("--images and --annotations go together")
        classes = parse_class_names(args.classes) if args.classes else None
        train_set = CustomImageDataset(args.annotations, args.images, classes=classes)
        log_classes(train_set)
        images, labels = train_set.to_tensors(progress=not args.quiet)
        test: tuple[torch.Tensor, torch.Tensor] | None = None
        if args.test_annotations:
            test_set = CustomImageDataset(args.test_annotations, args.images, classes=train_set.classes)
            test = test_set.to_tensors(progress=not args.quiet)
        return {"train": (images, labels), "test": test, "classes": train_set.classes}
    root = prepare_fashion_mnist(args.data_dir, args.cache_dir, args.download, args.verify)
    return {
        "train": load_fashion_mnist(root, train=True),
        "test": load_fashion_mnist(root, train=False),
        "classes": list(FASHION_MNIST_CLASSES),
    }
