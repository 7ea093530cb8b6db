"""Start-up: the model is loaded and announced in one line, or the process stops with one line."""

import gc
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.lifespan import StartupError
from app.main import create_app
from app.settings import Settings
from models.checkpoint import make_checkpoint, save_checkpoint
from models.metadata import FASHION_MNIST_CLASSES, InputSpec
from models.networks import build_model
from tests.conftest import REPO


def test_start_up_logs_one_line_describing_the_model(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app"), TestClient(create_app(settings)) as client:
        version = client.get("/health").json()["model_version"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model ready")]
    assert lines == [
        f"model ready: device=cpu arch=cnn parameters=438 version={version} test_accuracy=0.1000 "
        "model=fashion-mnist"
    ]


def test_what_start_up_loaded_is_frozen_out_of_the_collector_while_serving_and_thawed_after(
    settings: Settings,
) -> None:
    gc.unfreeze()
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        # What start-up made (here: what the worker said it loaded) is frozen: the collector skips it.
        card = client.app.state.service.repository.newest().card  # type: ignore[attr-defined]
        assert gc.get_freeze_count() > 1000
        assert gc.is_tracked(card)
        assert id(card) not in {id(o) for o in gc.get_objects()}  # frozen: out of every generation
    assert gc.get_freeze_count() == 0


def bad_checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02 not a checkpoint at all")
    wrong_arch = tmp_path / "wrong-arch.pth"
    checkpoint = make_checkpoint(build_model("mlp"), "transformer", {}, FASHION_MNIST_CLASSES, InputSpec())
    save_checkpoint(checkpoint, wrong_arch)
    rgb = tmp_path / "rgb.pth"
    spec = InputSpec(height=32, width=32, channels=3)
    save_checkpoint(make_checkpoint(build_model("mlp"), "mlp", {}, FASHION_MNIST_CLASSES, spec), rgb)
    return {
        "missing": (tmp_path / "missing.pth", "missing.pth: model file not found"),
        "corrupt": (corrupt, "corrupt.pth: corrupt"),
        "folder": (tmp_path, f"{tmp_path}: is a folder, not a model file"),
        "unknown-arch": (wrong_arch, "wrong-arch.pth: unknown architecture 'transformer'"),
        "incompatible": (rgb, "rgb.pth: the model expects 3x32x32 input"),
    }


@pytest.mark.parametrize("case", ["missing", "corrupt", "folder", "unknown-arch", "incompatible"])
def test_an_unusable_model_file_stops_start_up_naming_path_and_reason(tmp_path: Path, case: str) -> None:
    path, expected = bad_checkpoints(tmp_path)[case]
    app = create_app(Settings(model_path=path, device="cpu"))
    with pytest.raises(StartupError) as caught, TestClient(app):
        pass
    message = str(caught.value)
    assert message.startswith("cannot start: ")
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


@pytest.mark.slow
def test_uvicorn_exits_non_zero_with_one_clear_line_for_a_missing_model(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.pth"
    env = {**os.environ, "FASHION_MODEL_PATH": str(missing)}
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    naming = [line for line in output.splitlines() if str(missing) in line]
    assert naming == [f"ERROR:    cannot start: {missing}: model file not found"]
