"""What an inference worker runs: a ``ServedModel``, numpy pixels in, numpy answers out.

    ExportedModel   the served graph exported to ONNX, in OpenVINO or ONNX Runtime: a worker
                    that runs it never imports torch (the export is made and checked
                    elsewhere: ``app.predictor.export_for_worker``, in a process of its own)
    PredictorModel  a loaded ``app.predictor.Predictor``, whichever runtime it picked

The worker batches uint8 pixels as uploads decode to, or float32 in 0-1 where a client
sent those; the model normalises them with its checkpoint's statistics.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from app.card import ModelCard
from models.errors import CheckpointError

PROBE_TOLERANCE = 1e-5

# The runtimes that run the ONNX export, fastest first: what ``auto`` tries, in order.
# Measured on one thread, the served graph at batch 32: OpenVINO about 0.8x ONNX Runtime's
# time per image (docs/BENCHMARKS.md).
ExportRuntime = Literal["openvino", "onnxruntime"]
EXPORT_RUNTIMES: tuple[ExportRuntime, ...] = ("openvino", "onnxruntime")

# N x 1 x 28 x 28 normalised float32 images to the graph's outputs, in ``outputs``' order.
Session = Callable[[np.ndarray], list[np.ndarray]]


class ServedModel(Protocol):
    card: ModelCard

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """N x 1 x 28 x 28 pixels (uint8, or float32 in 0-1) to N x classes calibrated
        probabilities and N out-of-distribution scores (None without a fitted score)."""
        ...


@dataclass(frozen=True)
class Exported:
    """A checkpoint's served graph as ONNX, checked against torch where it was made, and
    what a worker checks its own session against before it serves."""

    card: ModelCard
    runtime: ExportRuntime  # what runs it
    onnx: bytes
    outputs: list[str]
    probe: np.ndarray  # N x 1 x 28 x 28 uint8 pictures
    probabilities: np.ndarray  # torch's answers on them
    scores: np.ndarray | None


def disagreement(
    probabilities: np.ndarray,
    scores: np.ndarray | None,
    expected: np.ndarray,
    expected_scores: np.ndarray | None,
) -> str | None:
    """Where a runtime's answers on the probe depart from torch's beyond the tolerance, or None."""
    gap = float(np.abs(probabilities - expected).max())
    if not gap <= PROBE_TOLERANCE:  # NaN fails too
        return f"probabilities differ from torch's by up to {gap:.1e} (limit {PROBE_TOLERANCE:.0e})"
    if expected_scores is not None:
        if scores is None:
            return "it gives no out-of-distribution score"
        relative = float((np.abs(scores - expected_scores) / np.maximum(np.abs(expected_scores), 1)).max())
        if not relative <= PROBE_TOLERANCE:
            return f"out-of-distribution scores differ from torch's by up to {relative:.1e} of their size"
    return None


def import_runtime(name: ExportRuntime) -> Any:
    """The runtime's module; ImportError when it is not installed.

    OpenVINO without its model-conversion tools, which the server never uses (it reads the
    ONNX export): importing them sends a telemetry event and writes a client id under $HOME.
    """
    if name == "openvino" and "openvino" not in sys.modules:
        sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]  # its import fails, and is skipped
        try:
            return importlib.import_module(name)
        finally:
            del sys.modules["openvino.tools.ovc"]
    return importlib.import_module(name)


def onnx_session(model: bytes, threads: int) -> object:
    """An ONNX Runtime session on the CPU with ``threads`` threads for each pass."""
    onnxruntime = import_runtime("onnxruntime")

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # Threads that spin between passes take the core the event loop needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: it warns about every unused initializer
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def openvino_compiled(model: bytes, threads: int) -> object:
    """The ONNX model compiled by OpenVINO for the CPU, ``threads`` threads for each pass."""
    openvino = import_runtime("openvino")

    core = openvino.Core()
    config = {
        # Exactly float32. On a CPU with AMX or AVX-512 BF16, OpenVINO's default is bfloat16:
        # measured here, answers up to 3e-2 from torch's and 94.07% test accuracy against 94.12%.
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        # Its threads pinned to cores would contend with the event loop's process for them.
        "ENABLE_CPU_PINNING": False,
    }
    return core.compile_model(core.read_model(model), "CPU", config)


def export_session(runtime: ExportRuntime, model: bytes, outputs: list[str], threads: int) -> Session:
    """A call running the ONNX ``model`` in ``runtime`` on the CPU, ``threads`` threads a pass."""
    if runtime == "onnxruntime":
        session = onnx_session(model, threads)
        return lambda x: session.run(outputs, {"input": x})  # type: ignore[attr-defined]
    openvino = import_runtime("openvino")
    compiled = openvino_compiled(model, threads)
    request = compiled.create_infer_request()  # type: ignore[attr-defined]
    ports = [next(i for i, port in enumerate(compiled.outputs) if name in port.names) for name in outputs]  # type: ignore[attr-defined]
    lock = threading.Lock()  # one request, which is not safe to share between threads

    # The request's own tensors rather than ``request.infer(inputs)``, whose wrapping of the
    # inputs and outputs was measured here at 0.06 ms a call, a fifth of the model at batch 1.
    def run(x: np.ndarray) -> list[np.ndarray]:
        with lock:
            request.set_input_tensor(0, openvino.Tensor(x, shared_memory=True))
            request.infer()
            # Copied: the request writes its next answers where these are.
            return [request.get_output_tensor(i).data.copy() for i in ports]

    return run


def unit_pixels(pixels: np.ndarray) -> np.ndarray:
    """Pixels as float32 in 0-1: uint8 divided by 255 (torchvision's ToTensor), floats as they are."""
    if pixels.dtype == np.uint8:
        return np.divide(pixels, np.float32(255.0), dtype=np.float32)
    return pixels.astype(np.float32, copy=True)


class ExportedModel:
    """An exported graph in the runtime it was checked with; CheckpointError (one line)
    unless it gives torch's answers on the export's probe."""

    def __init__(self, exported: Exported, threads: int) -> None:
        self.card = exported.card
        self.run = export_session(
            exported.runtime, exported.onnx, exported.outputs, threads or os.cpu_count() or 1
        )
        spec = exported.card.input
        self.mean, self.std = np.float32(spec.mean[0]), np.float32(spec.std[0])
        problem = disagreement(*self.predict(exported.probe), exported.probabilities, exported.scores)
        if problem is not None:
            raise CheckpointError(f"runtime {exported.runtime} refused: {problem}; use runtime torch")

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        x = unit_pixels(pixels)
        x -= self.mean
        x /= self.std
        results = self.run(x)
        return np.asarray(results[0]), np.asarray(results[1]) if len(results) > 1 else None
