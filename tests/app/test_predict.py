"""``python -m app.predict``: offline classification through the same predictor."""

from pathlib import Path

import pytest

from app.predict import main
from app.predictor import Predictor
from tests.app.images import PDF, encode, png_bytes, product_photo


def test_prints_class_and_confidence_per_file(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shirt, photo = tmp_path / "shirt.png", tmp_path / "photo.jpg"
    shirt.write_bytes(png_bytes())
    photo.write_bytes(encode(product_photo(), "JPEG"))
    assert main([str(shirt), str(photo), "--model", str(tiny_checkpoint), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    predictor = Predictor.load(tiny_checkpoint, device="cpu")
    for path, line in zip([shirt, photo], lines, strict=True):
        best = predictor.classify(path.read_bytes(), top_k=1).top[0]
        assert line == f"{path}: {best.name} ({best.probability:.3f})"


def test_top_k_lists_more_classes(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "item.png"
    image.write_bytes(png_bytes())
    assert main([str(image), "--model", str(tiny_checkpoint), "--top-k", "3"]) == 0
    assert capsys.readouterr().out.count("(") == 3


def test_a_bad_file_is_reported_and_the_others_still_run(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "doc.pdf"
    good.write_bytes(png_bytes())
    bad.write_bytes(PDF)
    missing = tmp_path / "missing.png"
    assert main([str(bad), str(missing), str(good), "--model", str(tiny_checkpoint)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good}: ")
    assert f"{bad}: error: the file is PDF, not an image" in captured.err
    assert f"{missing}: error: No such file or directory" in captured.err


def test_a_missing_model_is_one_line_and_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "item.png"
    image.write_bytes(png_bytes())
    assert main([str(image), "--model", str(tmp_path / "none.pth")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'none.pth'}: model file not found\n"


def test_the_shipped_model_says_when_a_picture_is_not_like_any_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.app.conftest import SHIPPED_MODEL

    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"{SHIPPED_MODEL} is missing")
    import numpy as np

    blank = tmp_path / "blank.png"
    blank.write_bytes(png_bytes(np.zeros((28, 28), dtype=np.uint8)))
    assert main([str(blank), "--model", str(SHIPPED_MODEL), "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip()
    prediction = Predictor.load(SHIPPED_MODEL, device="cpu").classify(blank.read_bytes(), top_k=1)
    best = prediction.top[0]
    assert line == (
        f"{blank}: {best.name} ({best.probability:.3f}) "
        f"[ood_score {prediction.ood_score:.2f}; does not look like any of the classes]"
    )
