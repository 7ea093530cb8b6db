"""Uploads to 28x28 pictures: the decoding and preprocessing shared by training (custom
images) and serving, without torch.

Every path goes through :func:`to_model_image`, so a picture seen by the server becomes
the one the network saw in training and evaluation. The processes that only decode (the
server's contained decoders) import this module and never torch; ``models.preprocessing``
turns its pictures into tensors.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import logging
import math
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.background import cut_out

INPUT_SIZE = 28
DEFAULT_MAX_PIXELS = 16_000_000
# The formats read, and the only ones Pillow is allowed to parse: every other format (ICO,
# PSD, EPS, ...) is refused from its first bytes, before a parser that may decode a whole
# embedded picture while merely opening the file (an ICO's PNG entry) ever runs.
logger = logging.getLogger(__name__)

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
FORMAT_NAMES = "PNG, JPEG, WebP, BMP, GIF or TIFF"
# A progressive JPEG's decoding cost grows with its scans times its pixels, and one scan
# can be repeated at will: encoders write at most about a dozen (libjpeg's progression: 10
# for colour), so a file with more was made to be costly.
MAX_JPEG_SCANS = 32
InvertMode = Literal["auto", "true", "false"]
INVERT_MODES: tuple[InvertMode, ...] = ("auto", "true", "false")

# A border pixel brighter than this counts as "light" background.
_LIGHT = 128
# Invert when more than this share of the border is light. Fashion-MNIST items can touch
# the frame (a wide pullover, a bag), but the background is black on most of the border.
_LIGHT_BORDER_SHARE = 0.5
# A big picture is first scaled down by a whole factor, keeping both sides at least this
# many pixels (4x the network's input: an item that fills a quarter of the frame still has
# as many pixels as the network sees); the background's estimate and the cut-out then cost
# about a millisecond. The JPEG decoder does it while decoding (draft), other formats after
# (reduce): what Pillow's own thumbnail() does. Averaging also tames per-pixel noise.
REDUCED_SIDE = 4 * INPUT_SIZE
# The background's estimate and removal cost time and memory in proportion to the pixels:
# a picture of an extreme shape (a 223x70000 strip, which the rule above leaves whole) is
# scaled down further, to at most this many. Every ordinary photo has a quarter of it or less.
MAX_WORK_PIXELS = 2**18


class ImageError(ValueError):
    """The bytes or picture cannot be turned into a model input; the message says why."""


class EmptyImageError(ImageError):
    """Zero bytes."""


class NotAnImageError(ImageError):
    """A recognisable file type that is not an image (PDF, SVG, text, ...)."""


class CorruptImageError(ImageError):
    """Bytes that Pillow cannot decode: not an image, truncated, or damaged."""


class ImageTooLargeError(ImageError):
    """More pixels than allowed (a decompression bomb, or just too big)."""


class UnsupportedImageError(NotAnImageError):
    """An image format this service does not read (ICO, PSD, EPS, ...): never parsed."""


class ImageTooCostlyError(ImageError):
    """An image whose decoding would take more CPU time or memory than one upload may."""


TOO_MUCH_MEMORY = "the image is too costly to decode: it needs too much memory"


class Steps(NamedTuple):
    """What was done to a picture to make the network's input (a response's ``preprocessing``)."""

    original_size: tuple[int, int]  # (width, height) of the upload
    inverted: bool  # a dark item on a lighter background, turned light on black
    # The background's mean level (0-255, before any inversion) taken away; None for a 28x28
    # picture, which is taken as it is.
    background: int | None = None
    # The item's box, (left, top, right, bottom) in the upright upload's pixels, that was cut
    # out and fitted; None for a 28x28 picture, or when no item stands out.
    box: tuple[int, int, int, int] | None = None


def _log_cause(step: str, exc: Exception) -> None:
    """One line with the cause of a refused upload; the client gets a fixed detail."""
    # Text, not the exception: a record kept by a handler must not keep its traceback alive.
    logger.info("upload refused at %s: %s: %s", step, type(exc).__name__, str(exc)[:200])


_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<!--")


def _without_bom(data: bytes) -> bytes:
    """The start of ``data`` as UTF-8 without a byte-order mark (UTF-16 text re-encoded)."""
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :]
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data[: 8192 & ~1].decode("utf-16", errors="replace").encode("utf-8")
    return data


def _sniff_non_image(data: bytes) -> str | None:
    data = _without_bom(data[:8192])
    head = data[:512].lstrip()
    lowered = head.lower()
    if head.startswith(b"%PDF"):
        return "PDF"
    if b"<svg" in lowered:
        return "SVG"
    if lowered.startswith(_HTML_STARTS):
        return "HTML"
    if head[:1] in (b"{", b"["):
        return "JSON"
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "text"
    return None


def _other_format(data: bytes) -> str | None:
    """The name of an image format Pillow knows but this service does not read, judged from
    the first bytes only by each format's own signature check; None if none claims them."""
    Image.init()
    prefix = data[:16]
    for name, (_, accept) in Image.OPEN.items():
        if name in FORMATS or accept is None:
            continue
        with contextlib.suppress(Exception):
            if accept(prefix):
                return name
    return None


def _jpeg_scans(data: bytes) -> int:
    # Entropy-coded data stuffs every 0xFF byte with 0x00, so a start-of-scan marker
    # cannot occur inside it: counting them is exact, but for an embedded thumbnail's.
    return data.count(b"\xff\xda") if data.startswith(b"\xff\xd8") else 0


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read the header of uploaded bytes with Pillow and check the pixel limit; no pixel is decoded yet.

    Only the formats in ``FORMATS`` are parsed. Errors are raised without their cause, so a
    failed upload leaves nothing referenced behind it.
    """
    if not data:
        raise EmptyImageError("the file is empty")
    error: ImageError | None = None
    try:
        # Pillow warns above 89M pixels and raises above 179M; our own, lower limit is
        # checked right below, from the header, before any pixel is decoded.
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        kind = _sniff_non_image(data)
        other = None if kind is not None else _other_format(data)
        if kind is not None:
            error = NotAnImageError(f"the file is {kind}, not an image")
        elif other is not None:
            error = UnsupportedImageError(f"the file is {other}, an image format this service does not read")
        elif isinstance(exc, Image.DecompressionBombError):
            error = ImageTooLargeError(f"the image has more than {max_pixels} pixels")
        else:
            error = CorruptImageError("the file is not a decodable image")
    except Exception as exc:  # Pillow raises many types on hostile headers
        _log_cause("open", exc)
        error = CorruptImageError("the file is not a decodable image")
    if error is not None:
        raise error
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image has {width}x{height} pixels, more than the limit of {max_pixels}"
        )
    if width < 1 or height < 1:
        raise CorruptImageError("the image has no pixels")
    scans = _jpeg_scans(data) if image.format in ("JPEG", "MPO") else 0
    if scans > MAX_JPEG_SCANS:
        raise ImageTooCostlyError(
            f"the image is too costly to decode: a JPEG of {scans} scans (at most {MAX_JPEG_SCANS})"
        )
    return image


def load_image(image: Image.Image) -> Image.Image:
    """Decode the pixels of an opened image, its first frame only (GIF/WebP/TIFF animations, pages).

    A JPEG whose sides are both at least twice ``REDUCED_SIDE`` is decoded at 1/2, 1/4 or
    1/8 scale, the smallest that keeps both sides at least ``REDUCED_SIDE`` pixels: its
    ``size`` is then the reduced one.
    """
    try:
        image.draft(None, (REDUCED_SIDE, REDUCED_SIDE))  # a no-op for other formats
        image.load()
    except MemoryError:
        failed: ImageError = ImageTooCostlyError(TOO_MUCH_MEMORY)
    except Exception as exc:
        _log_cause("decode", exc)
        failed = CorruptImageError("the image is truncated or damaged")
    else:
        return image
    # Raised here, outside the handler: the traceback of Pillow's error (and the half-decoded
    # pixels its frames hold) is gone already.
    raise failed


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode uploaded bytes with Pillow (:func:`open_image`, then :func:`load_image`)."""
    return load_image(open_image(data, max_pixels))


def to_grayscale(image: Image.Image) -> Image.Image:
    """8-bit grayscale: EXIF orientation applied, deep modes rescaled, alpha composited on black."""
    # A bogus EXIF block must not reject a valid picture.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode == "L":
        return image
    if mode == "LAB":  # CIELAB's first band is the lightness: the grayscale itself
        return image.getchannel(0)
    if mode in ("I", "F") or mode.startswith("I;16"):
        # float32 and in place: a 16 MP picture takes 64 MiB here, not several copies of 128.
        pixels = np.array(image, dtype=np.float32)
        if mode == "F":
            # Float images are either 0..1 or 0..255.
            scale = 255.0 if np.nanmax(pixels, initial=0.0) <= 1.0 else 1.0
        elif mode.startswith("I;16") or np.nanmax(pixels, initial=0.0) > 255:
            scale = 255.0 / 65535.0
        else:
            scale = 1.0
        pixels *= scale
        np.nan_to_num(pixels, copy=False, nan=0.0)
        np.clip(np.rint(pixels, out=pixels), 0, 255, out=pixels)
        return Image.fromarray(pixels.astype(np.uint8), mode="L")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("L")
    return image.convert("L")


def _border_is_light(pixels: np.ndarray) -> bool:
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    return bool((border >= _LIGHT).mean() > _LIGHT_BORDER_SHARE)


# Modes scaled down before the grayscale conversion, so that it too runs on the small
# picture (a 4000x4000 RGBA PNG: 160 instead of 340 ms after decoding). Pillow averages
# RGBA and LA premultiplied, so the averages are those of the picture composited onto
# black, as to_grayscale does.
_EARLY_REDUCE_MODES = ("L", "LA", "RGB", "RGBA", "I", "F")


def _check_invert(invert: str) -> None:
    if invert not in INVERT_MODES:
        raise ValueError(f"invert must be one of {', '.join(INVERT_MODES)}, not {invert!r}")


def _reduce(image: Image.Image, modes: Sequence[str]) -> Image.Image:
    """A picture in one of ``modes`` scaled down by a whole factor, both sides kept at least
    ``REDUCED_SIDE`` unless it has more than ``MAX_WORK_PIXELS`` that way, with box averages
    (cheap, and no aliasing); any other unchanged."""
    width, height = image.size
    factor = min(width, height) // REDUCED_SIDE
    if width * height > MAX_WORK_PIXELS:
        factor = max(factor, math.ceil(math.sqrt(width * height / MAX_WORK_PIXELS)))
    if factor < 2 or image.mode not in modes or "transparency" in image.info:
        return image  # a transparent colour is matched exactly: not after averaging
    return image.reduce(factor)


def to_model_image(image: Image.Image, invert: InvertMode = "auto") -> tuple[Image.Image, bool]:
    """Grayscale, light-on-black, 28x28. Returns the image and whether it was inverted.

    See :func:`model_image`, which also says what else was done.
    """
    fitted, steps = model_image(image, invert)
    return fitted, steps.inverted


def model_image(
    image: Image.Image, invert: InvertMode = "auto", original_size: tuple[int, int] | None = None
) -> tuple[Image.Image, Steps]:
    """Grayscale, light-on-black, 28x28, and the steps taken; ``original_size`` is the upload's
    (default: ``image``'s own), the scale the box is given at.

    A 28x28 picture is only inverted (when its border is mostly light). Any other has its
    background estimated and removed and its item cut out (:mod:`models.background`), fitted
    into 28x28 keeping the aspect ratio, centred on black, and stretched so its brightest
    pixel is 255: the way Fashion-MNIST itself was made. A big one is first scaled down by a
    whole factor that keeps both sides at least ``REDUCED_SIDE``.
    """
    _check_invert(invert)
    size = original_size or image.size
    gray = to_grayscale(_reduce(image, _EARLY_REDUCE_MODES))
    gray = _reduce(gray, ("L",))  # what the modes above leave big, now that it is grayscale
    if gray.size == (INPUT_SIZE, INPUT_SIZE):
        inverted = _border_is_light(np.asarray(gray)) if invert == "auto" else invert == "true"
        return (ImageOps.invert(gray) if inverted else gray), Steps(size, inverted)
    cutout = cut_out(gray, None if invert == "auto" else invert == "true")
    fitted = ImageOps.contain(cutout.image, (INPUT_SIZE, INPUT_SIZE), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (INPUT_SIZE, INPUT_SIZE), 0)
    canvas.paste(fitted, ((INPUT_SIZE - fitted.width) // 2, (INPUT_SIZE - fitted.height) // 2))
    # Fashion-MNIST's pictures span the whole range: their brightest pixel is 255.
    pixels = np.asarray(canvas, dtype=np.float32)
    peak = max(float(pixels.max()), 1.0)
    if peak < 255:
        canvas = Image.fromarray(np.rint(pixels * (255.0 / peak)).astype(np.uint8), mode="L")
    box = None if cutout.box is None else _upload_box(cutout.box, gray.size, size)
    return canvas, Steps(size, cutout.inverted, round(cutout.background), box)


def _upload_box(
    box: tuple[int, int, int, int], work: tuple[int, int], upload: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A box in the working picture's pixels at the upload's scale, upright (EXIF applied)."""
    width, height = upload
    if (work[0] > work[1]) != (width > height):  # turned a quarter by its EXIF orientation
        width, height = height, width
    sx, sy = width / work[0], height / work[1]
    left, top, right, bottom = box
    return (
        math.floor(left * sx),
        math.floor(top * sy),
        min(width, math.ceil(right * sx)),
        min(height, math.ceil(bottom * sy)),
    )


def decode_upload(
    data: bytes,
    invert: InvertMode = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    check: Callable[[Image.Image], None] | None = None,
) -> tuple[Image.Image, Steps]:
    """Uploaded bytes to the 28x28 picture the network sees and the steps taken (the upload's
    size among them); any failure is an ImageError. ``check`` sees the opened header before
    any pixel is decoded, and may raise to stop there."""
    _check_invert(invert)
    image = open_image(data, max_pixels)
    if check is not None:
        check(image)
    original_size = image.size  # before a big JPEG is decoded at a reduced scale
    image = load_image(image)
    try:
        return model_image(image, invert, original_size)
    except MemoryError:
        failed: ImageError = ImageTooCostlyError(TOO_MUCH_MEMORY)
    except Exception as exc:  # a mode Pillow decodes but cannot convert
        _log_cause("convert", exc)
        failed = CorruptImageError(f"the image's {image.mode} pixels cannot be converted to grayscale")
    raise failed
