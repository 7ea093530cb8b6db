"""Photo-like uploads of clothing, made from the Fashion-MNIST test split: for measuring how
the service reads product and phone photos, whose backgrounds are never pure white.

    python -m bench.photo_images --out photos          # photos/<kind>/*.jpg + labels.csv
    python -m training.evaluate --photos photos        # accuracy per kind, as served

Each picture is a test item, dark on a light background, as a camera sees it: the item is
scaled so its longer side is 40-70% of the frame's shorter side, rotated up to 10 degrees,
placed off-centre; the scene is lit, lightly blurred, given sensor noise, tinted and saved
as a JPEG of quality 60-90. Six kinds of background:

    off-white  one flat level, 180-245
    gradient   uneven lighting: a linear or a radial fall-off, down to 70% of the brightest
    noise      sensor noise of standard deviation 5-12 on every pixel
    paper      fine grain and fibres
    fabric     a woven pattern
    wood       grain along one direction

The item is composited as a material that absorbs light: where Fashion-MNIST's pixel is
``v``, the photo is ``background * (1 - v/255) + tone * v/255``, ``tone`` the item's own
darkest level (0-25% of the background). Deterministic for a seed; needs only numpy and
Pillow, and the test split.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from training.data import DEFAULT_CACHE_DIR, load_fashion_mnist, prepare_fashion_mnist

KINDS = ("off-white", "gradient", "noise", "paper", "fabric", "wood")
# Frames as phones and shops make them: square, landscape and portrait 4:3.
_SHAPES = ((1, 1), (4, 3), (3, 4))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Noise of unit standard deviation whose features are about ``scale`` pixels wide."""
    small = (max(2, int(shape[0] / scale)), max(2, int(shape[1] / scale)))
    field = Image.fromarray(rng.standard_normal(small).astype(np.float32), mode="F")
    field = np.asarray(field.resize((shape[1], shape[0]), Image.Resampling.BICUBIC))
    return (field - field.mean()) / (field.std() + 1e-6)


def _background(kind: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """The background's level at each pixel (before noise), float32."""
    h, w = shape
    level = float(rng.uniform(180, 245))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind in ("off-white", "noise"):
        return np.full(shape, level, np.float32)
    if kind == "gradient":
        darkest = float(rng.uniform(0.7, 0.9))
        if rng.random() < 0.5:
            angle = rng.uniform(0, 2 * math.pi)
            t = (xx / w - 0.5) * math.cos(angle) + (yy / h - 0.5) * math.sin(angle)
            t = (t - t.min()) / (t.max() - t.min())
        else:
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            t = np.hypot(yy - cy, xx - cx)
            t = t / t.max()
        return (level * (1 - (1 - darkest) * t)).astype(np.float32)
    if kind == "paper":
        grain = _smooth_noise(rng, shape, 1.5) * rng.uniform(2, 4)
        fibres = _smooth_noise(rng, (h // 8 or 1, w), 3)
        fibres = np.asarray(Image.fromarray(fibres, mode="F").resize((w, h), Image.Resampling.BILINEAR))
        blotches = _smooth_noise(rng, shape, min(h, w) / 6) * rng.uniform(2, 5)
        return (level + grain + fibres * rng.uniform(2, 4) + blotches).astype(np.float32)
    if kind == "fabric":
        period = rng.uniform(3, 7)
        weave = np.sin(2 * math.pi * xx / period) * np.sin(2 * math.pi * yy / period)
        amplitude = rng.uniform(5, 12)
        return (level + amplitude * weave + _smooth_noise(rng, shape, 2) * 2).astype(np.float32)
    if kind == "wood":
        period = rng.uniform(8, 20)
        warp = _smooth_noise(rng, shape, min(h, w) / 4) * period
        along = xx if rng.random() < 0.5 else yy
        grain = np.sin(2 * math.pi * (along + warp) / period)
        streaks = _smooth_noise(rng, (h, w), 2) * 2
        return (level + rng.uniform(6, 14) * grain + streaks).astype(np.float32)
    raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")


def _item_layer(item: np.ndarray, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """The item's Fashion-MNIST intensity (0-1) placed in the frame: scaled, rotated, off-centre."""
    h, w = shape
    box = Image.fromarray(item).getbbox() or (0, 0, 28, 28)
    crop = Image.fromarray(item).crop(box)
    side = rng.uniform(0.4, 0.7) * min(h, w)
    factor = side / max(crop.size)
    size = (max(1, round(crop.width * factor)), max(1, round(crop.height * factor)))
    scaled = crop.resize(size, Image.Resampling.BICUBIC)
    rotated = scaled.rotate(rng.uniform(-10, 10), Image.Resampling.BICUBIC, expand=True)
    layer = Image.new("L", (w, h), 0)
    margin = 0.02 * min(h, w)
    left = rng.uniform(margin, max(margin, w - rotated.width - margin))
    top = rng.uniform(margin, max(margin, h - rotated.height - margin))
    layer.paste(rotated, (round(left), round(top)))
    return np.asarray(layer, np.float32) / 255.0


def make_photo(
    item: np.ndarray, kind: str, rng: np.random.Generator, size: tuple[int, int] | None = None
) -> bytes:
    """One 28x28 Fashion-MNIST item (light on black, uint8) as a photo-like JPEG of ``kind``;
    ``size`` (width, height) fixes the frame, else it is drawn."""
    ratio = _SHAPES[rng.integers(len(_SHAPES))]
    short = int(rng.integers(224, 481))
    # ratio is width:height; the shorter side is ``short``.
    long = round(short * max(ratio) / min(ratio))
    w, h = size or ((long, short) if ratio[0] >= ratio[1] else (short, long))
    background = _background(kind, rng, (h, w))
    alpha = _item_layer(item, rng, (h, w))
    tone = float(rng.uniform(0, 0.25)) * float(background.mean())
    scene = background * (1 - alpha) + tone * alpha
    # A lens's slight blur (in 8 bits: Pillow blurs no float pictures; the JPEG is 8-bit anyway).
    focused = Image.fromarray(np.clip(np.rint(scene), 0, 255).astype(np.uint8), mode="L")
    scene = np.asarray(focused.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))), np.float32)
    sigma = rng.uniform(5, 12) if kind == "noise" else rng.uniform(0.5, 2)
    tint = 1 + rng.uniform(-0.04, 0.04, size=3)
    rgb = scene[..., None] * tint + rng.standard_normal((h, w, 3)).astype(np.float32) * sigma
    picture = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=int(rng.integers(60, 91)))
    return buffer.getvalue()


def make_set(
    images: np.ndarray, labels: np.ndarray, per_kind: int, seed: int
) -> dict[str, list[tuple[bytes, int]]]:
    """``per_kind`` photos of each kind, from items drawn (without replacement per kind) from
    ``images`` (N x 28 x 28 uint8, the test split) with their ``labels``."""
    made: dict[str, list[tuple[bytes, int]]] = {}
    for number, kind in enumerate(KINDS):
        rng = np.random.default_rng([seed, number])
        chosen = rng.choice(len(images), size=min(per_kind, len(images)), replace=False)
        made[kind] = [(make_photo(images[i], kind, rng), int(labels[i])) for i in chosen]
    return made


def write_set(made: dict[str, list[tuple[bytes, int]]], classes: list[str], out: Path) -> None:
    """Each kind as ``out/<kind>/NNNN.jpg`` with a ``labels.csv`` of filename,label."""
    for kind, photos in made.items():
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "labels.csv", "w", newline="") as handle:
            rows = csv.writer(handle)
            rows.writerow(["filename", "label"])
            for i, (data, label) in enumerate(photos):
                name = f"{i:04d}.jpg"
                (folder / name).write_bytes(data)
                rows.writerow([name, classes[label]])


def main() -> None:
    from models.metadata import FASHION_MNIST_CLASSES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write <kind>/*.jpg and labels.csv into")
    parser.add_argument("--data-dir", default="../shared/datasets/fashion-mnist", help="the four .gz files")
    parser.add_argument("--per-kind", type=int, default=200, help="photos of each kind (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="seed (default 1)")
    args = parser.parse_args()
    images, labels = load_fashion_mnist(prepare_fashion_mnist(args.data_dir, DEFAULT_CACHE_DIR), train=False)
    made = make_set(images.numpy(), labels.numpy(), args.per_kind, args.seed)
    write_set(made, list(FASHION_MNIST_CLASSES), Path(args.out))
    print(f"{sum(len(p) for p in made.values())} photos in {args.out}: {', '.join(KINDS)}")


if __name__ == "__main__":
    main()
