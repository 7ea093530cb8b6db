"""Your own labelled images: a folder of pictures and a CSV of ``filename,label`` rows."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from models.images import ImageError, InvertMode, decode_image, to_model_image
from models.metadata import FASHION_MNIST_CLASSES
from models.preprocessing import pixels_to_tensor
from training.errors import DatasetError


def _is_index(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def _resolve_label(text: str, classes: list[str]) -> int | None:
    text = text.strip()
    if text in classes:
        return classes.index(text)
    if _is_index(text):
        index = int(text)
        return index if 0 <= index < len(classes) else None
    return None


def parse_class_names(text: str) -> list[str]:
    """``--classes "shoe, handbag, pants"``: names split on commas, spaces around each ignored."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise DatasetError(f"--classes {text!r}: an empty class name; write names separated by commas")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DatasetError(f"--classes {text!r}: {', '.join(repeated)} given more than once")
    if len(names) < 2:
        raise DatasetError(f"--classes {text!r}: name at least two classes")
    return names


def infer_classes(labels: list[tuple[int, str]], where: str) -> tuple[list[str], str]:
    """The class names a CSV's labels imply, and how they were chosen (for the log).

    Names: every distinct name, sorted, so the same CSV gives the same class order however
    its rows are shuffled. Indices only: Fashion-MNIST's ten, which is what they index.
    """
    names = sorted({text.strip() for _, text in labels if not _is_index(text)})
    if not names:
        return list(FASHION_MNIST_CLASSES), "labels are indices: Fashion-MNIST's ten classes"
    indices = [(line, text) for line, text in labels if _is_index(text)]
    if indices and not set(names) <= set(FASHION_MNIST_CLASSES):
        line, text = indices[0]
        raise DatasetError(
            f"{where} line {line}: label {text.strip()!r} is an index, but other labels are names "
            f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}); use names throughout, or "
            "pass --classes to say what the indices mean"
        )
    if indices:  # Fashion-MNIST names and indices mixed: both index its ten classes
        return list(FASHION_MNIST_CLASSES), "labels are Fashion-MNIST names and indices: its ten classes"
    if len(names) < 2:
        raise DatasetError(
            f"{where}: every label is {names[0]!r}; a classifier needs images of two classes or more"
        )
    return names, "the label names, sorted"


class CustomImageDataset(Dataset[tuple[Any, Any]]):
    """Your own labelled images, as in the PyTorch tutorial's ``CustomImageDataset``.

    ``annotations_file`` has rows ``filename,label`` (an optional header row is skipped);
    a label is a class index or a class name. Without ``classes`` they are inferred
    (``infer_classes``: the names sorted, or Fashion-MNIST's ten for indices); the choice
    is in ``classes_source`` (``classes_from`` when given). Every row is checked up front: a missing
    file, an unknown label, or a path that leaves ``img_dir`` is an error naming the line.
    Items are uint8 1x28x28 tensors from the shared preprocessing, before normalisation.
    """

    def __init__(
        self,
        annotations_file: str | os.PathLike[str],
        img_dir: str | os.PathLike[str],
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        classes: list[str] | None = None,
        invert: InvertMode = "auto",
        classes_from: str = "--classes",
    ) -> None:
        self.annotations_file = Path(annotations_file)
        self.img_dir = Path(img_dir)
        self.transform = transform
        self.target_transform = target_transform
        self.invert = invert
        rows = self._read_rows()
        if classes:
            self.classes, self.classes_source = list(classes), classes_from
        else:
            # A typo would become a class of its own: the log lists every class and its count.
            where = str(self.annotations_file)
            self.classes, self.classes_source = infer_classes([(ln, lb) for ln, _, lb in rows], where)
        root = self.img_dir.resolve()
        self.samples: list[tuple[int, Path, int]] = []
        for line, name, label_text in rows:
            where = f"{self.annotations_file} line {line}"
            relative = Path(name)
            if not name or relative.is_absolute() or ".." in relative.parts:
                raise DatasetError(f"{where}: {name!r} is not a path inside {self.img_dir}")
            path = (self.img_dir / relative).resolve()
            if not path.is_relative_to(root):
                raise DatasetError(f"{where}: {name!r} leads outside {self.img_dir}")
            if not path.is_file():
                raise DatasetError(f"{where}: image {name!r} not found in {self.img_dir}")
            label = _resolve_label(label_text, self.classes)
            if label is None:
                raise DatasetError(
                    f"{where}: unknown label {label_text!r}; the classes ({self.classes_source}) are "
                    f"{', '.join(self.classes)}, or their indices 0-{len(self.classes) - 1}"
                )
            self.samples.append((line, path, label))
        if not self.samples:
            raise DatasetError(f"{self.annotations_file}: no rows")

    def _read_rows(self) -> list[tuple[int, str, str]]:
        try:
            with self.annotations_file.open(newline="", encoding="utf-8") as handle:
                records = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{self.annotations_file}: cannot read ({exc})") from None
        rows = []
        for line, record in enumerate(records, start=1):
            if not record or all(not cell.strip() for cell in record):
                continue
            if len(record) != 2:
                raise DatasetError(
                    f"{self.annotations_file} line {line}: expected 'filename,label', "
                    f"got {len(record)} fields"
                )
            if line == 1 and [c.strip().lower() for c in record] == ["filename", "label"]:
                continue
            rows.append((line, record[0].strip(), record[1]))
        return rows

    def __len__(self) -> int:
        return len(self.samples)

    def load_pixels(self, index: int) -> torch.Tensor:
        """The item's 28x28 uint8 pixels, through the same preprocessing as the server."""
        line, path, _ = self.samples[index]
        try:
            image = decode_image(path.read_bytes())
            model_image, _ = to_model_image(image, self.invert)
        except (ImageError, OSError) as exc:
            raise DatasetError(
                f"{self.annotations_file} line {line}: cannot read image {path.name!r} ({exc})"
            ) from None
        return pixels_to_tensor(model_image)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image: Any = self.load_pixels(index).unsqueeze(0)
        label: Any = self.samples[index][2]
        if self.transform:
            image = self.transform(image)
        if self.target_transform:
            label = self.target_transform(label)
        return image, label

    def to_tensors(self, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode everything once into (uint8 N x 28 x 28, int64 N) for fast training."""
        images = torch.empty((len(self), 28, 28), dtype=torch.uint8)
        for i in tqdm(range(len(self)), desc="decoding images", disable=not progress):
            images[i] = self.load_pixels(i)
        labels = torch.tensor([label for _, _, label in self.samples], dtype=torch.int64)
        return images, labels
