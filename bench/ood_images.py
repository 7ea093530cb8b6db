"""Pictures that are not clothing, made from what installed packages ship: for measuring the
out-of-distribution flag.

    python -m bench.ood_images --out ood-pictures     # writes them as files, to look at

Nine kinds, each a list of encoded uploads (PNG or JPEG bytes, as a client sends them):

    photos     random crops of the photographs scikit-image, scikit-learn and matplotlib
               ship (a cat, an astronaut, coffee, a rocket, coins, the moon, a horse, ...)
    whole photos  the same photographs whole, resized (the 18 of them, over and over)
    faces      crops around the faces among them
    digits     scikit-learn's handwritten digits, and digits rendered in Pillow's fonts,
               light on black at 28x28 like MNIST
    text       words rendered dark on light, as a photo of a page
    noise      uniform, Gaussian, salt-and-pepper and smoothed noise
    shapes     outlined and filled circles, polygons, lines and stars
    flat       single levels and gradients, black to white
    textures   brick, grass and gravel, checkerboards and stripes

Deterministic for a seed. Needs scikit-image and scikit-learn (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import io
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

KINDS = ("photos", "whole photos", "faces", "digits", "text", "noise", "shapes", "flat", "textures")


def _encode(image: Image.Image, rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    if rng.random() < 0.5:
        image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(
            buffer, "JPEG", quality=rng.randint(70, 95)
        )
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def _photographs() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "camera", "chelsea", "clock", "coffee", "coins", "horse", "moon", "rocket")
    names += ("hubble_deep_field", "immunohistochemistry", "retina", "cell", "colorwheel", "page")
    photos = {name: getattr(skimage.data, name)() for name in names}
    samples = load_sample_images()
    for name, array in zip(("china", "flower"), samples.images, strict=True):
        photos[name] = array
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photos["grace_hopper"] = np.asarray(Image.open(handle).convert("RGB"))
    return photos


# Face boxes (left, top, right, bottom) in the photographs above.
_FACES = {
    "astronaut": (160, 20, 300, 200),
    "grace_hopper": (150, 60, 370, 330),
    "chelsea": (140, 20, 330, 220),
}


def _crop(array: np.ndarray, box: tuple[int, int, int, int], rng: random.Random) -> Image.Image:
    image = Image.fromarray(array[box[1] : box[3], box[0] : box[2]])
    side = rng.randint(48, 320)
    scale = side / max(image.size)
    image = image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))))
    return image.convert("L") if rng.random() < 0.3 else image.convert("RGB")


def photos(n: int, rng: random.Random) -> list[Image.Image]:
    arrays = list(_photographs().values())
    out = []
    for _ in range(n):
        array = rng.choice(arrays)
        height, width = array.shape[:2]
        side = int(min(height, width) * rng.uniform(0.3, 1.0))
        left, top = rng.randint(0, width - side), rng.randint(0, height - side)
        wide = int(side * rng.uniform(0.7, 1.4))
        out.append(_crop(array, (left, top, min(width, left + wide), top + side), rng))
    return out


def whole_photos(n: int, rng: random.Random) -> list[Image.Image]:
    arrays = list(_photographs().values())
    out = []
    for i in range(n):
        array = arrays[i % len(arrays)]
        out.append(_crop(array, (0, 0, array.shape[1], array.shape[0]), rng))
    return out


def faces(n: int, rng: random.Random) -> list[Image.Image]:
    arrays = _photographs()
    out = []
    for i in range(n):
        name = sorted(_FACES)[i % len(_FACES)]
        left, top, right, bottom = _FACES[name]
        jitter = [rng.randint(-15, 15) for _ in range(4)]
        box = (max(0, left + jitter[0]), max(0, top + jitter[1]), right + jitter[2], bottom + jitter[3])
        out.append(_crop(arrays[name], box, rng))
    return out


def _font(size: int, rng: random.Random) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    fonts = sorted(Path("/usr/share/fonts/truetype/dejavu").glob("*.ttf"))
    if fonts:
        return ImageFont.truetype(str(rng.choice(fonts)), size)
    return ImageFont.load_default(size)


def digits(n: int, rng: random.Random) -> list[Image.Image]:
    from sklearn.datasets import load_digits

    handwritten = load_digits().images  # 8x8, 0-16
    out = []
    for i in range(n):
        if i % 2 == 0:
            array = handwritten[rng.randrange(len(handwritten))] * (255 / 16)
            small = Image.fromarray(array.astype(np.uint8)).resize((20, 20), Image.Resampling.BICUBIC)
            canvas = Image.new("L", (28, 28), 0)
            canvas.paste(small, (4, 4))
        else:
            canvas = Image.new("L", (28, 28), 0)
            draw = ImageDraw.Draw(canvas)
            font = _font(rng.randint(18, 24), rng)
            draw.text((14, 14), str(rng.randrange(10)), fill=255, font=font, anchor="mm")
            canvas = canvas.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR)
        out.append(canvas)
    return out


_WORDS = [
    *("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog"),
    *("serving", "models", "is", "fun", "2026", "invoice", "total", "page"),
]


def text(n: int, rng: random.Random) -> list[Image.Image]:
    out = []
    for _ in range(n):
        width, height = rng.randint(120, 400), rng.randint(60, 300)
        image = Image.new("L", (width, height), rng.randint(200, 255))
        draw = ImageDraw.Draw(image)
        size = rng.randint(12, 40)
        font = _font(size, rng)
        y = rng.randint(0, size)
        while y < height - size:
            line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 8)))
            draw.text((rng.randint(0, 20), y), line, fill=rng.randint(0, 60), font=font)
            y += int(size * 1.4)
        out.append(image)
    return out


def noise(n: int, rng: random.Random) -> list[Image.Image]:
    out = []
    for i in range(n):
        side = rng.choice((28, 28, 64, 128, 256))
        generator = np.random.default_rng(rng.randrange(2**32))
        kind = i % 4
        if kind == 0:
            array = generator.integers(0, 256, (side, side))
        elif kind == 1:
            array = np.clip(generator.normal(128, rng.uniform(20, 80), (side, side)), 0, 255)
        elif kind == 2:
            array = np.where(generator.random((side, side)) < rng.uniform(0.05, 0.5), 255, 0)
        else:
            array = generator.integers(0, 256, (side, side))
        image = Image.fromarray(array.astype(np.uint8))
        if kind == 3:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(1, 4))).point(
                lambda p: max(0, min(255, (p - 128) * 4 + 128))
            )
        out.append(image)
    return out


def _star(cx: float, cy: float, r: float, points: int) -> list[tuple[float, float]]:
    return [
        (
            cx + (r if k % 2 == 0 else r / 2.5) * math.cos(math.pi * k / points),
            cy + (r if k % 2 == 0 else r / 2.5) * math.sin(math.pi * k / points),
        )
        for k in range(2 * points)
    ]


def shapes(n: int, rng: random.Random) -> list[Image.Image]:
    out = []
    for _ in range(n):
        side = rng.choice((28, 64, 128))
        background = rng.choice((0, 255))
        image = Image.new("L", (side, side), background)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 4)):
            ink = rng.randint(120, 255) if background == 0 else rng.randint(0, 100)
            x, y, r = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(side / 8, side / 2.5)
            width = max(1, side // 20)
            shape = rng.randrange(4)
            if shape == 0:
                box = (x - r, y - r, x + r, y + r)
                if rng.random() < 0.6:
                    draw.ellipse(box, outline=ink, width=width)
                else:
                    draw.ellipse(box, fill=ink)
            elif shape == 1:
                draw.polygon(_star(x, y, r, rng.randint(4, 7)), fill=ink)
            elif shape == 2:
                points = [(rng.uniform(0, side), rng.uniform(0, side)) for _ in range(rng.randint(2, 5))]
                draw.line(points, ink, width)
            else:
                sides, rotation = rng.randint(3, 8), rng.uniform(0, 90)
                draw.regular_polygon((x, y, r), sides, rotation=rotation, outline=ink, width=width)
        out.append(image)
    return out


def flat(n: int, rng: random.Random) -> list[Image.Image]:
    out = []
    for i in range(n):
        side = rng.choice((28, 64, 200))
        if i % 2 == 0:
            out.append(Image.new("L", (side, side), round(255 * i / max(1, n - 1))))
            continue
        ramp = np.linspace(rng.randint(0, 120), rng.randint(135, 255), side)
        array = np.tile(ramp, (side, 1))
        if rng.random() < 0.5:
            array = array.T
        out.append(Image.fromarray(array.astype(np.uint8)))
    return out


def textures(n: int, rng: random.Random) -> list[Image.Image]:
    import skimage.data

    sources = [skimage.data.brick(), skimage.data.grass(), skimage.data.gravel()]
    out = []
    for i in range(n):
        if i % 2 == 0:
            array = rng.choice(sources)
            side = rng.randint(64, 400)
            left, top = rng.randint(0, 512 - side), rng.randint(0, 512 - side)
            out.append(Image.fromarray(array[top : top + side, left : left + side]))
            continue
        side, period = rng.choice((28, 64, 128)), rng.randint(2, 16)
        y, x = np.mgrid[:side, :side]
        pattern = (x // period + y // period) % 2 if rng.random() < 0.5 else (x // period) % 2
        out.append(Image.fromarray((pattern * 255).astype(np.uint8)))
    return out


MAKERS: dict[str, Callable[[int, random.Random], list[Image.Image]]] = {
    "photos": photos,
    "whole photos": whole_photos,
    "faces": faces,
    "digits": digits,
    "text": text,
    "noise": noise,
    "shapes": shapes,
    "flat": flat,
    "textures": textures,
}


def make_set(per_kind: int = 100, seed: int = 0) -> dict[str, list[bytes]]:
    """Each kind's uploads, encoded as a client would send them."""
    result = {}
    for kind in KINDS:
        rng = random.Random(f"{seed}-{kind}")
        result[kind] = [_encode(image, rng) for image in MAKERS[kind](per_kind, rng)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the pictures into")
    parser.add_argument("--per-kind", type=int, default=100, help="pictures of each kind (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()
    for kind, uploads in make_set(args.per_kind, args.seed).items():
        folder = args.out / kind.replace(" ", "-")
        folder.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(uploads):
            suffix = "jpg" if data[:2] == b"\xff\xd8" else "png"
            (folder / f"{i:03d}.{suffix}").write_bytes(data)
    print(f"wrote {args.per_kind * len(KINDS)} pictures under {args.out}")


if __name__ == "__main__":
    main()
