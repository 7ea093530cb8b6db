"""What executes the served graph: eager PyTorch, or the same graph exported to ONNX and run
by OpenVINO or ONNX Runtime.

``auto`` takes, on the CPU, the first of OpenVINO and ONNX Runtime (the faster first) that is
installed and whose run of the export agrees with PyTorch, else PyTorch: a small network at
small batches is mostly framework overhead, which a fused graph does not pay. CUDA always
runs PyTorch. An export is checked on a
fixed probe batch before it serves: its probabilities within ``PROBE_TOLERANCE`` of PyTorch's,
its out-of-distribution scores within the same share of their size.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

import numpy as np
import torch

from app.inference.served_model import EXPORT_RUNTIMES, ExportRuntime, export_session, import_runtime
from app.inference.served_model import disagreement as answers_disagree
from models.errors import CheckpointError, first_line
from models.export import ServingGraph, output_names, to_onnx

RuntimeName = Literal["auto", "torch", "openvino", "onnxruntime"]

log = logging.getLogger("app.runtime")


class Runner(Protocol):
    @property
    def name(self) -> str:
        """What runs the network: torch, openvino or onnxruntime."""
        ...

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """N x 1 x H x W normalised images to N x classes probabilities and N scores (or None), on the CPU."""
        ...


class TorchRunner:
    name = "torch"

    def __init__(self, graph: ServingGraph) -> None:
        self.graph = graph

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        outputs = self.graph(batch)
        probabilities = outputs[0].cpu()
        return probabilities, outputs[1] if len(outputs) > 1 else None


class ExportedRunner:
    """The served graph's ONNX export, run by ``name`` (OpenVINO or ONNX Runtime) on the CPU."""

    def __init__(self, name: ExportRuntime, model: bytes, outputs: list[str], threads: int) -> None:
        self.name = name
        self.model = model  # what a worker process loads instead (app.inference.served_model)
        self.outputs = outputs
        self.run = export_session(name, model, outputs, threads)

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        results = self.run(batch.detach().float().contiguous().numpy())
        probabilities = torch.from_numpy(np.asarray(results[0]))
        return probabilities, torch.from_numpy(np.asarray(results[1])) if len(results) > 1 else None


def probe_batch(input_size: int) -> torch.Tensor:
    """Fixed uint8 pictures that reach every part of the graph: blank, saturated, noise, and
    smooth shapes of several sizes, as garments are."""
    generator = torch.Generator().manual_seed(0)
    side = torch.arange(input_size, dtype=torch.float32) - (input_size - 1) / 2
    radius = (side[:, None] ** 2 + (side[None, :] * 0.6) ** 2).sqrt()
    shapes = [(radius < r).float() * v for r, v in ((6, 200), (9, 255), (12, 140), (13, 90))]
    noise = torch.randint(0, 256, (3, input_size, input_size), generator=generator).float()
    pictures = [torch.zeros(input_size, input_size), torch.full((input_size, input_size), 255.0)]
    pictures += shapes + list(noise)
    return torch.stack(pictures).round().to(torch.uint8).unsqueeze(1)


def disagreement(runner: Runner, reference: Runner, probe: torch.Tensor) -> str | None:
    """Where ``runner`` departs from ``reference`` on ``probe`` beyond the tolerance, or None."""
    probabilities, scores = runner(probe)
    expected, expected_scores = reference(probe)
    return answers_disagree(
        probabilities.numpy(),
        None if scores is None else scores.numpy(),
        expected.numpy(),
        None if expected_scores is None else expected_scores.numpy(),
    )


def installed(runtime: ExportRuntime) -> bool:
    try:
        import_runtime(runtime)
    except ImportError:
        return False
    return True


def select_runner(
    name: RuntimeName, graph: ServingGraph, device: torch.device, probe: torch.Tensor
) -> Runner:
    """The runner ``name`` asks for, checked against eager PyTorch on ``probe`` (normalised).

    CheckpointError (one line) when an explicit choice cannot serve; ``auto`` tries each
    runtime of the export in turn, and falls back to torch.
    """
    reference = TorchRunner(graph)
    if name == "torch" or (name == "auto" and device.type != "cpu"):
        return reference
    if device.type != "cpu":
        raise CheckpointError(f"runtime {name} runs on the CPU here, not {device}; use runtime torch")
    onnx: bytes | None = None
    for runtime in EXPORT_RUNTIMES if name == "auto" else (name,):
        if not installed(runtime):
            if name == "auto":
                continue
            raise CheckpointError(f"runtime {runtime} is not installed (pip install {runtime})")
        try:
            onnx = onnx or to_onnx(graph, probe.shape[-1])
            runner: Runner = ExportedRunner(
                runtime, onnx, output_names(graph), max(1, torch.get_num_threads())
            )
            problem = disagreement(runner, reference, probe)
        except Exception as exc:  # an exporter or runtime failure: this network cannot run there
            problem = f"the export failed ({type(exc).__name__}: {first_line(exc)})"
        if problem is None:
            return runner
        if name != "auto":
            raise CheckpointError(f"runtime {runtime} refused: {problem}; use runtime torch")
        log.warning("runtime auto: %s refused: %s", runtime, problem)
    if name == "auto":
        log.warning("runtime auto: serving with torch")
    return reference
