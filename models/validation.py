"""What a checkpoint must satisfy before anything serves or evaluates it.

``load_checkpoint`` runs these, so the server's pre-check, its start-up and
``training.evaluate`` all refuse the same files, each with one line naming the file and
the field. The network's size is known before a byte of it is allocated: it is first
built on PyTorch's meta device, which records shapes and allocates nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.errors import CheckpointError, first_line
from models.images import INPUT_SIZE
from models.networks import ARCHITECTURES, build_model
from models.preprocessing import standardize

# The shipped CNN has 0.2M parameters and the tutorial's MLP 0.7M; a 28x28 classifier of
# 50M (200 MB of float32) is already absurd, and nothing larger is allocated.
MAX_PARAMETERS = 50_000_000


def check_input(path: Path, height: int, width: int, channels: int, mean: Any, std: Any) -> None:
    """The input the network expects is one the service can make, and its statistics are sane."""
    if (height, width, channels) != (INPUT_SIZE, INPUT_SIZE, 1):
        raise CheckpointError(
            f"{path}: the model expects {channels}x{height}x{width} input; "
            f"this code feeds 1x{INPUT_SIZE}x{INPUT_SIZE} (grayscale)"
        )
    if len(mean) != 1 or len(std) != 1:
        raise CheckpointError(f"{path}: input.mean and input.std must hold one value each (one channel)")
    if not all(math.isfinite(v) for v in (*mean, *std)):
        raise CheckpointError(f"{path}: input.mean {list(mean)} and input.std {list(std)} must be finite")
    if not std[0] > 0:
        raise CheckpointError(f"{path}: input.std must be positive, not {std[0]}")


def check_classes(path: Path, classes: list[str]) -> None:
    if len(classes) < 2 or len(set(classes)) != len(classes) or not all(name.strip() for name in classes):
        raise CheckpointError(f"{path}: classes must be two or more distinct, non-blank names")


def check_size(path: Path, arch: str, model_args: dict[str, Any], state_dict: Any) -> None:
    """The network ``model_args`` describe is within ``MAX_PARAMETERS`` and has the shapes of
    the weights in the file; found out without allocating it."""
    if arch not in ARCHITECTURES:
        valid = ", ".join(sorted(ARCHITECTURES))
        raise CheckpointError(f"{path}: unknown architecture {arch!r}; valid: {valid}")
    try:
        with torch.device("meta"):
            skeleton = build_model(arch, **model_args)
    except Exception as exc:  # a negative size, a float where an int goes, an unknown argument
        raise CheckpointError(
            f"{path}: bad model_args for {arch!r} {model_args} ({first_line(exc)})"
        ) from None
    count = sum(p.numel() for p in skeleton.parameters())
    if count > MAX_PARAMETERS:
        detail = f"model_args {model_args} make a network of {count:,} parameters"
        raise CheckpointError(f"{path}: {detail}; at most {MAX_PARAMETERS:,}")
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: state_dict is not a mapping of names to tensors")
    for name, expected in skeleton.state_dict().items():
        given = state_dict.get(name)
        if not isinstance(given, torch.Tensor) or given.shape != expected.shape:
            shape = tuple(given.shape) if isinstance(given, torch.Tensor) else "missing"
            detail = f"{name} is {shape}, expected {tuple(expected.shape)}"
            raise CheckpointError(f"{path}: the weights do not fit arch {arch!r}: {detail}")


def probe(path: Path, model: nn.Module, classes: list[str], mean: float, std: float) -> None:
    """One forward pass on a black and a white picture: an output per class, all finite."""
    pixels = torch.stack([torch.zeros(1, INPUT_SIZE, INPUT_SIZE), torch.ones(1, INPUT_SIZE, INPUT_SIZE)])
    try:
        with torch.inference_mode():
            logits = model(standardize(pixels, (mean,), (std,)))
    except Exception as exc:
        raise CheckpointError(f"{path}: a forward pass on a probe input failed ({first_line(exc)})") from None
    if logits.ndim != 2 or logits.shape[1] != len(classes):
        outputs = logits.shape[-1] if logits.ndim else 1
        raise CheckpointError(
            f"{path}: the network gives {outputs} outputs but the checkpoint names {len(classes)} classes"
        )
    if not torch.isfinite(torch.softmax(logits.float(), dim=1)).all():
        raise CheckpointError(
            f"{path}: the network's probabilities on a probe input are not finite (NaN or infinity)"
        )
