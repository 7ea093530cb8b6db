"""Fit a checkpoint's calibration and out-of-distribution score, after training or later.

python -m training.calibrate --model models/model.pth --data-dir ../shared/datasets/fashion-mnist

The training job runs ``fit_scoring`` on its own split before it saves. This command does
the same for a checkpoint already written: it rebuilds the training and validation split
from the checkpoint's own training arguments (same data, ``--val-size`` and ``--seed``),
fits the temperature and the out-of-distribution score on it, and writes the checkpoint
back (atomically) with both, without retraining. The test set is never used for fitting;
it is only reported on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.calibration import Calibration, expected_calibration_error, fit_temperature, reliability_bins
from models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from models.errors import CheckpointError
from models.metadata import InputSpec
from models.networks import has_features, logits_and_features, prepare_for_inference
from models.ood import DEFAULT_FLAG_RATE, OODDetector, fit
from models.preprocessing import normalize
from training import report
from training.config import HelpFormatter, Parser
from training.data import load_data, resolve_val_size, stratified_split
from training.errors import DatasetError

logger = logging.getLogger(__name__)


@torch.inference_mode()
def network_outputs(
    model: nn.Module, images: torch.Tensor, spec: InputSpec, flip_average: bool, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """V x N x C logits and N x D features of uint8 N x 28 x 28 images, as the server computes them."""
    model.eval()
    device = next(model.parameters()).device
    logits, features = [], []
    for chunk in images.split(batch_size):
        x = normalize(chunk.to(device).unsqueeze(1), spec.mean, spec.std)
        views, feats = logits_and_features(model, x, flip_average)
        logits.append(views.cpu())
        features.append(feats.cpu())
    return torch.cat(logits, dim=1), torch.cat(features)


def fit_scoring(
    model: nn.Module,
    spec: InputSpec,
    flip_average: bool,
    train: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor],
    flag_rate: float = DEFAULT_FLAG_RATE,
) -> tuple[Calibration, OODDetector | None, dict[str, Any]]:
    """The temperature (validation), the out-of-distribution score (class statistics from the
    training images, threshold from validation), and validation figures before and after."""
    val_logits, val_features = network_outputs(model, validation[0], spec, flip_average)
    labels = validation[1].long()
    temperature = fit_temperature(val_logits, labels)
    calibration = Calibration(temperature, fitted_on=f"{len(labels)} validation images")
    figures: dict[str, Any] = {
        "temperature": round(temperature, 4),
        "val_ece_uncalibrated": round(
            expected_calibration_error(Calibration().probabilities(val_logits), labels), 4
        ),
        "val_ece": round(expected_calibration_error(calibration.probabilities(val_logits), labels), 4),
    }
    if not has_features(model):
        return calibration, None, figures
    _, train_features = network_outputs(model, train[0], spec, flip_average)
    _, log_partition = calibration.probabilities_and_log_partition(val_logits)
    ood = fit(train_features, log_partition, val_features, temperature, flag_rate)
    flagged = ood.score(log_partition, val_features, temperature) > ood.threshold
    figures.update(
        ood_threshold=round(ood.threshold, 4), val_ood_flagged=round(float(flagged.float().mean()), 4)
    )
    return calibration, ood, figures


def scoring_figures(
    model: nn.Module,
    spec: InputSpec,
    flip_average: bool,
    calibration: Calibration,
    ood: OODDetector | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1000,
) -> dict[str, Any]:
    """ECE before and after calibration (and the reliability bins), accuracy and the served
    probabilities, and the share flagged, on ``images``: one pass of the network."""
    logits, features = network_outputs(model, images, spec, flip_average, batch_size)
    probs, log_partition = calibration.probabilities_and_log_partition(logits)
    labels = labels.long()
    uncalibrated = Calibration().probabilities(logits)
    figures: dict[str, Any] = {
        "probabilities": probs,
        "accuracy": float((probs.argmax(1) == labels).double().mean()),
        "ece_uncalibrated": expected_calibration_error(uncalibrated, labels),
        "ece": expected_calibration_error(probs, labels),
        "bins_uncalibrated": reliability_bins(uncalibrated, labels),
        "bins": reliability_bins(probs, labels),
    }
    if ood is not None:
        scores = ood.score(log_partition, features, calibration.temperature)
        figures["ood_flagged"] = float((scores > ood.threshold).double().mean())
    return figures


def write_companions(output: Path, figures: dict[str, Any], test: dict[str, Any] | None) -> None:
    """The training job's metrics JSON beside the checkpoint gains the figures; the test set's
    reliability diagram is drawn beside it."""
    metrics_path = report.companion(output, "_metrics.json")
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics["calibration"] = figures
        metrics["test_accuracy"] = figures.get("test_accuracy", metrics.get("test_accuracy"))
        report.write_json(metrics, metrics_path)
    if test is not None:
        title = f"test set: ECE {test['ece_uncalibrated']:.4f}, calibrated {test['ece']:.4f}"
        report.plot_reliability(
            test["bins_uncalibrated"], test["bins"], title, report.companion(output, "_reliability.png")
        )


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m training.calibrate",
        description="Fit the calibration and the out-of-distribution score of a trained checkpoint "
        "on its own training/validation split, and write them into it",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", default="models/model.pth", help="checkpoint written by training.train")
    parser.add_argument("--output", help="where to write the result (default: over --model)")
    parser.add_argument(
        "--data-dir", help="folder with the four .gz files (default: the one it was trained on)"
    )
    parser.add_argument("--images", help="your own images' folder (default: the one it was trained on)")
    parser.add_argument(
        "--flag-rate",
        type=float,
        default=DEFAULT_FLAG_RATE,
        help="share of validation images the out-of-distribution flag may flag",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


def main(args: argparse.Namespace) -> dict[str, Any]:
    loaded = load_checkpoint(args.model)
    raw, _ = read_checkpoint(args.model)
    if loaded.format_version is None or not loaded.train_args:
        raise CheckpointError(f"{args.model}: no training arguments to rebuild its validation split from")
    if not 0 < args.flag_rate < 0.5:
        raise SystemExit("error: --flag-rate must be between 0 and 0.5")
    train_args = argparse.Namespace(**loaded.train_args)
    train_args.download = False
    for name in ("data_dir", "images"):
        if getattr(args, name):
            setattr(train_args, name, getattr(args, name))
    data = load_data(train_args)
    images, labels = data["train"]
    val_size = resolve_val_size(train_args.val_size, custom=bool(train_args.images))
    train_idx, val_idx = stratified_split(labels, val_size, train_args.seed)
    if len(val_idx) == 0:
        raise DatasetError(f"{args.model} was trained without a validation split: nothing to fit on")
    model = prepare_for_inference(loaded.model)
    calibration, ood, figures = fit_scoring(
        model,
        loaded.input_spec,
        loaded.flip_average,
        (images[train_idx], labels[train_idx]),
        (images[val_idx], labels[val_idx]),
        args.flag_rate,
    )
    test = None
    if data["test"] is not None:
        test = scoring_figures(model, loaded.input_spec, loaded.flip_average, calibration, ood, *data["test"])
        figures.update({f"test_{k}": round(v, 4) for k, v in test.items() if isinstance(v, float)})
    raw["calibration"] = calibration.to_dict()
    if ood is not None:
        raw["ood"] = ood.to_dict()
    raw["metrics"] = {**raw.get("metrics", {}), "calibration": figures}
    if "test_accuracy" in figures:
        raw["metrics"]["test_accuracy"] = figures["test_accuracy"]
    output = Path(args.output or args.model)
    save_checkpoint(raw, output)
    load_checkpoint(output)  # what was written serves
    write_companions(output, figures, test)
    print(json.dumps(figures, indent=2) if args.json else f"wrote {output}: {figures}")
    return figures


def run(argv: list[str] | None = None) -> None:
    """The command: a bad model or data file ends it with one line and status 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        main(get_args_parser().parse_args(argv))
    except (CheckpointError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run()
