from pathlib import Path

import pytest

from models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from tests.training.test_train import train_args
from training import calibrate, evaluate, train
from training.config import parse_args


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.conftest import write_fake_fashion_mnist

    root = tmp_path_factory.mktemp("calibrate")
    data_dir = write_fake_fashion_mnist(root / "fashion-mnist")
    output = root / "out" / "model.pth"
    train.main(parse_args(train_args(data_dir, output, "--epochs", "2", "--lr", "0.2")))
    return output, data_dir


def test_the_training_job_fits_calibration_and_the_score_on_its_validation_split(
    trained: tuple[Path, Path],
) -> None:
    output, _ = trained
    loaded = load_checkpoint(output)
    assert loaded.calibration.fitted_on == "60 validation images"
    assert loaded.ood is not None and loaded.ood.flag_rate == 0.03
    figures = loaded.metrics["calibration"]
    assert {"temperature", "val_ece", "val_ece_uncalibrated", "test_ece", "test_ece_uncalibrated"} <= set(
        figures
    )
    # (Whether it lowers the error is measured on real data: tests/models/test_shipped_model.py.)
    assert all(0 <= figures[k] <= 1 for k in ("val_ece", "test_ece")) and figures["temperature"] > 0
    assert (output.parent / "model_reliability.png").stat().st_size > 1000


def test_evaluate_reports_ece_before_and_after_and_draws_the_diagram(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output, data_dir = trained
    plot = tmp_path / "reliability.png"
    argv = [
        "--model",
        str(output),
        "--data-dir",
        str(data_dir),
        "--no-verify",
        "--cache-dir",
        str(tmp_path / "c"),
        "--plot",
        str(plot),
    ]
    figures = evaluate.main(evaluate.get_args_parser().parse_args(argv))
    printed = capsys.readouterr().out
    assert "Calibration error (ECE, 15 bins)" in printed and "Flagged as out of distribution" in printed
    assert figures["temperature"] == load_checkpoint(output).calibration.temperature
    assert 0 <= figures["ece"] <= 1 and 0 <= figures["ood_flagged"] <= 1
    assert plot.stat().st_size > 1000


def test_calibrate_refits_an_uncalibrated_checkpoint_without_retraining(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    output, data_dir = trained
    raw, _ = read_checkpoint(output)
    for key in ("calibration", "ood"):
        del raw[key]
    bare = tmp_path / "model.pth"
    save_checkpoint(raw, bare)
    assert load_checkpoint(bare).ood is None

    figures = calibrate.main(
        calibrate.get_args_parser().parse_args(["--model", str(bare), "--data-dir", str(data_dir), "--json"])
    )

    again = load_checkpoint(bare)
    original = load_checkpoint(output)
    assert again.calibration.temperature == pytest.approx(original.calibration.temperature)
    assert again.ood is not None and again.ood.threshold == pytest.approx(original.ood.threshold, rel=1e-4)
    assert again.metrics["calibration"] == figures
    # The weights are untouched.
    assert all((again.model.state_dict()[k] == v).all() for k, v in original.model.state_dict().items())
    assert (tmp_path / "model_reliability.png").is_file()


def test_calibrate_refuses_a_bare_state_dict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from models.networks import MLP

    path = tmp_path / "bare.pth"
    torch.save(MLP().state_dict(), path)
    with pytest.raises(SystemExit) as caught:
        calibrate.run(["--model", str(path)])
    assert caught.value.code == 2
    assert "no training arguments" in capsys.readouterr().err
