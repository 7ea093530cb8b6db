"""What executes the served graph: eager PyTorch, or the same graph exported to ONNX and run
by ONNX Runtime.

``auto`` takes ONNX Runtime on the CPU when it is installed and its export agrees with
PyTorch, else PyTorch: a small network at small batches is mostly framework overhead, which
ONNX Runtime's fused graph does not pay. CUDA always runs PyTorch. An export is checked on a
fixed probe batch before it serves: its probabilities within ``PROBE_TOLERANCE`` of PyTorch's,
its out-of-distribution scores within the same share of their size.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

import numpy as np
import torch

from app.inference.served_model import disagreement as answers_disagree
from app.inference.served_model import onnx_session
from models.errors import CheckpointError, first_line
from models.export import ServingGraph, output_names, to_onnx

RuntimeName = Literal["auto", "torch", "onnxruntime"]

log = logging.getLogger("app.runtime")


class Runner(Protocol):
    name: str

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


class OnnxRunner:
    name = "onnxruntime"

    def __init__(self, model: bytes, outputs: list[str], threads: int) -> None:
        self.model = model  # what a worker process loads instead (app.inference.served_model)
        self.session = onnx_session(model, threads)
        self.outputs = outputs

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        pixels = batch.detach().float().contiguous().numpy()
        results = self.session.run(self.outputs, {"input": pixels})  # type: ignore[attr-defined]
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


def select_runner(
    name: RuntimeName, graph: ServingGraph, device: torch.device, probe: torch.Tensor
) -> Runner:
    """The runner ``name`` asks for, checked against eager PyTorch on ``probe`` (normalised).

    CheckpointError (one line) when an explicit choice cannot serve; ``auto`` falls back to torch.
    """
    reference = TorchRunner(graph)
    if name == "torch" or (name == "auto" and device.type != "cpu"):
        return reference
    if device.type != "cpu":
        raise CheckpointError(f"runtime onnxruntime runs on the CPU here, not {device}; use runtime torch")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if name == "auto":
            return reference
        raise CheckpointError("runtime onnxruntime is not installed (pip install onnxruntime)") from None
    try:
        runner: Runner = OnnxRunner(
            to_onnx(graph, probe.shape[-1]), output_names(graph), max(1, torch.get_num_threads())
        )
        problem = disagreement(runner, reference, probe)
    except Exception as exc:  # an exporter or runtime failure: this network cannot run there
        problem = f"the export failed ({type(exc).__name__}: {first_line(exc)})"
    if problem is None:
        return runner
    if name == "auto":
        log.warning("runtime auto: onnxruntime refused, serving with torch: %s", problem)
        return reference
    raise CheckpointError(f"runtime onnxruntime refused: {problem}; use runtime torch")
