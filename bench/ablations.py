"""Ablations of the default training recipe, measured on the validation split only.

    python -m bench.ablations --data-dir ../shared/datasets/fashion-mnist --epochs 5

Each variant trains the default CNN with one ingredient changed, for the same (short)
number of epochs and the same seed, and reports its best validation accuracy; the test
set is never touched (--skip-test). The default recipe is the baseline of the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from training.config import parse_args
from training.train import main as train

VARIANTS: dict[str, list[str]] = {
    "default recipe": [],
    "no augmentation (shift, flip, erasing off)": [
        "--random-shift",
        "0",
        "--hflip",
        "0",
        "--random-erasing",
        "0",
    ],
    "no horizontal flip": ["--hflip", "0"],
    "no random erasing": ["--random-erasing", "0"],
    "no label smoothing": ["--label-smoothing", "0"],
    "neither erasing nor smoothing (the recipe before)": ["--random-erasing", "0", "--label-smoothing", "0"],
    "+ dropout 0.2 (the first recipe, with a 7x7 head)": ["--model-args", '{"dropout": 0.2}'],
    "no weight averaging (EMA off)": ["--ema-decay", "0"],
    "AdamW (lr 3e-3, wd 0.05) instead of SGD": ["--opt", "adamw", "--lr", "3e-3", "--weight-decay", "0.05"],
    "cosine schedule instead of one-cycle": ["--lr-scheduler", "cosine"],
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default="../shared/datasets/fashion-mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run; 0 = every core")
    parser.add_argument("--only", nargs="*", help="run only the variants whose names start with these")
    parser.add_argument("--output", default="docs/ablations.json", help="results as JSON")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in VARIANTS.items():
            if args.only and not any(name.startswith(prefix) for prefix in args.only):
                continue
            argv = [
                "--data-dir",
                args.data_dir,
                "--epochs",
                str(args.epochs),
                "--skip-test",
                "--quiet",
                "--threads",
                str(args.threads),
                "--output",
                str(Path(tmp) / "model.pth"),
                *flags,
            ]
            start = time.perf_counter()
            metrics = train(parse_args(argv))
            seconds = time.perf_counter() - start
            results.append(
                {
                    "variant": name,
                    "flags": " ".join(flags),
                    "epochs": args.epochs,
                    "val_accuracy": metrics["val_accuracy"],
                    "seconds": seconds,
                }
            )
            print(f"{name}: validation accuracy {metrics['val_accuracy']:.4f}", flush=True)
    base = next((r["val_accuracy"] for r in results if r["variant"] == "default recipe"), None)
    print(f"\nmachine: {platform.processor() or platform.machine()}; {args.epochs} epochs each, seed 0")
    print("| variant | flags | validation accuracy | vs default |")
    print("| --- | --- | --- | --- |")
    for r in results:
        delta = f"{100 * (r['val_accuracy'] - base):+.2f} pts" if base is not None else "-"
        print(f"| {r['variant']} | `{r['flags'] or '(defaults)'}` | {r['val_accuracy']:.4f} | {delta} |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
