"""How well the served model's confidence and out-of-distribution flag do what they say.

    python -m bench.ood --model models/model.pth --data-dir ../shared/datasets/fashion-mnist

Everything goes through the server's own ``Predictor`` from encoded uploads (the shared
decoding, trimming and fitting, the calibrated probabilities, the score): the 10,000 test
images as 28x28 PNGs, and the pictures of ``bench.ood_images`` (not clothing, eight kinds).
Reports accuracy and calibration error (ECE, 15 bins) on the test set, the share of test
images flagged, and for each kind of non-clothing picture the share flagged and the AUROC
of ``ood_score`` against the test set, beside the AUROC of the plain confidence (the
maximum probability) measured in the same run as the baseline.
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from app.prediction import Prediction
from app.predictor import Predictor
from bench.ood_images import KINDS, make_set
from models.calibration import expected_calibration_error
from training.data import DEFAULT_CACHE_DIR, load_fashion_mnist, prepare_fashion_mnist


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _classify(predictor: Predictor, uploads: list[bytes]) -> list[Prediction]:
    every = len(predictor.classes)
    return [
        p
        for start in range(0, len(uploads), 500)
        for p in predictor.classify_many(uploads[start : start + 500], every)
    ]


def _scores(predictions: list[Prediction]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ood = np.array([p.ood_score for p in predictions], dtype=np.float64)
    flagged = np.array([bool(p.out_of_distribution) for p in predictions])
    unsure = np.array([1 - p.top[0].probability for p in predictions])
    return ood, flagged, unsure


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    truth = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return float(roc_auc_score(truth, np.r_[inside, outside]))


def measure(model: str, data_dir: str, per_kind: int, seed: int) -> dict[str, Any]:
    predictor = Predictor.load(model, device="cpu")
    if predictor.ood is None:
        raise SystemExit(
            f"error: {model} has no out-of-distribution score: fit one with python -m training.calibrate"
        )
    images, labels = load_fashion_mnist(prepare_fashion_mnist(data_dir, DEFAULT_CACHE_DIR), train=False)
    test = _classify(predictor, [_png(pixels) for pixels in images.numpy()])
    probs = torch.zeros(len(test), len(predictor.classes))
    for row, prediction in zip(probs, test, strict=True):
        for scored in prediction.top:
            row[scored.index] = scored.probability
    test_ood, test_flagged, test_unsure = _scores(test)
    correct = (probs.argmax(1) == labels).numpy()
    figures: dict[str, Any] = {
        "model_version": predictor.version,
        "threshold": predictor.ood_threshold,
        "test_accuracy": float((probs.argmax(1) == labels).double().mean()),
        "test_ece": expected_calibration_error(probs, labels),
        "test_flagged": float(test_flagged.mean()),
        "test_accuracy_flagged": float(correct[test_flagged].mean()) if test_flagged.any() else None,
        "test_accuracy_unflagged": float(correct[~test_flagged].mean()),
        "seed": seed,
        "kinds": {},
    }
    all_ood, all_flagged, all_unsure = [], [], []
    for kind, uploads in make_set(per_kind, seed).items():
        ood, flagged, unsure = _scores(_classify(predictor, uploads))
        figures["kinds"][kind] = {
            "count": len(uploads),
            "flagged": float(flagged.mean()),
            "auroc": _auroc(test_ood, ood),
            "auroc_confidence": _auroc(test_unsure, unsure),
        }
        all_ood.append(ood)
        all_flagged.append(flagged)
        all_unsure.append(unsure)
    figures["all"] = {
        "count": int(sum(len(f) for f in all_flagged)),
        "flagged": float(np.concatenate(all_flagged).mean()),
        "auroc": _auroc(test_ood, np.concatenate(all_ood)),
        "auroc_confidence": _auroc(test_unsure, np.concatenate(all_unsure)),
    }
    return figures


def markdown(figures: dict[str, Any]) -> str:
    lines = [
        f"Model `{figures['model_version']}`, threshold {figures['threshold']:.3f}, "
        f"pictures of seed {figures['seed']}.",
        "",
        f"Test set (10,000 images as PNG uploads): accuracy {100 * figures['test_accuracy']:.2f}%, "
        f"ECE {100 * figures['test_ece']:.2f}%, flagged {100 * figures['test_flagged']:.2f}% "
        f"(accuracy {100 * (figures['test_accuracy_flagged'] or 0):.1f}% on those, "
        f"{100 * figures['test_accuracy_unflagged']:.2f}% on the rest).",
        "",
        "| pictures | count | flagged | AUROC of ood_score | AUROC of the confidence (baseline) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    rows = [*((kind, figures["kinds"][kind]) for kind in KINDS), ("**all**", figures["all"])]
    for name, row in rows:
        flagged, auroc, baseline = 100 * row["flagged"], row["auroc"], row["auroc_confidence"]
        lines.append(f"| {name} | {row['count']} | {flagged:.1f}% | {auroc:.3f} | {baseline:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/model.pth", help="checkpoint (default models/model.pth)")
    parser.add_argument("--data-dir", default="../shared/datasets/fashion-mnist", help="the four .gz files")
    parser.add_argument("--per-kind", type=int, default=100, help="pictures of each kind (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the pictures (default 1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = measure(args.model, args.data_dir, args.per_kind, args.seed)
    print(json.dumps(figures, indent=2) if args.json else markdown(figures))


if __name__ == "__main__":
    main()
