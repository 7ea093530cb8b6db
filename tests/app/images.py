"""Test images as bytes: well-formed ones in every format, and hostile ones."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

# The corpus's helper, re-exported: the tests and the corpus encode images one way.
from bench.bad_images import encode as encode


def fashion_like(size: int = 28) -> np.ndarray:
    """A light item on black, like Fashion-MNIST."""
    pixels = np.zeros((size, size), dtype=np.uint8)
    pixels[size // 5 : -size // 5, size // 4 : -size // 4] = 200
    return pixels


def product_photo(width: int = 300, height: int = 400) -> np.ndarray:
    """A dark item on a white background, as a shop would photograph it."""
    pixels = np.full((height, width), 255, dtype=np.uint8)
    pixels[height // 8 : -height // 8, width // 4 : -width // 4] = 40
    return pixels


def png_bytes(pixels: np.ndarray | None = None) -> bytes:
    return encode(fashion_like() if pixels is None else pixels)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A valid grayscale PNG of zeros, tiny on disk, declaring ``width`` x ``height``.

    ``rows`` limits how many rows of data are actually present (the rest is missing):
    for huge sizes, only the header matters, and building the data would take long.
    """
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    data = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows))
    data += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"></svg>\n'
TEXT = b"a shirt, size M, colour blue\n"
GARBAGE = bytes(range(256)) * 8


def jpeg_with_scans(scans: int, size: int = 64) -> bytes:
    """A progressive JPEG whose last scan is repeated until the file holds ``scans`` scans:
    what a file built to be costly to decode looks like (libjpeg warns, and decodes it)."""
    buffer = io.BytesIO()
    Image.fromarray(fashion_like(size)).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    extra = scans - data.count(b"\xff\xda")
    return data[:end] + data[last:end] * max(extra, 0) + data[end:]


def ico_bytes(size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(fashion_like(size)).save(buffer, "ICO", sizes=[(size, size)])
    return buffer.getvalue()
