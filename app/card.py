"""What a served model version is, without its weights: the ``ModelCard``.

The inference worker makes it from the checkpoint it loaded and sends it when it is ready;
the server process shows it (``/model``, ``/classes``, the V2 metadata, the metrics' labels)
and never loads the model itself, nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.metadata import InputSpec


@dataclass(frozen=True)
class OODCard:
    """The out-of-distribution score a checkpoint fitted, and the threshold served."""

    method: str
    threshold: float
    validation_flag_rate: float  # the share of validation images the checkpoint's threshold flags


@dataclass(frozen=True)
class ModelCard:
    """A loaded checkpoint's metadata, and how it is served (device, runtime, options)."""

    version: str  # the first 12 hex digits of the file's SHA-256
    sha256: str
    arch: str
    model_args: dict[str, Any]
    num_parameters: int
    classes: tuple[str, ...]
    input: InputSpec
    metrics: dict[str, Any]
    train_args: dict[str, Any]
    created_at: str | None
    format_version: int | None
    flip_average: bool
    temperature: float
    ood: OODCard | None  # None: the checkpoint has no fitted score
    device: str
    runtime: str  # what runs the network: torch, openvino or onnxruntime

    @property
    def test_accuracy(self) -> float | None:
        accuracy = self.metrics.get("test_accuracy")
        return accuracy if isinstance(accuracy, int | float) else None
