"""The runtime that executes the served graph: OpenVINO and ONNX Runtime agree with PyTorch,
or are refused."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.inference.served_model import PROBE_TOLERANCE, import_runtime, openvino_compiled
from app.main import create_app
from app.predictor import Predictor
from app.runtime import ExportedRunner, probe_batch
from app.settings import Settings, SettingsError, load_settings
from models.errors import CheckpointError
from tests.app.conftest import SHIPPED_MODEL
from tests.app.images import png_bytes

EXPORTS = ["openvino", "onnxruntime"]


def random_pixels(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("runtime", EXPORTS)
@pytest.mark.parametrize("n", [1, 5, 33])
def test_an_export_gives_torchs_probabilities_and_scores_at_any_batch_size(runtime: str, n: int) -> None:
    reference = Predictor.load(SHIPPED_MODEL, device="cpu", runtime="torch")
    exported = Predictor.load(SHIPPED_MODEL, device="cpu", runtime=runtime)  # type: ignore[arg-type]
    assert (reference.runtime, exported.runtime) == ("torch", runtime)
    assert exported.flip_average and exported.ood is not None  # the whole graph is exported
    batch = random_pixels(n, seed=n)
    probabilities, scores = exported.predict_scored(batch)
    expected, expected_scores = reference.predict_scored(batch)
    assert probabilities.shape == (n, 10) and probabilities.dtype == torch.float32
    assert torch.allclose(probabilities, expected, rtol=0, atol=PROBE_TOLERANCE)
    assert scores is not None and expected_scores is not None
    assert torch.allclose(scores, expected_scores, rtol=PROBE_TOLERANCE, atol=PROBE_TOLERANCE)


@pytest.mark.parametrize("runtime", EXPORTS)
def test_an_export_serves_a_checkpoint_without_a_score_and_without_mirror_averaging(
    tiny_checkpoint: Path, runtime: str
) -> None:
    for flip in (False, True):
        reference = Predictor.load(tiny_checkpoint, device="cpu", flip_average=flip, runtime="torch")
        exported = Predictor.load(tiny_checkpoint, device="cpu", flip_average=flip, runtime=runtime)  # type: ignore[arg-type]
        batch = random_pixels(4)
        probabilities, scores = exported.predict_scored(batch)
        assert scores is None and reference.ood is None
        assert torch.allclose(probabilities, reference.predict(batch), rtol=0, atol=PROBE_TOLERANCE)


def test_openvino_computes_in_float32_on_its_own_threads_unpinned() -> None:
    openvino = import_runtime("openvino")
    exported = Predictor.load(SHIPPED_MODEL, device="cpu", runtime="openvino")
    assert isinstance(exported.runner, ExportedRunner)
    # Where the CPU has bfloat16 units (AMX, AVX-512 BF16) OpenVINO's default is bfloat16,
    # whose answers are up to 3e-2 from torch's: the probe check would refuse it.
    compiled = openvino_compiled(exported.runner.model, 1)
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32  # type: ignore[attr-defined]
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1  # type: ignore[attr-defined]
    assert compiled.get_property("ENABLE_CPU_PINNING") is False  # type: ignore[attr-defined]


def test_serving_with_openvino_sends_no_telemetry_and_writes_nothing_home(tmp_path: Path) -> None:
    # A fresh interpreter: this one may have imported OpenVINO already.
    home = tmp_path / "home"
    home.mkdir()
    script = (
        "import sys; from app.predictor import Predictor; "
        f"p = Predictor.load({str(SHIPPED_MODEL)!r}, device='cpu', runtime='auto'); "
        "print(p.runtime, sorted(m for m in sys.modules if 'telemetry' in m or 'ovc' in m))"
    )
    env = {**os.environ, "HOME": str(home)}
    env.pop("CI", None)  # OpenVINO's telemetry stays quiet in CI
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # Importing OpenVINO's conversion tools would send an event and write ~/intel/openvino_ga_cid.
    assert done.stdout.split() == ["openvino", "[]"]
    assert list(home.rglob("*")) == []


def test_auto_takes_openvino_on_the_cpu_else_onnxruntime_else_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Predictor.load(SHIPPED_MODEL, device="cpu", runtime="auto").runtime == "openvino"
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    assert Predictor.load(SHIPPED_MODEL, device="cpu", runtime="auto").runtime == "onnxruntime"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert Predictor.load(SHIPPED_MODEL, device="cpu", runtime="auto").runtime == "torch"


@pytest.mark.parametrize("runtime", EXPORTS)
def test_an_export_that_disagrees_is_refused_in_one_line_or_auto_falls_back_to_torch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, runtime: str
) -> None:
    honest = ExportedRunner.__call__

    def off_by_a_little(
        self: ExportedRunner, batch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        probabilities, scores = honest(self, batch)
        return probabilities + 1e-4, scores

    monkeypatch.setattr(ExportedRunner, "__call__", off_by_a_little)
    with pytest.raises(CheckpointError) as refused:
        Predictor.load(SHIPPED_MODEL, device="cpu", runtime=runtime)  # type: ignore[arg-type]
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"runtime {runtime} refused: probabilities differ from torch's")
    assert "by up to 1.0e-04 (limit 1e-05); use runtime torch" in message
    with caplog.at_level(logging.WARNING, logger="app.runtime"):
        assert Predictor.load(SHIPPED_MODEL, device="cpu", runtime="auto").runtime == "torch"
    assert "openvino refused" in caplog.text and "onnxruntime refused" in caplog.text
    assert "serving with torch" in caplog.text


def test_auto_passes_over_an_export_runtime_that_disagrees_to_the_next(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    honest = ExportedRunner.__call__

    def openvino_off(self: ExportedRunner, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        probabilities, scores = honest(self, batch)
        return (probabilities + 1e-3 if self.name == "openvino" else probabilities), scores

    monkeypatch.setattr(ExportedRunner, "__call__", openvino_off)
    with caplog.at_level(logging.WARNING, logger="app.runtime"):
        assert Predictor.load(SHIPPED_MODEL, device="cpu", runtime="auto").runtime == "onnxruntime"
    assert "runtime auto: openvino refused: probabilities differ" in caplog.text


def test_scores_that_disagree_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    honest = ExportedRunner.__call__

    def shifted(self: ExportedRunner, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        probabilities, scores = honest(self, batch)
        assert scores is not None
        return probabilities, scores * 1.001

    monkeypatch.setattr(ExportedRunner, "__call__", shifted)
    for runtime in EXPORTS:
        with pytest.raises(
            CheckpointError, match=f"runtime {runtime} refused: out-of-distribution scores differ"
        ):
            Predictor.load(SHIPPED_MODEL, device="cpu", runtime=runtime)  # type: ignore[arg-type]


@pytest.mark.parametrize("runtime", EXPORTS)
def test_a_runtime_not_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, runtime: str
) -> None:
    monkeypatch.setitem(sys.modules, runtime, None)  # import raises ImportError
    with pytest.raises(
        CheckpointError, match=rf"runtime {runtime} is not installed \(pip install {runtime}\)"
    ):
        Predictor.load(SHIPPED_MODEL, device="cpu", runtime=runtime)  # type: ignore[arg-type]


def test_the_probe_batch_is_fixed_and_covers_blank_saturated_shapes_and_noise() -> None:
    probe = probe_batch(28)
    assert torch.equal(probe, probe_batch(28))
    assert probe.dtype == torch.uint8 and probe.shape == (9, 1, 28, 28)
    assert probe[0].max() == 0 and probe[1].min() == 255
    assert len({tuple(image.flatten().tolist()) for image in probe}) == 9


def test_the_worker_runs_the_setting_and_model_reports_it(tiny_checkpoint: Path) -> None:
    for runtime in ("torch", "openvino", "onnxruntime"):
        settings = Settings(model_path=tiny_checkpoint, device="cpu", runtime=runtime)  # type: ignore[arg-type]
        app = create_app(settings)
        with TestClient(app) as client:
            assert client.get("/model").json()["runtime"] == runtime
            served = app.state.service.repository.newest()
            assert served.predictor is None  # the server process holds no model
            config = served.engine.supervisor.host.config
            # An export: the graph exported at start-up, which the worker runs without torch.
            assert (config.runtime, config.exported is not None) == (runtime, runtime != "torch")
            assert config.exported is None or config.exported.runtime == runtime


def test_auto_serves_with_torch_where_the_export_is_refused(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The export runs in a process of its own; refused there, the worker loads the file with torch.
    monkeypatch.setattr("app.repository.start.in_fresh_process", lambda function, config: None)
    settings = Settings(model_path=tiny_checkpoint, device="cpu", runtime="auto")
    with TestClient(create_app(settings)) as client:
        assert client.get("/model").json()["runtime"] == "torch"
        assert client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")}).status_code == 200


def test_an_unknown_runtime_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASHION_RUNTIME", "tensorrt")
    with pytest.raises(SettingsError, match="runtime"):
        load_settings()
