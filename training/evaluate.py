"""Evaluate any checkpoint on the Fashion-MNIST test set, or on your own labelled images.

python -m training.evaluate --model models/model.pth --data-dir ../shared/datasets/fashion-mnist
python -m training.evaluate --model models/model.pth --show 5     # Predicted: "...", Actual: "..."
python -m training.evaluate --model runs/.../model.pth --images my-images --annotations test.csv
python -m training.evaluate --model models/model.pth --photos photos   # per kind of photo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from models.checkpoint import LoadedModel, load_checkpoint
from models.errors import CheckpointError
from models.metadata import FASHION_MNIST_CLASSES
from models.networks import prepare_for_inference
from training import report
from training.calibrate import scoring_figures
from training.config import NON_NEGATIVE, POSITIVE, HelpFormatter, Parser
from training.custom_dataset import CustomImageDataset
from training.data import DEFAULT_CACHE_DIR, load_fashion_mnist, prepare_fashion_mnist
from training.errors import DatasetError


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m training.evaluate",
        description="Accuracy, loss and per-class accuracy of a checkpoint, on the Fashion-MNIST test "
        "set or on your own labelled images (--images and --annotations)",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", default="models/model.pth", help="checkpoint or bare state dict")
    parser.add_argument("--data-dir", default="data/fashion-mnist", help="folder with the four .gz files")
    parser.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE_DIR), help="writable folder for the extracted IDX files"
    )
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the MD5 check")
    parser.add_argument(
        "--images",
        help="evaluate on your own images: the folder they are in "
        "(default: none, the Fashion-MNIST test set)",
    )
    parser.add_argument(
        "--annotations",
        help="CSV of filename,label rows for --images; labels are the model's class names or indices "
        "(default: none)",
    )
    parser.add_argument(
        "--photos",
        help="evaluate on photo-like sets, one per subfolder, each with its labels.csv of "
        "filename,label (python -m bench.photo_images writes them); reports each kind "
        "(default: none)",
    )
    parser.add_argument(
        "--show", type=NON_NEGATIVE, default=0, help="print predicted and actual class of N images"
    )
    parser.add_argument("--batch-size", type=POSITIVE, default=1000, help="images per forward pass")
    parser.add_argument(
        "--plot",
        help="where to write the reliability diagram PNG (default: beside the model, "
        "<model>_reliability.png, as the training job does; '' for none)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


def evaluate_checkpoint(
    loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> dict[str, Any]:
    """Accuracy, loss, per-class accuracy and predictions, as the server would compute them."""
    model = prepare_for_inference(loaded.model)  # what the server runs; the logits agree to rounding
    # One pass gives accuracy, loss and the calibration figures alike.
    scoring = scoring_figures(
        model,
        loaded.input_spec,
        loaded.flip_average,
        loaded.calibration,
        loaded.ood,
        images,
        labels,
        batch_size,
    )
    probabilities = scoring["probabilities"]
    predictions = probabilities.argmax(1)
    loss = F.nll_loss(probabilities.clamp_min(1e-12).log(), labels.long()).item()
    matrix = report.confusion_matrix(labels, predictions, len(loaded.classes))
    return {
        "model": str(loaded.path),
        "model_version": loaded.version,
        "accuracy": scoring["accuracy"],
        "loss": loss,
        "count": len(labels),
        "temperature": loaded.calibration.temperature,
        "ece_uncalibrated": scoring["ece_uncalibrated"],
        "ece": scoring["ece"],
        "ood_flagged": scoring.get("ood_flagged"),
        "per_class_accuracy": report.per_class_accuracy(matrix, loaded.classes),
        "predictions": predictions,
        "bins": (scoring["bins_uncalibrated"], scoring["bins"]),
    }


def load_images(args: argparse.Namespace, loaded: LoadedModel) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The images to evaluate on, their labels as the model's class indices, and what they are."""
    if args.images or args.annotations:
        if not (args.images and args.annotations):
            raise DatasetError("--images and --annotations go together: the folder of images and its CSV")
        # Labels are matched to the model's own class names: a name it does not know is an error.
        dataset = CustomImageDataset(
            args.annotations, args.images, classes=list(loaded.classes), classes_from="the model's"
        )
        images, labels = dataset.to_tensors(progress=False)
        return images, labels, f"images of {args.annotations}"
    if list(loaded.classes) != list(FASHION_MNIST_CLASSES):
        raise DatasetError(
            f"{loaded.path}: its classes ({', '.join(loaded.classes)}) are not Fashion-MNIST's ten; "
            "evaluate it on its own images with --images and --annotations"
        )
    root = prepare_fashion_mnist(args.data_dir, args.cache_dir, verify=args.verify)
    images, labels = load_fashion_mnist(root, train=False)
    return images, labels, "Fashion-MNIST test images"


def photo_kinds(folder: str | Path) -> list[Path]:
    """The subfolders of ``folder`` that hold a labels.csv, by name."""
    kinds = sorted(p.parent for p in Path(folder).glob("*/labels.csv"))
    if not kinds:
        raise DatasetError(
            f"--photos {folder}: no subfolder with a labels.csv (python -m bench.photo_images writes them)"
        )
    return kinds


def evaluate_photos(loaded: LoadedModel, folder: str | Path, batch_size: int = 1000) -> dict[str, Any]:
    """Accuracy and the share flagged as out of distribution, for each kind of photo and all."""
    kinds: dict[str, Any] = {}
    for kind in photo_kinds(folder):
        dataset = CustomImageDataset(
            kind / "labels.csv", kind, classes=list(loaded.classes), classes_from="the model's"
        )
        images, labels = dataset.to_tensors(progress=False)
        figures = evaluate_checkpoint(loaded, images, labels, batch_size)
        kinds[kind.name] = {k: figures[k] for k in ("count", "accuracy", "ood_flagged")}
    # All of them: the kinds' shares weighted by their counts, not a second pass over the photos.
    rows = list(kinds.values())
    count = sum(row["count"] for row in rows)
    flagged = None
    if rows[0]["ood_flagged"] is not None:  # a model with a fitted score flags on every kind
        flagged = sum(row["ood_flagged"] * row["count"] for row in rows) / count
    kinds["all"] = {
        "count": count,
        "accuracy": sum(row["accuracy"] * row["count"] for row in rows) / count,
        "ood_flagged": flagged,
    }
    return kinds


def print_photos(loaded: LoadedModel, folder: str, kinds: dict[str, Any]) -> None:
    print(f"{loaded.path} ({loaded.arch}, version {loaded.version}) on the photos of {folder}")
    print(f"  {'kind':<12} {'photos':>6} {'accuracy':>9} {'flagged':>8}")
    for name, row in kinds.items():
        flagged = "-" if row["ood_flagged"] is None else f"{100 * row['ood_flagged']:.1f}%"
        print(f"  {name:<12} {row['count']:>6} {100 * row['accuracy']:>8.1f}% {flagged:>8}")


def main(args: argparse.Namespace) -> dict[str, Any]:
    loaded = load_checkpoint(args.model)
    if args.photos:
        kinds = evaluate_photos(loaded, args.photos, args.batch_size)
        if args.json:
            print(json.dumps({"model_version": loaded.version, "photos": kinds}, indent=2))
        else:
            print_photos(loaded, args.photos, kinds)
        return {"photos": kinds}
    images, labels, what = load_images(args, loaded)
    figures = evaluate_checkpoint(loaded, images, labels, args.batch_size)
    predictions = figures.pop("predictions")
    before, after = figures.pop("bins")
    plot = report.companion(loaded.path, "_reliability.png") if args.plot is None else args.plot
    if plot:
        title = f"{what}: ECE {figures['ece_uncalibrated']:.4f}, calibrated {figures['ece']:.4f}"
        report.plot_reliability(before, after, title, plot)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{loaded.path} ({loaded.arch}, version {loaded.version}) on {figures['count']} {what}")
        print(f"Accuracy: {100 * figures['accuracy']:.2f}%, Avg loss: {figures['loss']:.6f}")
        print(
            f"Calibration error (ECE, 15 bins): {100 * figures['ece_uncalibrated']:.2f}% uncalibrated, "
            f"{100 * figures['ece']:.2f}% as served (temperature {figures['temperature']:.4g})"
        )
        if figures["ood_flagged"] is not None:
            print(f"Flagged as out of distribution: {100 * figures['ood_flagged']:.2f}%")
        width = max(12, *(len(name) for name in loaded.classes))
        for name, accuracy in figures["per_class_accuracy"].items():
            print(f"  {name:<{width}} {100 * accuracy:6.2f}%")
    for i in range(min(args.show, len(labels))):
        predicted, actual = loaded.classes[int(predictions[i])], loaded.classes[int(labels[i])]
        print(f'Predicted: "{predicted}", Actual: "{actual}"')
    return figures


def run(argv: list[str] | None = None) -> None:
    """The command: a bad model or data file ends it with one line and status 2."""
    try:
        main(get_args_parser().parse_args(argv))
    except (CheckpointError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run()
