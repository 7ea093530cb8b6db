"""Per-image cost of preprocessing on ONE core: 256x256 photo-like JPEGs and 28x28 PNGs.

    python -m bench.preprocessing_speed     # writes docs/benchmarks-preprocessing.md

Times ``decode_upload`` end to end, as the server's decoders run it (open, decode, grayscale,
background estimate and removal, cut-out, fit, stretch), on the six kinds of
``bench.photo_images`` in 256x256 frames and on test images as 28x28 PNGs. The baseline,
measured in the same run and interleaved round by round, is Pillow decoding the same bytes
to grayscale and nothing more: what no preprocessing can go below. The process is pinned to
one CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.machine import machine_info
from bench.photo_images import KINDS, make_photo
from models.images import decode_upload
from training.data import DEFAULT_CACHE_DIR, load_fashion_mnist, prepare_fashion_mnist

SIDE = 256


def _pillow_only(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.convert("L").load()


def _per_image_ms(step: Callable[[bytes], Any], uploads: list[bytes]) -> float:
    began = time.perf_counter()
    for data in uploads:
        step(data)
    return (time.perf_counter() - began) / len(uploads) * 1e3


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def measure(data_dir: str, per_kind: int, rounds: int, seed: int) -> dict[str, Any]:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    images, _ = load_fashion_mnist(prepare_fashion_mnist(data_dir, DEFAULT_CACHE_DIR), train=False)
    pixels = images.numpy()
    rng = np.random.default_rng(seed)
    sets = {
        f"{SIDE}x{SIDE} JPEG, {kind}": [
            make_photo(pixels[i], kind, rng, (SIDE, SIDE)) for i in rng.choice(len(pixels), per_kind)
        ]
        for kind in KINDS
    }
    sets["28x28 PNG"] = [_png(pixels[i]) for i in rng.choice(len(pixels), 6 * per_kind)]
    times: dict[str, dict[str, list[float]]] = {name: {"ours": [], "pillow": []} for name in sets}
    for uploads in sets.values():  # warm-up: first calls build caches and page in code
        _per_image_ms(decode_upload, uploads)
    for _ in range(rounds):
        for name, uploads in sets.items():
            times[name]["ours"].append(_per_image_ms(decode_upload, uploads))
            times[name]["pillow"].append(_per_image_ms(_pillow_only, uploads))
    rows = {}
    for name, measured in times.items():
        ours, pillow = statistics.median(measured["ours"]), statistics.median(measured["pillow"])
        rows[name] = {"ms": ours, "pillow_ms": pillow, "ratio": ours / pillow, "count": len(sets[name])}
    jpegs = [rows[name]["ms"] for name in rows if name.endswith(KINDS)]
    return {
        "machine": machine_info(),
        "rounds": rounds,
        "per_kind": per_kind,
        "seed": seed,
        "rows": rows,
        "jpeg_worst_ms": max(jpegs),
    }


def markdown(figures: dict[str, Any]) -> str:
    machine = figures["machine"]
    lines = [
        "# Preprocessing benchmark",
        "",
        f"Written by `python -m bench.preprocessing_speed` on {machine['date']}; every figure below is",
        "from that one run.",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"Python {machine['python']}, Pillow {machine['versions']['pillow']}; load average when "
        f"the run ended: {', '.join(str(x) for x in machine['load_average_at_end'])}",
        "- The process is pinned to one core. Each upload goes through `decode_upload` as the",
        "  server's decoders run it: open, decode (a big JPEG at a reduced scale), grayscale,",
        "  the background estimated and taken away, the item cut out, fitted, stretched.",
        f"- The JPEGs: {figures['per_kind']} of each kind of `bench.photo_images` (seed "
        f"{figures['seed']}) in {SIDE}x{SIDE} frames; the PNGs: test images as 28x28 PNGs.",
        "- Baseline, in the same run and interleaved round by round: Pillow decoding the same",
        "  bytes to grayscale and nothing more, below which no preprocessing can go.",
        "",
        f"Median of {figures['rounds']} rounds, per image:",
        "",
        "| upload | images | preprocessing ms | Pillow decode alone ms | ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in figures["rows"].items():
        lines.append(
            f"| {name} | {row['count']} | {row['ms']:.3f} | {row['pillow_ms']:.3f} | {row['ratio']:.2f}x |"
        )
    lines.append("")
    lines.append(f"Slowest kind of {SIDE}x{SIDE} JPEG: {figures['jpeg_worst_ms']:.2f} ms per image.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/datasets/fashion-mnist", help="the four .gz files")
    parser.add_argument("--per-kind", type=int, default=50, help="JPEGs of each kind (default 50)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the photos (default 1)")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("docs/benchmarks-preprocessing.md"),
        help="where to write the report (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead")
    args = parser.parse_args()
    figures = measure(args.data_dir, args.per_kind, args.rounds, args.seed)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    report = markdown(figures)
    args.output.write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
