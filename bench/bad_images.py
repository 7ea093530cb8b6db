"""Odd, broken and hostile image files, made in code: the payloads of bench/bad_inputs.py.

Each function returns the bytes of one file. Nothing here is random unless seeded, so a
failing case can be rebuilt byte for byte.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A JPEG's EXIF orientation is 1-8; anything else is nonsense a decoder must survive.
BOGUS_ORIENTATION = 77

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"></svg>\n'
HTML = b"<!DOCTYPE html>\n<html><body><img src='shirt.png'></body></html>\n"
JSON = b'{"image": "iVBORw0KGgo=", "label": "shirt"}\n'
TEXT = b"a shirt, size M, colour blue\n"


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def item(size: int = 28) -> np.ndarray:
    """A light item on black with a gradient, so every row and column differs."""
    pixels = np.zeros((size, size), dtype=np.uint8)
    ramp = np.linspace(120, 250, size - 2 * (size // 4), dtype=np.uint8)
    pixels[size // 5 : -size // 5, size // 4 : -size // 4] = ramp
    return pixels


def png() -> bytes:
    return encode(item())


def random_bytes(n: int = 4096, seed: int = 6) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(tag, offset of the chunk, length of its data) for each chunk of a PNG."""
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append((data[offset + 4 : offset + 8], offset, length))
        offset += 12 + length
    return chunks


def png_cut(where: str) -> bytes:
    """A PNG cut short: in the signature, after it, in or after IHDR, mid-IDAT, or before IEND."""
    data = png()
    chunks = {tag: (offset, length) for tag, offset, length in png_chunks(data)}
    idat, idat_length = chunks[b"IDAT"]
    ends = {
        "in-signature": 4,
        "after-signature": len(PNG_SIGNATURE),
        "in-header": len(PNG_SIGNATURE) + 12,
        "after-header": idat,
        "in-data": idat + 8 + idat_length // 2,
        "before-end": chunks[b"IEND"][0],
    }
    return data[: ends[where]]


def png_bad_crc(tag: bytes) -> bytes:
    """A PNG whose ``tag`` chunk has its CRC flipped."""
    data = bytearray(png())
    offset, length = next((o, n) for t, o, n in png_chunks(bytes(data)) if t == tag)
    data[offset + 8 + length] ^= 0xFF
    return bytes(data)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_declaring(width: int, height: int, rows: int = 16) -> bytes:
    """A valid grayscale PNG header for ``width`` x ``height``, with only ``rows`` rows of
    zeros behind it: a decompression bomb's first few kilobytes."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    data = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def jpeg_cut_mid_scan() -> bytes:
    """A noisy 200x200 JPEG cut in the middle of its entropy-coded scan."""
    pixels = np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8)
    data = encode(pixels, "JPEG", quality=90)
    scan = data.index(b"\xff\xda")  # start of scan
    return data[: scan + (len(data) - scan) // 2]


def gif_frames(n: int = 1000, size: int = 28) -> bytes:
    """An animated GIF of ``n`` distinct frames (a dot moving over the item)."""
    base = item(size)
    frames = []
    for index in range(n):
        pixels = base.copy()
        pixels[(index // size) % size, index % size] = 255 if pixels[0, 0] < 128 else 0
        pixels[0, 0] = index % 256
        frames.append(Image.fromarray(pixels))
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10, loop=0)


def solid(width: int, height: int, value: int) -> bytes:
    return encode(np.full((height, width), value, dtype=np.uint8))


def png_16_bit() -> bytes:
    pixels = item().astype(np.uint16) * 257
    return encode(Image.fromarray(pixels))  # uint16: mode I;16


def tiff_float(special: bool = False) -> bytes:
    """A 32-bit float (mode F) TIFF, 0..1; with ``special``, NaN and infinities in it too."""
    pixels = item().astype(np.float32) / 255
    if special:
        pixels[0, :3] = [np.nan, np.inf, -np.inf]
    return encode(Image.fromarray(pixels), "TIFF")  # float32: mode F


def jpeg_cmyk() -> bytes:
    gray = Image.fromarray(item())
    return encode(Image.merge("CMYK", [gray, gray, gray, Image.new("L", gray.size, 0)]), "JPEG")


def png_palette_transparent() -> bytes:
    image = Image.fromarray(item()).convert("P")
    return encode(image, transparency=0)


def png_gray_alpha() -> bytes:
    gray = Image.fromarray(item())
    return encode(Image.merge("LA", [gray, gray]))


def jpeg_bogus_orientation() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = BOGUS_ORIENTATION  # Orientation
    return encode(Image.fromarray(item()).convert("RGB"), "JPEG", exif=exif.tobytes())


def tiff_lab() -> bytes:
    """A CIELAB TIFF: the item in the lightness band, neutral colour bands."""
    lightness = Image.fromarray(item())
    neutral = Image.new("L", lightness.size, 128)
    return encode(Image.merge("LAB", [lightness, neutral, neutral]), "TIFF")


def html_with_bom(encoding: str = "utf-8-sig") -> bytes:
    """The HTML page as a text editor may save it: behind a byte-order mark."""
    return HTML.decode().encode(encoding)
