import json
import sys
from pathlib import Path

import pytest

from models.checkpoint import FASHION_MNIST_CLASSES
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
