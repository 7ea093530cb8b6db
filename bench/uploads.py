"""What the reliability checks upload: PNGs of real test images (or synthetic ones), the class
the model gives each offline, simple bad inputs, and multipart bodies ready to send.
"""

from __future__ import annotations

import http.client
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.bad_images import encode

REPO = Path(__file__).resolve().parents[1]
BOUNDARY = "fashionreliability5b1d"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
# An image whose top two classes are closer in probability than this may swap them between
# batch sizes (float sums in another order): such images are left out of the answers checked.
NEAR_TIE = 1e-4


def find_data_dir() -> Path | None:
    """The four real Fashion-MNIST .gz files: where tests/conftest.py looks, in that order."""
    candidates = [
        REPO.parent / "shared" / "datasets" / "fashion-mnist",
        Path("/work/shared/datasets/fashion-mnist"),
    ]
    if os.environ.get("FASHION_MNIST_DIR"):
        candidates.insert(0, Path(os.environ["FASHION_MNIST_DIR"]))
    return next((folder for folder in candidates if (folder / "t10k-images-idx3-ubyte.gz").exists()), None)


def png(pixels: np.ndarray) -> bytes:
    """A 2-D uint8 array as a grayscale PNG."""
    return encode(pixels)


def synthetic_pngs(n: int, seed: int = 0) -> list[bytes]:
    """Light squares on dark noise, of ten brightnesses: decodable, varied, and no dataset needed."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(n):
        pixels = rng.integers(0, 30, (28, 28), dtype=np.uint8)
        pixels[4:24, 6:22] = 40 + 21 * (index % 10)
        images.append(png(pixels))
    return images


def sample_pngs(n: int, data_dir: Path | None = None) -> tuple[list[bytes], str]:
    """``n`` test images as PNGs and where they came from: the real test split when found."""
    data_dir = data_dir or find_data_dir()
    if data_dir is None:
        return synthetic_pngs(n), "synthetic (the real Fashion-MNIST files were not found)"
    from bench.serving import real_pngs

    return real_pngs(data_dir, n), f"the first {n} Fashion-MNIST test images, from {data_dir}"


def offline_classes(model_path: Path, pngs: list[bytes]) -> list[int | None]:
    """The class the model gives each image in-process; None for a near tie (see NEAR_TIE)."""
    from app.predictor import Predictor

    predictor = Predictor.load(model_path, device="cpu")
    classes: list[int | None] = []
    for data in pngs:
        first, second = predictor.classify(data, top_k=2).top
        classes.append(first.index if first.probability - second.probability >= NEAR_TIE else None)
    return classes


def bad_inputs(good: list[bytes], n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` simple bad uploads, as (filename, bytes): random bytes, truncated PNGs, text named .png."""
    rng = random.Random(seed)
    kinds = []
    for index in range(n):
        kind = index % 3
        if kind == 0:
            kinds.append(("random.png", rng.randbytes(rng.randint(1, 2048))))
        elif kind == 1:
            image = good[index % len(good)]
            # Cut within the pixel data: a PNG that lost only its trailer (the last checksum
            # and the end chunk) still has every pixel, and Pillow decodes it, rightly.
            kinds.append(("truncated.png", image[: rng.randint(8, len(image) * 3 // 4)]))
        else:
            kinds.append(("notes.png", f"a shirt, size {index % 5 + 1}, colour blue\n".encode()))
    return kinds


@dataclass(frozen=True)
class Upload:
    """One POST /predict body; ``expected`` is the class for a good image, None for a bad one."""

    body: bytes
    good: bool
    expected: int | None


def multipart(
    data: bytes, filename: str = "item.png", content_type: str = "image/png", boundary: str = BOUNDARY
) -> bytes:
    """A multipart/form-data body (CONTENT_TYPE, for the default boundary) with ``data`` as
    its one ``file`` field."""
    return form("file", [(filename, data, content_type)], boundary)


def form(field_name: str, files: list[tuple[str, bytes, str]], boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body with one ``field_name`` part per (filename, data, content type)."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + data
        + b"\r\n"
        for filename, data, content_type in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def post(port: int, path: str, body: bytes, timeout: float = 120.0) -> tuple[int | None, float]:
    """POST a multipart body (CONTENT_TYPE) on a new connection: the status (None when no
    answer came: reset, closed or timed out) and the seconds it took."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": CONTENT_TYPE})
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    except (OSError, http.client.HTTPException):
        return None, time.monotonic() - started
    finally:
        connection.close()


def request_head(path: str, body_length: int, host: str = "127.0.0.1") -> bytes:
    """The request line and headers of a keep-alive POST carrying a multipart body."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {CONTENT_TYPE}\r\n"
        f"Content-Length: {body_length}\r\n\r\n"
    ).encode()
