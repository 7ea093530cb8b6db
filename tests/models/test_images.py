import codecs
import io

import numpy as np
import pytest
import torch
from PIL import Image

import models.images
from models.images import (
    FORMATS,
    REDUCED_SIDE,
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    NotAnImageError,
    Steps,
    decode_image,
    decode_upload,
    model_image,
    to_grayscale,
    to_model_image,
)
from models.preprocessing import normalize, preprocess

MEAN, STD = (0.286,), (0.353,)


def encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def fashion_like(size: int = 28) -> np.ndarray:
    """A light item on black, like Fashion-MNIST."""
    pixels = np.zeros((size, size), dtype=np.uint8)
    pixels[size // 5 : -size // 5, size // 4 : -size // 4] = 200
    return pixels


def test_a_28x28_grayscale_png_reaches_the_network_exactly_as_offline_evaluation_feeds_it() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    pixels[0, :] = 0  # a dark border, so auto does not invert
    pixels[-1, :], pixels[:, 0], pixels[:, -1] = 0, 0, 0
    result = preprocess(decode_image(encode(Image.fromarray(pixels))), MEAN, STD)
    offline = normalize(torch.from_numpy(pixels), MEAN, STD).unsqueeze(0)
    assert result.tensor.shape == (1, 28, 28)
    assert result.tensor.dtype == torch.float32
    assert torch.equal(result.tensor, offline)
    assert result.steps == Steps((28, 28), inverted=False, background=None, box=None)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_every_supported_format_decodes(fmt: str) -> None:
    image = Image.fromarray(fashion_like(56)).convert("RGB")
    result = preprocess(decode_image(encode(image, fmt)), MEAN, STD)
    assert result.tensor.shape == (1, 28, 28)
    assert result.steps.original_size == (56, 56)


def test_product_photo_on_white_is_inverted_and_fitted_keeping_the_aspect_ratio() -> None:
    photo = np.full((300, 200), 255, dtype=np.uint8)
    photo[50:250, 60:140] = 30  # a dark item, 200 tall and 80 wide
    image, inverted = to_model_image(Image.fromarray(photo), "auto")
    pixels = np.asarray(image)
    assert inverted is True
    assert image.size == (28, 28)
    rows = np.flatnonzero(pixels.max(axis=1) > 100)
    cols = np.flatnonzero(pixels.max(axis=0) > 100)
    assert rows[-1] - rows[0] + 1 == 28  # trimmed to the item, longest side fills the frame
    assert 10 <= cols[-1] - cols[0] + 1 <= 12  # 28 * 80 / 200 = 11.2: the aspect is kept
    assert pixels[:, 0].max() == 0  # padded with black


def big_product_photo(width: int, height: int, noise: float = 0.0) -> np.ndarray:
    """An RGB photo of a dark item on white; ``noise``: per-pixel standard deviation."""
    photo = np.full((height, width, 3), 240.0)
    photo[height // 6 : -height // 6, width // 3 : -width // 3] = (40, 60, 90)
    photo += np.random.default_rng(0).normal(0, noise, photo.shape) if noise else 0
    return np.clip(photo, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("size", "decoded"),
    [((2000, 1200), (250, 150)), ((4000, 3000), (500, 375)), ((300, 2000), (150, 1000))],
    ids=["eighth", "eighth, the most", "half"],
)
def test_a_big_jpeg_is_decoded_at_the_smallest_scale_that_keeps_both_sides_above_the_floor(
    size: tuple[int, int], decoded: tuple[int, int]
) -> None:
    image = decode_image(encode(Image.fromarray(big_product_photo(*size)), "JPEG"))
    assert image.size == decoded
    assert min(image.size) >= REDUCED_SIDE


def big_picture(mode: str) -> Image.Image:
    """A 1800x1200 product photo in ``mode``; RGBA: the item on a transparent background."""
    photo = Image.fromarray(big_product_photo(1800, 1200))
    if mode == "RGBA":
        photo.putalpha(Image.fromarray((big_product_photo(1800, 1200)[..., 0] < 128).astype(np.uint8) * 255))
        return photo
    if mode == "P":  # an adaptive palette: no dithering (noise that defeats the trim at full size)
        return photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    return photo.convert(mode)


@pytest.mark.parametrize(
    ("fmt", "mode", "orientation"),
    [
        ("PNG", "RGB", None),
        ("JPEG", "RGB", None),
        ("JPEG", "RGB", 6),
        ("PNG", "L", None),
        ("PNG", "RGBA", None),
        ("PNG", "RGBA", 6),
        ("PNG", "P", None),
        ("TIFF", "CMYK", None),
    ],
)
def test_a_big_picture_scaled_down_first_gives_the_same_28x28(
    fmt: str, mode: str, orientation: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation  # "rotate 90 clockwise to display"
    data = encode(big_picture(mode), fmt, exif=exif)
    reduced, reduced_inverted = to_model_image(decode_image(data))
    monkeypatch.setattr(models.images, "REDUCED_SIDE", 10**6)  # full resolution throughout
    full = decode_image(data)
    assert full.size == (1800, 1200)
    full_image, full_inverted = to_model_image(full)
    difference = np.abs(np.asarray(reduced, dtype=int) - np.asarray(full_image, dtype=int))
    assert reduced_inverted is full_inverted is (mode != "RGBA")  # RGBA: the item on black
    assert difference.mean() < 2 and difference.max() <= 40  # edge pixels, filtered differently
    assert np.asarray(full_image).max() > 40  # the item is there (dark on transparent: 57)


def test_a_big_transparent_picture_is_averaged_as_if_composited_onto_black(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An item on opaque black: its left half opaque grey 200, its right half every other
    # column opaque grey, the rest transparent over white. Onto black that half is 200, 0,
    # 200, 0... and averages to half the left's level; averaging the colours without
    # weighting them by their alpha would let the hidden white in (57% of it).
    pixels = np.zeros((1000, 1000, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[200:800, 300:500] = (200, 200, 200, 255)
    pixels[200:800, 500:700:2] = (200, 200, 200, 255)
    pixels[200:800, 501:700:2] = (255, 255, 255, 0)
    picture = Image.fromarray(pixels, "RGBA")
    reduced = np.asarray(to_model_image(picture, "false")[0], dtype=int)
    monkeypatch.setattr(models.images, "REDUCED_SIDE", 10**6)
    full = np.asarray(to_model_image(picture, "false")[0], dtype=int)
    for image in (reduced, full):
        assert image[14, 8] == 255  # the solid half, the item's brightest
        assert abs(image[14, 19] - 128) <= 3  # the striped half: half as bright


def test_a_big_picture_with_a_transparent_colour_is_matched_before_it_is_averaged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The background colour is transparent (a tRNS chunk): averaged first, the item's edges
    # would blend into colours that no longer match it, and show as a halo.
    pixels = np.full((1000, 1000, 3), 240, dtype=np.uint8)
    pixels[333:667, 401:599] = (40, 60, 90)  # edges off the 4-pixel grid of the reduction
    data = encode(Image.fromarray(pixels), "PNG", transparency=(240, 240, 240))
    reduced = np.asarray(to_model_image(decode_image(data))[0], dtype=int)
    monkeypatch.setattr(models.images, "REDUCED_SIDE", 10**6)
    full = np.asarray(to_model_image(decode_image(data))[0], dtype=int)
    # Inside the item (its outer pixels are cut differently at the two scales): colours
    # averaged first leave a light halo, the stretch makes it the brightest part, and the
    # inside drops to about 40% of it.
    assert np.abs(reduced[2:-2, 8:20] - full[2:-2, 8:20]).max() <= 10
    assert reduced[2:-2, 8:20].min() >= 250


@pytest.fixture
def reduce_factors(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The factors Image.reduce is called with, in order."""
    factors: list[int] = []
    reduce = Image.Image.reduce

    def spy(self: Image.Image, factor: int, box: object = None) -> Image.Image:
        factors.append(factor)
        return reduce(self, factor, box)

    monkeypatch.setattr(Image.Image, "reduce", spy)
    return factors


def test_a_big_picture_is_reduced_before_the_rest_of_the_work(reduce_factors: list[int]) -> None:
    factors = reduce_factors
    to_model_image(Image.fromarray(big_product_photo(1000, 700)))
    assert factors == [700 // REDUCED_SIDE]
    to_model_image(Image.fromarray(big_product_photo(200, 150)))  # too small to gain from it
    assert factors == [6]


def test_a_picture_of_an_extreme_shape_is_reduced_to_a_bounded_size(reduce_factors: list[int]) -> None:
    # 223 pixels wide: the side rule leaves it whole, but its 15.6 million pixels would make
    # the background's estimate cost most of a second and a quarter of a GiB.
    factors = reduce_factors
    strip = np.full((70000, 223), 230, dtype=np.uint8)
    strip[17500:35000, 55:111] = 20
    picture, steps = model_image(Image.fromarray(strip))
    assert factors == [8]  # 27x8750: under MAX_WORK_PIXELS
    assert steps.box is not None and np.allclose(steps.box, (55, 17500, 111, 35000), atol=8)
    assert picture.size == (28, 28)


def test_noise_in_a_big_photo_does_not_defeat_the_trim() -> None:
    # Full size, one pixel in ten of the noisy white background passes the trim threshold
    # once inverted, and the trim box spans the whole photo; averaged first, none does.
    image, inverted = to_model_image(Image.fromarray(big_product_photo(1800, 1200, noise=3.0)))
    pixels = np.asarray(image)
    rows = np.flatnonzero(pixels.max(axis=1) > 100)
    assert inverted is True
    assert rows[-1] - rows[0] + 1 == 28  # trimmed to the item: its longest side fills the frame


@pytest.mark.parametrize(("mode", "expected"), [("true", True), ("false", False)])
def test_invert_can_be_forced(mode: str, expected: bool) -> None:
    image, inverted = to_model_image(Image.fromarray(fashion_like()), mode)  # type: ignore[arg-type]
    assert inverted is expected
    assert bool(np.asarray(image)[0, 0] == 255) is expected


def test_bad_invert_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="invert must be one of auto, true, false"):
        to_model_image(Image.fromarray(fashion_like()), "maybe")  # type: ignore[arg-type]


def test_alpha_is_composited_onto_black() -> None:
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere...
    rgba[10:18, 10:18, 3] = 255  # ...but opaque only in the middle
    gray = np.asarray(to_grayscale(Image.fromarray(rgba, "RGBA")))
    assert gray[0, 0] == 0 and gray[14, 14] == 255


def test_16_bit_images_are_scaled_to_8_bit() -> None:
    deep = (fashion_like().astype(np.uint16) * 257).astype(np.uint16)  # 200 -> 51400
    decoded = decode_image(encode(Image.fromarray(deep)))
    assert decoded.mode.startswith("I")
    assert np.array_equal(np.asarray(to_grayscale(decoded)), fashion_like())


def test_float_images_in_0_1_are_scaled() -> None:
    floats = Image.fromarray(fashion_like().astype(np.float32) / 255.0, mode="F")
    assert np.array_equal(np.asarray(to_grayscale(floats)), fashion_like())


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((20, 40), dtype=np.uint8)
    pixels[:, :5] = 255  # a bar on the left of a landscape picture
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    decoded = decode_image(encode(Image.fromarray(pixels), "JPEG", exif=exif))
    upright = np.asarray(to_grayscale(decoded))
    assert upright.shape == (40, 20)  # portrait once oriented
    assert upright[:5].mean() > 200  # the bar is now on top


def test_bogus_exif_orientation_is_ignored() -> None:
    exif = Image.Exif()
    exif[0x0112] = 42
    decoded = decode_image(encode(Image.fromarray(fashion_like()), "PNG", exif=exif))
    assert preprocess(decoded, MEAN, STD).tensor.shape == (1, 28, 28)


def test_gif_uses_the_first_frame() -> None:
    first = Image.fromarray(fashion_like()).convert("P")
    second = Image.new("P", (28, 28), 255)
    data = io.BytesIO()
    first.save(data, "GIF", save_all=True, append_images=[second])
    image, _ = to_model_image(decode_image(data.getvalue()), "false")
    assert np.asarray(image)[0, 0] == 0


def test_empty_bytes() -> None:
    with pytest.raises(EmptyImageError):
        decode_image(b"")


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "PDF"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "HTML"),
        (codecs.BOM_UTF8 + b"<!DOCTYPE html><html><body>hi</body></html>", "HTML"),
        ("<html><body>hi</body></html>".encode("utf-16"), "HTML"),  # with its byte-order mark
        (b"\n  <!-- a page --><html lang=en></html>", "HTML"),
        (b"<body onload=x()>", "HTML"),
        (codecs.BOM_UTF8 + b"some notes, saved by Notepad\r\n", "text"),
        (b'{"image": "nope"}', "JSON"),
        (b"just some words in a text file\n", "text"),
    ],
)
def test_known_non_image_types_are_named(data: bytes, kind: str) -> None:
    with pytest.raises(NotAnImageError, match=kind):
        decode_image(data)


def test_random_bytes_are_not_an_image() -> None:
    with pytest.raises(CorruptImageError):
        decode_image(bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8)))


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_png_is_corrupt(keep: float) -> None:
    rng = np.random.default_rng(2)
    data = encode(Image.fromarray(rng.integers(0, 256, (200, 200), dtype=np.uint8)))
    with pytest.raises(CorruptImageError):
        decode_image(data[: int(len(data) * keep)])


def test_pixel_limit_is_checked_before_the_pixels_are_decoded() -> None:
    # A 10000x10000 PNG of zeros compresses to a few hundred KB; it must be refused
    # from its header, without allocating 100 MB of pixels.
    bomb = encode(Image.new("L", (10_000, 10_000)), optimize=True)
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageTooLargeError, match="10000x10000"):
        decode_image(bomb, max_pixels=16_000_000)


def test_normalize_works_on_batches() -> None:
    pixels = torch.tensor([[0, 255]], dtype=torch.uint8)
    assert torch.allclose(normalize(pixels, (0.5,), (0.5,)), torch.tensor([[-1.0, 1.0]]))


@pytest.mark.parametrize("mode", Image.MODES)
def test_every_mode_pillow_hands_back_decodes_or_is_refused_cleanly(mode: str) -> None:
    """Each of Pillow's modes, in every supported format that can store it: a 28x28 picture,
    or an ImageError (a 4xx), never another exception (a 500)."""
    saved = 0
    for fmt in FORMATS:
        for size in ((28, 28), (60, 40)):
            buffer = io.BytesIO()
            try:
                Image.new(mode, size, color=None).save(buffer, fmt)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # this format cannot store this mode
            saved += 1
            try:
                picture, _ = decode_upload(buffer.getvalue())
            except ImageError:
                continue
            assert picture.mode == "L" and picture.size == (28, 28)
    if mode not in ("HSV", "La", "RGBa", "PA", "I;16N"):  # modes no supported format stores
        assert saved, f"no format stored {mode}: the walk tested nothing"
