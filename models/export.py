"""The served function as one module, and its export to ONNX.

``ServingGraph`` is everything between the normalised input and the answer: the network
(batch norm folded, temperature folded), the mirror averaging, the calibrated softmax and
the out-of-distribution score. The server runs it eagerly in PyTorch, or exported to ONNX
by ``to_onnx`` and run by another runtime: one definition, so the two cannot drift apart.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from models.calibration import probabilities_and_log_partition
from models.networks import class_probabilities, logits_and_features
from models.ood import OODDetector

OPSET = 17


class ServingGraph(nn.Module):
    """N x 1 x 28 x 28 normalised images to N x classes probabilities and, with a fitted
    detector, N out-of-distribution scores."""

    def __init__(
        self, model: nn.Module, flip_average: bool, ood: OODDetector | None, temperature: float
    ) -> None:
        super().__init__()
        self.model = model  # prepared for inference: its logits come divided by the temperature
        self.flip_average = flip_average
        self.ood = ood
        self.temperature = temperature
        self.eval()  # the exporter leaves every module in the mode it found the graph in

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.ood is None:
            return (class_probabilities(self.model, x, self.flip_average),)
        logits, features = logits_and_features(self.model, x, self.flip_average)
        if logits.device.type != "cpu":  # the detector's statistics live on the CPU
            logits, features = logits.cpu(), features.cpu()
        probabilities, log_partition = probabilities_and_log_partition(logits)
        return probabilities, self.ood.score(log_partition, features, self.temperature)


def output_names(graph: ServingGraph) -> list[str]:
    return ["probabilities"] if graph.ood is None else ["probabilities", "ood_score"]


def to_onnx(graph: ServingGraph, input_size: int) -> bytes:
    """The graph as an ONNX model with a free batch dimension, on the CPU.

    TorchScript's exporter: it traces this graph in a fraction of a second, where the
    torch.export-based one takes seconds, and the export runs at every start-up.
    """
    example = torch.zeros(2, 1, input_size, input_size)
    names = output_names(graph)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(
            graph,
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to a file object too
            input_names=["input"],
            output_names=names,
            dynamic_axes={name: {0: "batch"} for name in ["input", *names]},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()
