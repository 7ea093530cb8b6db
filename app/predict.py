"""``python -m app.predict IMAGE...``: classify image files offline, through the server's predictor.

python -m app.predict shoe.jpg shirt.png --top-k 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.prediction import DeviceError, Prediction
from app.predictor import Predictor
from app.settings import SettingsError, load_settings
from models.errors import CheckpointError
from models.images import INVERT_MODES, ImageError


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Print the predicted class and confidence of each image",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument(
        "--model", type=Path, help="checkpoint (default: FASHION_MODEL_PATH or the shipped one)"
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: FASHION_DEVICE or auto)")
    parser.add_argument("--top-k", type=int, default=1, choices=range(1, 11), metavar="{1..10}")
    parser.add_argument("--invert", default="auto", choices=INVERT_MODES)
    return parser


def _ood_note(prediction: Prediction) -> str:
    if prediction.ood_score is None:
        return ""
    verdict = "; does not look like any of the classes" if prediction.out_of_distribution else ""
    return f" [ood_score {prediction.ood_score:.2f}{verdict}]"


def main(argv: list[str] | None = None) -> int:
    """Returns the exit status: 0, 1 when an image failed, 2 when the model could not load."""
    args = get_args_parser().parse_args(argv)
    overrides = {k: v for k, v in {"model_path": args.model, "device": args.device}.items() if v is not None}
    try:
        settings = load_settings(**overrides)
        predictor = Predictor.load(
            settings.model_path,
            settings.device,
            settings.max_image_pixels,
            settings.flip_average,
            settings.ood_threshold,
            settings.runtime,
        )
    except (SettingsError, CheckpointError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for path in args.images:
        try:
            prediction = predictor.classify(path.read_bytes(), args.top_k, args.invert)
        except (OSError, ImageError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            print(f"{path}: error: {reason}", file=sys.stderr)
            failed += 1
            continue
        ranked = ", ".join(f"{s.name} ({s.probability:.3f})" for s in prediction.top)
        print(f"{path}: {ranked}{_ood_note(prediction)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
