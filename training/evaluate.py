"""Evaluate any checkpoint on the Fashion-MNIST test set: the tutorial's test loop as a command.

python -m training.evaluate --model models/model.pth --data-dir ../shared/datasets/fashion-mnist
python -m training.evaluate --model models/model.pth --show 5     # Predicted: "...", Actual: "..."
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from models.checkpoint import CheckpointError, LoadedModel, load_checkpoint
from models.networks import prepare_for_inference
from training import report
from training.data import DEFAULT_CACHE_DIR, load_fashion_mnist, prepare_fashion_mnist
from training.errors import DatasetError
from training.train import evaluate


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Test accuracy, loss and per-class accuracy of a checkpoint",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default="models/model.pth", help="checkpoint or bare state dict")
    parser.add_argument("--data-dir", default="data/fashion-mnist", help="folder with the four .gz files")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR))
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the MD5 check")
    parser.add_argument("--show", type=int, default=0, help="print predicted and actual class of N images")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


def evaluate_checkpoint(loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Accuracy, loss, per-class accuracy and predictions, as the server would compute them."""
    model = prepare_for_inference(loaded.model)  # what the server runs; the logits agree to rounding
    result = evaluate(
        model, images, labels, loaded.input_spec, 1000, torch.device("cpu"), flip_average=loaded.flip_average
    )
    matrix = report.confusion_matrix(labels, result["predictions"], len(loaded.classes))
    return {
        "model": str(loaded.path),
        "model_version": loaded.version,
        "accuracy": result["accuracy"],
        "loss": result["loss"],
        "count": result["count"],
        "per_class_accuracy": report.per_class_accuracy(matrix, loaded.classes),
        "predictions": result["predictions"],
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    loaded = load_checkpoint(args.model)
    root = prepare_fashion_mnist(args.data_dir, args.cache_dir, verify=args.verify)
    images, labels = load_fashion_mnist(root, train=False)
    figures = evaluate_checkpoint(loaded, images, labels)
    predictions = figures.pop("predictions")
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{loaded.path} ({loaded.arch}, version {loaded.version}) on {figures['count']} test images")
        print(f"Accuracy: {100 * figures['accuracy']:.2f}%, Avg loss: {figures['loss']:.6f}")
        for name, accuracy in figures["per_class_accuracy"].items():
            print(f"  {name:<12} {100 * accuracy:6.2f}%")
    for i in range(min(args.show, len(labels))):
        predicted, actual = loaded.classes[int(predictions[i])], loaded.classes[int(labels[i])]
        print(f'Predicted: "{predicted}", Actual: "{actual}"')
    return figures


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except (CheckpointError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
