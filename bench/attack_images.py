"""Files built to hurt a decoder, made in code: the payloads of the attack drills (bench/attacks.py).

Each is small on the wire and costly to decode: an ICO whose one entry is a 13000x13000
PNG (676 MB of pixels in 657 KB), a 4000x4000 PNG cut within its pixel data, and a
4000x4000 progressive JPEG of about 2 KB whose last scan is repeated 63 times. Nothing
here is random, so a failing drill can be rebuilt byte for byte.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image

from bench.bad_images import PNG_SIGNATURE, encode, png_chunks

SOS, EOI = 0xDA, 0xD9
# A progressive JPEG names the scan's first and last coefficients and the bits it refines:
# libjpeg only warns when a scan repeats one already decoded, and decodes it again.
JPEG_SCAN_REPEATS = 63


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_rgba_solid(width: int, height: int, colour: tuple[int, int, int, int] = (0, 0, 0, 0)) -> bytes:
    """A one-colour RGBA PNG, compressed a hundred rows at a time: never the whole picture in memory."""
    compressor = zlib.compressobj(9)
    rows = (b"\x00" + bytes(colour) * width) * 100  # filter byte + pixels, 100 rows per call
    data = [compressor.compress(rows) for _ in range(height // 100)]
    data += [compressor.compress(rows[: (height % 100) * (4 * width + 1)]), compressor.flush()]
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(data))
        + _png_chunk(b"IEND", b"")
    )


def ico_bomb(side: int = 13000) -> bytes:
    """An ICO whose one entry is a ``side`` x ``side`` RGBA PNG: its directory says 256x256
    (width and height bytes 0), the PNG inside decodes to 4 x side² bytes."""
    embedded = png_rgba_solid(side, side)
    directory = struct.pack("<HHH", 0, 1, 1)  # reserved, type 1 (icon), one entry
    # width, height (0 means 256), colours, reserved, planes, bits per pixel, size, offset
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(embedded), 6 + 16)
    return directory + entry + embedded


def truncated_png(side: int = 4000) -> bytes:
    """A ``side`` x ``side`` RGBA PNG of a light square on transparent black, cut at 90% of its
    pixel data: the decoder allocates the whole picture, decodes most of it, then fails."""
    pixels = np.zeros((side, side, 4), dtype=np.uint8)
    pixels[side // 4 : -side // 4, side // 4 : -side // 4] = (200, 180, 160, 255)
    data = encode(Image.fromarray(pixels, "RGBA"))
    idats = [(offset, length) for tag, offset, length in png_chunks(data) if tag == b"IDAT"]
    start, end = idats[0][0] + 8, idats[-1][0] + 8 + idats[-1][1]
    return data[: start + (end - start) * 9 // 10]


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment after SOI; a scan's entropy-coded data belongs to
    its SOS segment, up to the next marker that is neither stuffing (FF00) nor a restart (RSTn)."""
    segments, offset = [], 2
    while offset + 2 <= len(data):
        if data[offset] != 0xFF:
            raise ValueError(f"no JPEG marker at byte {offset}")
        marker = data[offset + 1]
        if marker == EOI:
            segments.append((marker, offset, offset + 2))
            break
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        end = offset + 2 + length
        while marker == SOS:
            end = data.index(b"\xff", end)
            if data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7:
                break
            end += 2
        segments.append((marker, offset, end))
        offset = end
    return segments


def _scan_header(data: bytes, start: int) -> tuple[int, int, int]:
    """(Ss, Se, Ah) of the SOS segment at ``start``: its spectral range and the bits it refines."""
    (length,) = struct.unpack(">H", data[start + 2 : start + 4])
    ss, se, ahal = data[start + length - 1 : start + length + 2]
    return ss, se, ahal >> 4


def progressive_jpeg_bomb(side: int = 4000, repeats: int = JPEG_SCAN_REPEATS) -> bytes:
    """A ``side`` x ``side`` mid-grey progressive JPEG whose last AC scan comes ``repeats`` more times.

    A uniform picture's AC scans are a few bytes each (one end-of-band run covers thousands
    of blocks), yet each pass visits every block. Its DC scans are not: one bit per block,
    31 KB each at 4000x4000. So the DC refinement scan is left out and the first DC scan
    keeps its header only: libjpeg warns of the missing data and decodes zeros, which is the
    same mid grey. What remains is about 2 KB. The scan repeated is the last, a refinement
    scan: per pass, refining costs libjpeg several times what a first scan does.
    """
    data = encode(Image.new("L", (side, side), 128), "JPEG", progressive=True, quality=10)
    segments = jpeg_segments(data)
    scans = [(start, end) for marker, start, end in segments if marker == SOS]
    ac_scans = [(start, end) for start, end in scans if _scan_header(data, start)[0] > 0]
    last_ac = data[slice(*ac_scans[-1])]
    parts = [data[:2]]  # SOI
    for marker, start, end in segments:
        if marker == EOI:
            continue
        if marker == SOS and _scan_header(data, start)[0] == 0:  # a DC scan
            if _scan_header(data, start)[2]:
                continue  # the refinement: dropped
            end = start + 2 + struct.unpack(">H", data[start + 2 : start + 4])[0]  # header only
        parts.append(data[start:end])
    return b"".join([*parts, last_ac * repeats, b"\xff\xd9"])


_DECODE = """
import io, resource, sys, warnings
from PIL import Image
warnings.simplefilter("ignore")
data = sys.stdin.buffer.read()
before = resource.getrusage(resource.RUSAGE_SELF)
image = Image.open(io.BytesIO(data))
if len(sys.argv) > 1:
    image.draft("L", (int(sys.argv[1]), int(sys.argv[1])))
image.load()
after = resource.getrusage(resource.RUSAGE_SELF)
print(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
"""


def decode_cpu_s(data: bytes, draft_side: int | None = None) -> float:
    """CPU seconds Pillow takes to open and load ``data`` in a fresh process (its import not
    counted); with ``draft_side``, after ``draft('L', (side, side))`` as the server does."""
    command = [sys.executable, "-c", _DECODE] + ([str(draft_side)] if draft_side else [])
    done = subprocess.run(command, input=data, capture_output=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"decoding failed: {done.stderr.decode(errors='replace')[-500:]}")
    return float(done.stdout)
