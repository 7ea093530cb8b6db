import json
import sys
from pathlib import Path

import pytest
import torch

from models.checkpoint import make_checkpoint, save_checkpoint
from models.metadata import FASHION_MNIST_CLASSES, InputSpec
from models.networks import build_model
from tests.training.test_data import make_image_folder, write_csv
from training import evaluate


def run(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> dict:  # type: ignore[type-arg]
    monkeypatch.setattr(sys, "argv", ["evaluate", *argv])
    return evaluate.main(evaluate.get_args_parser().parse_args())


def test_evaluate_reports_accuracy_per_class_and_the_tutorial_lines(
    tiny_checkpoint: Path, fake_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = ["--model", str(tiny_checkpoint), "--data-dir", str(fake_data_dir), "--no-verify",
            "--cache-dir", str(tmp_path / "cache"), "--show", "3"]  # fmt: skip
    figures = run(argv, monkeypatch)
    out = capsys.readouterr().out
    assert figures["count"] == 100
    assert 0.0 <= figures["accuracy"] <= 1.0
    assert set(figures["per_class_accuracy"]) == set(FASHION_MNIST_CLASSES)
    assert f"Accuracy: {100 * figures['accuracy']:.2f}%" in out
    shown = [line for line in out.splitlines() if line.startswith("Predicted: ")]
    assert len(shown) == 3
    assert shown[0].endswith('Actual: "T-shirt/top"')  # the fake test set's first label is 0


def test_evaluate_prints_json(
    tiny_checkpoint: Path, fake_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = ["--model", str(tiny_checkpoint), "--data-dir", str(fake_data_dir), "--no-verify",
            "--cache-dir", str(tmp_path / "cache"), "--json"]  # fmt: skip
    figures = run(argv, monkeypatch)
    assert json.loads(capsys.readouterr().out)["accuracy"] == figures["accuracy"]


def three_class_checkpoint(path: Path, classes: list[str]) -> Path:
    torch.manual_seed(0)
    args = {"widths": [4, 8], "pools_after": [0], "num_classes": len(classes)}
    save_checkpoint(make_checkpoint(build_model("cnn", **args), "cnn", args, classes, InputSpec()), path)
    return path


def test_evaluate_on_your_own_images_matches_classes_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = three_class_checkpoint(tmp_path / "mine.pth", ["handbag", "pants", "shoe"])
    folder = make_image_folder(tmp_path / "images")
    # Rows in any order, by name or index: each is matched to the model's own class index.
    csv = write_csv(
        tmp_path / "test.csv", ["filename,label", "img0.png,shoe", "img1.png,handbag", "img2.png,1"]
    )
    figures = run(["--model", str(model), "--images", str(folder), "--annotations", str(csv), "--show", "3"],
                  monkeypatch)  # fmt: skip
    out = capsys.readouterr().out
    assert figures["count"] == 3
    assert list(figures["per_class_accuracy"]) == ["handbag", "pants", "shoe"]
    assert f"on 3 images of {csv}" in out
    assert f"Accuracy: {100 * figures['accuracy']:.2f}%" in out
    actual = [line.rsplit('Actual: "', 1)[1].rstrip('"') for line in out.splitlines() if "Actual" in line]
    assert actual == ["shoe", "handbag", "pants"]


def test_evaluate_refuses_a_label_the_model_does_not_know(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = three_class_checkpoint(tmp_path / "mine.pth", ["handbag", "pants", "shoe"])
    folder = make_image_folder(tmp_path / "images")
    csv = write_csv(tmp_path / "test.csv", ["img0.png,shoe", "img1.png,dress"])
    with pytest.raises(SystemExit) as info:
        evaluate.run(["--model", str(model), "--images", str(folder), "--annotations", str(csv)])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {csv} line 2: unknown label 'dress'; the classes (the model's) are handbag, pants, shoe, "
        "or their indices 0-2\n"
    )


def test_a_model_of_other_classes_on_fashion_mnist_is_a_clear_error(
    tmp_path: Path, fake_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = three_class_checkpoint(tmp_path / "mine.pth", ["handbag", "pants", "shoe"])
    with pytest.raises(SystemExit) as info:
        evaluate.run(["--model", str(model), "--data-dir", str(fake_data_dir), "--no-verify",
                      "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert (
        "its classes (handbag, pants, shoe) are not Fashion-MNIST's ten; evaluate it on its own images" in err
    )


def test_evaluate_reports_each_kind_of_photo(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.photo_images import KINDS, make_set, write_set
    from tests.conftest import synthetic_images

    images, labels = synthetic_images(20)
    photos = make_set(images.numpy(), labels.numpy(), 3, seed=0)
    write_set(photos, list(FASHION_MNIST_CLASSES), tmp_path / "p")
    figures = run(["--model", str(tiny_checkpoint), "--photos", str(tmp_path / "p")], monkeypatch)
    out = capsys.readouterr().out
    assert list(figures["photos"]) == [*sorted(KINDS), "all"]
    assert figures["photos"]["all"]["count"] == 3 * len(KINDS)
    for kind, row in figures["photos"].items():
        assert row["count"] in (3, 3 * len(KINDS)) and 0 <= row["accuracy"] <= 1
        assert any(line.split()[:2] == [kind, str(row["count"])] for line in out.splitlines()), out


def test_evaluate_photos_needs_a_labelled_subfolder(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as info:
        evaluate.run(["--model", str(tiny_checkpoint), "--photos", str(tmp_path / "empty")])
    assert info.value.code == 2
    assert "no subfolder with a labels.csv" in capsys.readouterr().err
