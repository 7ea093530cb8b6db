"""Training on your own images: inferred classes, a split that fits, a recipe that holds, and
where the model goes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.metadata import FASHION_MNIST_CLASSES
from tests.conftest import synthetic_images
from tests.training.test_data import make_image_folder, write_csv
from training import train
from training.__main__ import run
from training.config import parse_args
from training.custom_dataset import CustomImageDataset, parse_class_names
from training.data import stratified_split
from training.errors import DatasetError
from training.sample_images import write_images

TINY = '{"widths": [4, 8], "pools_after": [0], "head_pool": 1}'


def test_class_names_are_inferred_from_the_labels_sorted(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    csv = write_csv(tmp_path / "labels.csv", ["img0.png,shoe", "img1.png,pants", "img2.png,handbag",
                                              "img3.png, shoe"])  # fmt: skip
    dataset = CustomImageDataset(csv, folder)
    assert dataset.classes == ["handbag", "pants", "shoe"]
    assert dataset.classes_source == "the label names, sorted"
    assert [label for _, _, label in dataset.samples] == [2, 1, 0, 2]


def test_indices_alone_mean_fashion_mnist_classes(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    dataset = CustomImageDataset(write_csv(tmp_path / "l.csv", ["img0.png,3", "img1.png,7"]), folder)
    assert dataset.classes == list(FASHION_MNIST_CLASSES)


def test_a_single_class_is_refused(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    csv = write_csv(tmp_path / "labels.csv", ["img0.png,shoe", "img1.png,shoe"])
    with pytest.raises(
        DatasetError, match=r"every label is 'shoe'; a classifier needs images of two classes"
    ):
        CustomImageDataset(csv, folder)


def test_indices_mixed_with_names_of_your_own_are_refused(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    csv = write_csv(tmp_path / "labels.csv", ["img0.png,shoe", "img1.png,1"])
    with pytest.raises(DatasetError, match=r"line 2: label '1' is an index, but other labels are names"):
        CustomImageDataset(csv, folder)


@pytest.mark.parametrize(
    ("text", "names"),
    [("shoe,handbag,pants", ["shoe", "handbag", "pants"]),
     (" shoe , handbag, pants ", ["shoe", "handbag", "pants"]),
     ("T-shirt/top, Ankle boot", ["T-shirt/top", "Ankle boot"])],
)  # fmt: skip
def test_classes_tolerate_spaces_around_names(text: str, names: list[str]) -> None:
    assert parse_class_names(text) == names


@pytest.mark.parametrize(
    ("text", "message"),
    [("shoe,,pants", "an empty class name"), ("shoe, shoe", "shoe given more than once"),
     ("shoe", "name at least two classes")],
)  # fmt: skip
def test_bad_class_lists_are_refused(text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_class_names(text)


def test_given_classes_with_spaces_match_the_labels(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    csv = write_csv(tmp_path / "labels.csv", ["img0.png,handbag", "img1.png,pants", "img2.png,0"])
    dataset = CustomImageDataset(csv, folder, classes=parse_class_names("shoe, handbag, pants"))
    assert [label for _, _, label in dataset.samples] == [1, 2, 0]


def test_a_fractional_split_holds_out_at_least_one_of_each_class() -> None:
    labels = torch.tensor([0] * 100 + [1] * 5 + [2] * 2 + [3])
    train_idx, val_idx = stratified_split(labels, 0.1, seed=0)
    held = labels[val_idx].tolist()
    assert (held.count(0), held.count(1), held.count(2), held.count(3)) == (10, 1, 1, 0)
    assert len(train_idx) + len(val_idx) == len(labels)
    assert set(labels[train_idx].tolist()) == {0, 1, 2, 3}  # never a class's last image


def test_a_count_larger_than_the_data_says_to_use_a_fraction() -> None:
    with pytest.raises(DatasetError, match=r"--val-size 5000 leaves no training data \(300 items\).*0\.1"):
        stratified_split(torch.arange(300) % 3, 5000, seed=0)


def write_synthetic_folder(folder: Path, per_class: int) -> Path:
    """Learnable synthetic images of three named classes, through the sample writer."""
    images, labels = synthetic_images(10 * per_class)
    return write_images(folder, "labels.csv", images, labels, per_class, {"dim": 0, "mid": 4, "bright": 9})


def test_defaults_on_a_small_dataset_use_the_small_recipe_and_a_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_synthetic_folder(tmp_path / "my-images", 100)
    monkeypatch.chdir(tmp_path)
    argv = ["--images", "my-images", "--annotations", str(csv.relative_to(tmp_path)), "--epochs", "1",
            "--model-args", TINY, "--quiet"]  # fmt: skip
    monkeypatch.setattr("sys.argv", ["training", *argv])
    run()
    runs = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    assert len(runs) == 1
    output = runs[0] / "model.pth"
    assert (tmp_path / "runs" / "latest").resolve() == runs[0].resolve()
    assert f"model written to runs/{runs[0].name}/model.pth" in capsys.readouterr().out
    loaded = load_checkpoint(output)
    assert loaded.classes == ["bright", "dim", "mid"]
    assert loaded.train_args["output"] == f"runs/{runs[0].name}/model.pth"
    # 270 training images: the small-data recipe, written out as it was used.
    assert (loaded.train_args["batch_size"], loaded.train_args["lr"]) == (32, 0.01)
    assert loaded.train_args["val_size"] == "auto" and loaded.metrics["test_count"] == 30
    assert (runs[0] / "model_metrics.json").is_file()
    # A second run gets a folder of its own, and runs/latest follows it.
    run()
    second = sorted(p for p in (tmp_path / "runs").iterdir() if p.name != "latest" and p != runs[0])
    assert len(second) == 1 and (tmp_path / "runs" / "latest").resolve() == second[0].resolve()
    assert output.is_file()


def test_the_shipped_model_is_never_the_default_output() -> None:
    args = parse_args([])
    assert args.output is None
    assert "models/model.pth" not in str(train.new_run_folder(create=False))


def test_a_diverging_run_stops_with_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_synthetic_folder(tmp_path / "images", 20)
    argv = ["--images", str(tmp_path / "images"), "--annotations", str(csv), "--lr", "10",
            "--momentum", "0.99", "--epochs", "5", "--ema-decay", "0",
            "--output", str(tmp_path / "m.pth"), "--quiet"]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        train.main(parse_args(argv))
    message = str(info.value.code)
    assert message.startswith("error: the training diverged in epoch ")
    assert "worse than guessing (1.10); lower the learning rate, e.g. --lr 1" in message
    assert not (tmp_path / "m.pth").exists()


def test_a_bad_classes_value_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_synthetic_folder(tmp_path / "images", 10)
    argv = ["training", "--images", str(tmp_path / "images"), "--annotations", str(csv), "--classes", "a,,b"]
    monkeypatch.setattr("sys.argv", argv)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        run()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: --classes 'a,,b': an empty class name; write names separated by commas\n"
    assert not (tmp_path / "runs").exists()  # a data error leaves no empty run folder


def test_a_label_missing_from_given_classes_names_them(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    csv = write_csv(tmp_path / "labels.csv", ["img0.png,shoe", "img1.png,hat"])
    with pytest.raises(
        DatasetError, match=r"line 2: unknown label 'hat'; the classes \(--classes\) are shoe, bag"
    ):
        CustomImageDataset(csv, folder, classes=["shoe", "bag"])


def test_symlinked_latest_is_skipped_for_outputs_outside_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    train.link_latest(tmp_path / "elsewhere" / "model.pth")
    assert not os.path.lexists(tmp_path / "runs" / "latest")


def test_an_output_that_cannot_be_written_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = write_synthetic_folder(tmp_path / "images", 10)
    (tmp_path / "a-file").write_text("")
    argv = ["--images", str(tmp_path / "images"), "--annotations", str(csv),
            "--output", str(tmp_path / "a-file" / "model.pth"), "--quiet"]  # fmt: skip
    monkeypatch.setattr(train, "train_one_epoch", lambda *a, **k: pytest.fail("trained anyway"))
    with pytest.raises(
        SystemExit, match=r"^error: --output .*a-file/model.pth: cannot create .*a-file \(File exists\)$"
    ):
        train.main(parse_args(argv))
