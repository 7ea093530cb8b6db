"""Untrusted decoding contained: formats not read are never parsed, a file built to be
costly is refused, a decode over its CPU or memory budget is stopped (and its decoder
replaced), a failed decode keeps nothing, and the decoders' queue is fair.

No test measures time: budgets are set far below or far above what a decode costs.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import IcoImagePlugin, Image

import models.images
from app.inference.decoders import DecoderLimits, DecoderPool
from app.inference.hosts import mp_context
from app.main import create_app
from app.settings import Settings
from models.images import (
    MAX_JPEG_SCANS,
    CorruptImageError,
    ImageTooCostlyError,
    UnsupportedImageError,
    decode_upload,
    open_image,
)
from tests.app.images import ico_bytes, jpeg_with_scans, png_bytes
from tests.app.routes.test_predict_concurrency import upload


def noise_png(side: int, mode: str = "L") -> bytes:
    """Noise compresses badly: decoding it costs real CPU time and memory."""
    channels = {"L": 1, "RGBA": 4}[mode]
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, channels), dtype=np.uint8).squeeze()
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_format_not_read_is_refused_from_its_first_bytes_and_never_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed = []
    monkeypatch.setattr(IcoImagePlugin.IcoImageFile, "_open", lambda self: parsed.append(1))
    with pytest.raises(
        UnsupportedImageError, match="the file is ICO, an image format this service does not read"
    ):
        open_image(ico_bytes())
    assert parsed == []


def test_a_jpeg_of_more_scans_than_encoders_write_is_refused_before_decoding() -> None:
    decode_upload(jpeg_with_scans(MAX_JPEG_SCANS))  # as many as allowed: decoded
    with pytest.raises(ImageTooCostlyError, match=f"a JPEG of {MAX_JPEG_SCANS + 1} scans"):
        decode_upload(jpeg_with_scans(MAX_JPEG_SCANS + 1))


def test_a_cielab_picture_is_read_by_its_lightness(client: TestClient) -> None:
    lightness = np.zeros((28, 28), dtype=np.uint8)
    lightness[6:22, 9:19] = 200
    lab = Image.merge(
        "LAB", [Image.fromarray(lightness), Image.new("L", (28, 28), 128), Image.new("L", (28, 28), 128)]
    )
    buffer = io.BytesIO()
    lab.save(buffer, "TIFF")
    response = client.post("/predict", files=upload(buffer.getvalue()), params={"top_k": 10})
    expected = client.post("/predict", files=upload(png_bytes(lightness)), params={"top_k": 10})
    assert response.status_code == 200
    assert response.json()["top_k"] == expected.json()["top_k"]


def test_pixels_that_cannot_be_converted_are_a_400_not_a_500(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unconvertible(image: Image.Image) -> Image.Image:
        raise ValueError(f"conversion from {image.mode} to L not supported")

    monkeypatch.setattr(models.images, "to_grayscale", unconvertible)
    caplog.set_level(logging.INFO, logger="models.images")
    with pytest.raises(CorruptImageError, match=r"^the image's L pixels cannot be converted to grayscale$"):
        decode_upload(png_bytes())
    (line,) = [r.getMessage() for r in caplog.records if r.name == "models.images"]
    assert line == "upload refused at convert: ValueError: conversion from L to L not supported"


def test_hostile_files_get_their_4xx_over_http(client: TestClient) -> None:
    ico = client.post("/predict", files=upload(ico_bytes(64)))
    assert ico.status_code == 415 and ico.json()["detail"].startswith("the file is ICO")
    scans = client.post("/predict", files=upload(jpeg_with_scans(64, size=256)))
    assert scans.status_code == 400 and "too costly to decode" in scans.json()["detail"]
    files = [
        ("files", ("a.png", png_bytes(), "image/png")),
        ("files", ("b.jpg", jpeg_with_scans(64), "image/jpeg")),
    ]
    batch = client.post("/predict/batch", files=files)
    assert batch.status_code == 400 and batch.json()["detail"].startswith(
        "files[1] (b.jpg): the image is too costly"
    )
    assert client.post("/predict", files=upload(png_bytes())).status_code == 200


def test_a_decode_over_its_cpu_budget_is_stopped_and_its_decoder_replaced(tiny_checkpoint: Path) -> None:
    costly = noise_png(2000)  # tens of milliseconds of CPU: a thousand times the budget
    settings = Settings(model_path=tiny_checkpoint, device="cpu", decode_processes=1, decode_cpu_s=0.00002)
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.service.engine  # type: ignore[attr-defined]
        before = engine.decoders.pids
        response = client.post("/predict", files=upload(costly))
        assert response.status_code == 400
        assert response.json() == {"detail": "the image is too costly to decode: more than 2e-05 s of CPU"}
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200  # no decoder needed
        again = client.post("/predict", files=upload(costly))
        assert again.status_code == 400 and engine.decoders.pids != before  # a new decoder took it
    settings = Settings(model_path=tiny_checkpoint, device="cpu", decode_processes=1)
    with TestClient(create_app(settings)) as client:
        assert client.post("/predict", files=upload(costly)).status_code == 200  # within the default budget


def test_a_decode_over_its_memory_budget_fails_alone_and_keeps_nothing(tiny_checkpoint: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (4000, 4000), (200, 120, 40, 255)).save(buffer, "PNG")
    heavy = buffer.getvalue()  # a few KiB, 64 MiB of pixels once decoded, and its conversions
    settings = Settings(model_path=tiny_checkpoint, device="cpu", decode_processes=1, decode_memory_mb=64)
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.service.engine  # type: ignore[attr-defined]
        assert client.post("/predict", files=upload(noise_png(300))).status_code == 200
        (pid,) = engine.decoders.pids
        before = rss(pid)
        for _ in range(3):
            response = client.post("/predict", files=upload(heavy))
            assert response.status_code == 400
            assert response.json() == {
                "detail": "the image is too costly to decode: it needs too much memory"
            }
        assert engine.decoders.pids == [pid]  # refused by its own allocator: the decoder goes on
        assert rss(pid) - before < 16 * 2**20  # what the failed decodes took was given back
        assert client.post("/predict", files=upload(noise_png(300))).status_code == 200


def test_the_largest_pictures_of_every_deep_mode_decode_within_the_default_budgets() -> None:
    side = 4000  # 16 MP: the default pixel limit
    ramp = np.tile(np.linspace(0, 1, side, dtype=np.float32), (side, 1))
    pictures = {
        "RGBA": Image.new("RGBA", (side, side), (10, 200, 30, 128)),
        "I;16": Image.fromarray((ramp * 65535).astype(np.uint16)),
        "F": Image.fromarray(ramp),
        "CMYK": Image.new("CMYK", (side, side), (10, 200, 30, 0)),
    }
    files = []
    for mode, picture in pictures.items():
        buffer = io.BytesIO()
        picture.save(buffer, "TIFF" if mode == "F" else "JPEG" if mode == "CMYK" else "PNG")
        files.append(buffer.getvalue())
    defaults = Settings()

    async def main() -> None:
        limits = DecoderLimits(
            defaults.decode_cpu_s, defaults.decode_memory_mb * 2**20, defaults.max_image_pixels
        )
        pool = DecoderPool(1, limits, mp_context())
        await pool.start()
        try:
            decoded = await pool.decode_all(files, "auto", many=True)
        finally:
            await pool.aclose()
        assert [item.steps.original_size for item in decoded] == [(side, side)] * len(files)

    asyncio.run(main())


def test_the_decoders_take_each_request_in_turn_not_a_whole_batch_first() -> None:
    async def main() -> list[str]:
        pool = DecoderPool(1, DecoderLimits(5.0, 512 * 2**20, 16_000_000), mp_context())
        await pool.start()
        finished: list[str] = []
        try:
            many = asyncio.ensure_future(pool.decode_all([noise_png(200)] * 3, "auto", many=True))
            many.add_done_callback(lambda _: finished.append("batch of 3"))
            await asyncio.sleep(0)  # the batch's first upload is queued first
            one = asyncio.ensure_future(pool.decode(noise_png(200), "auto"))
            one.add_done_callback(lambda _: finished.append("single"))
            await asyncio.gather(many, one)
        finally:
            await pool.aclose()
        return finished

    assert asyncio.run(main()) == ["single", "batch of 3"]
