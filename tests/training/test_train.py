import json
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint, read_checkpoint
from models.metadata import FASHION_MNIST_CLASSES
from training import evaluate, train
from training.__main__ import run
from training.config import PRESETS, parse_args

# A tiny network with a global-pooling head: it learns within a few dozen steps.
TINY = '{"widths": [4, 8], "pools_after": [0], "head_pool": 1}'
FAST = ["--model-args", TINY, "--batch-size", "16", "--val-size", "60"]


def train_args(data_dir: Path, output: Path, *extra: str) -> list[str]:
    return ["--data-dir", str(data_dir), "--no-verify", "--cache-dir", str(output.parent / "cache"),
            "--output", str(output), "--quiet", *FAST, *extra]  # fmt: skip


def test_a_short_run_writes_a_checkpoint_the_server_can_load(fake_data_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "out" / "model.pth"
    metrics = train.main(parse_args(train_args(fake_data_dir, output, "--epochs", "3", "--lr", "0.2")))

    loaded = load_checkpoint(output)
    assert loaded.arch == "cnn"
    assert loaded.classes == list(FASHION_MNIST_CLASSES)
    assert loaded.metrics["test_accuracy"] == metrics["test_accuracy"]
    assert loaded.metrics["test_count"] == 100
    assert loaded.metrics["epochs"] == 3
    assert set(loaded.metrics["per_class_accuracy"]) == set(FASHION_MNIST_CLASSES)
    assert loaded.train_args["epochs"] == 3 and loaded.train_args["arch"] == "cnn"
    assert loaded.input_spec.mean[0] == pytest.approx(0.29, abs=0.05)  # measured on the fake images
    # Trained with mirror images (--hflip 0.5), so measured, and served, averaging each
    # image with its mirror.
    assert loaded.flip_average is True and loaded.train_args["flip_average"] is True
    # Well above the 0.1 of chance after 45 steps: the pipeline really learns.
    assert metrics["test_accuracy"] > 0.3
    raw, _ = read_checkpoint(output)
    assert "training_state" not in raw  # the shipped file carries no optimizer state
    report = json.loads((tmp_path / "out" / "model_metrics.json").read_text())
    assert len(report["history"]) == 3 and len(report["confusion_matrix"]) == 10
    assert (tmp_path / "out" / "model_confusion.png").stat().st_size > 1000
    assert (tmp_path / "out" / "model_curves.png").stat().st_size > 1000
    assert not (tmp_path / "out" / "model.resume.pth").exists()


def state_of(path: Path) -> dict[str, torch.Tensor]:
    raw, _ = read_checkpoint(path)
    return raw["state_dict"]


def test_the_same_seed_gives_identical_weights(fake_data_dir: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "model.pth", tmp_path / "b" / "model.pth"
    train.main(parse_args(train_args(fake_data_dir, a, "--epochs", "2")))
    train.main(parse_args(train_args(fake_data_dir, b, "--epochs", "2")))
    for key, value in state_of(a).items():
        assert torch.equal(value, state_of(b)[key]), key


def test_ctrl_c_then_resume_reaches_the_uninterrupted_result(
    fake_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    straight = tmp_path / "straight" / "model.pth"
    train.main(parse_args(train_args(fake_data_dir, straight, "--epochs", "3")))

    interrupted = tmp_path / "interrupted" / "model.pth"
    real_epoch = train.train_one_epoch

    def ctrl_c_in_epoch_two(*args, **kwargs):  # type: ignore[no-untyped-def]
        if args[9] == 1:  # the epoch index
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", ctrl_c_in_epoch_two)
    with pytest.raises(SystemExit) as exit_info:
        train.main(parse_args(train_args(fake_data_dir, interrupted, "--epochs", "3")))
    assert exit_info.value.code == 130
    resume_file = interrupted.with_name("model.resume.pth")
    assert f"interrupted in epoch 2: continue with python -m training --resume {resume_file}" in (
        capsys.readouterr().err
    )
    assert not interrupted.exists()
    monkeypatch.setattr(train, "train_one_epoch", real_epoch)

    started_at: list[int] = []
    monkeypatch.setattr(
        train, "train_one_epoch", lambda *a, **k: started_at.append(a[9]) or real_epoch(*a, **k)
    )
    metrics = train.main(parse_args(["--resume", str(resume_file), "--output", str(interrupted), "--quiet"]))

    assert started_at == [1, 2]  # continued at the epoch that was cut short
    assert metrics["epochs"] == 3
    for key, value in state_of(straight).items():
        assert torch.equal(value, state_of(interrupted)[key]), key


def test_resume_refuses_a_finished_checkpoint(fake_data_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "model.pth"
    train.main(parse_args(train_args(fake_data_dir, output, "--epochs", "1")))
    with pytest.raises(SystemExit, match="not a resumable checkpoint"):
        train.main(parse_args(["--resume", str(output)]))


def test_quickstart_preset_is_the_tutorial_and_flags_still_win() -> None:
    args = parse_args(["--preset", "quickstart"])
    assert (args.arch, args.opt, args.lr, args.batch_size, args.epochs) == ("mlp", "sgd", 1e-3, 64, 5)
    assert args.normalize is False and args.random_shift == 0 and args.val_size == 0
    assert parse_args(["--preset", "quickstart", "--epochs", "2"]).epochs == 2
    assert set(PRESETS["quickstart"]) <= set(vars(args))


def test_quickstart_trains_the_mlp_without_normalisation(fake_data_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "mlp.pth"
    argv = ["--preset", "quickstart", "--epochs", "1", "--data-dir", str(fake_data_dir), "--no-verify",
            "--cache-dir", str(tmp_path / "cache"), "--output", str(output), "--quiet"]  # fmt: skip
    metrics = train.main(parse_args(argv))
    loaded = load_checkpoint(output)
    assert loaded.arch == "mlp"
    assert (loaded.input_spec.mean, loaded.input_spec.std) == ((0.0,), (1.0,))
    assert loaded.flip_average is False  # no mirror images in training, none at test time
    assert metrics["val_accuracy"] is None and metrics["test_split"] == "test"


def test_dry_run_on_custom_images(tmp_path: Path) -> None:
    from tests.training.test_data import make_image_folder, write_csv

    folder = make_image_folder(tmp_path / "images", count=6)
    csv = write_csv(tmp_path / "labels.csv", [f"img{i}.png,{i % 2}" for i in range(6)])
    output = tmp_path / "custom.pth"
    argv = ["--images", str(folder), "--annotations", str(csv), "--classes", "shoe,hat", "--val-size", "2",
            "--dry-run", "--output", str(output), "--quiet", *FAST[:2]]  # fmt: skip
    metrics = train.main(parse_args(argv))
    assert metrics["test_split"] == "validation"
    assert load_checkpoint(output).classes == ["shoe", "hat"]


def test_pictures_that_are_all_alike_train_without_dividing_by_zero(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from tests.training.test_data import write_csv

    folder = tmp_path / "images"
    folder.mkdir()
    pixels = np.full((40, 30), 255, dtype=np.uint8)
    pixels[10:30, 5:25] = 0  # every picture the same square: no spread once preprocessed
    for i in range(6):
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    csv = write_csv(tmp_path / "labels.csv", [f"img{i}.png,{i % 2}" for i in range(6)])
    argv = ["--images", str(folder), "--annotations", str(csv), "--classes", "shoe,hat", "--val-size", "2",
            "--dry-run", "--output", str(tmp_path / "same.pth"), "--quiet", *FAST[:2]]  # fmt: skip
    train.main(parse_args(argv))
    assert load_checkpoint(tmp_path / "same.pth").input_spec.std == (1.0,)


def test_data_errors_end_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["training", "--data-dir", str(tmp_path / "nowhere"), "--quiet"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        run()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "train-images-idx3-ubyte.gz: not found" in err
    assert len(err.splitlines()) == 1


def test_the_recorded_test_figures_are_what_the_served_model_scores(
    fake_data_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out" / "model.pth"
    metrics = train.main(parse_args(train_args(fake_data_dir, output, "--epochs", "2", "--lr", "0.2")))
    argv = ["--model", str(output), "--data-dir", str(fake_data_dir), "--no-verify",
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    served = evaluate.main(evaluate.get_args_parser().parse_args(argv))  # flip-averaged, as recorded
    assert served["accuracy"] == metrics["test_accuracy"]
    assert served["loss"] == pytest.approx(metrics["test_loss"], rel=1e-4)
