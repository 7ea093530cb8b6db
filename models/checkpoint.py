"""The checkpoint format: one self-contained file the server can use with nothing else.

A checkpoint is a plain dict (loadable with ``weights_only=True``)::

    format, format_version      what this file is, and which version of this layout
    arch, model_args            build_model(arch, **model_args) rebuilds the network
    state_dict                  the weights
    classes                     class names in index order
    input                       {"height", "width", "channels", "mean", "std"}
    inference (optional)        {"flip_average": bool}: how to use the network; absent = plain
    calibration (optional)      {"method": "temperature", "temperature", "fitted_on"}; absent = T 1
    ood (optional)              the out-of-distribution score's parameters and threshold
                                (models.ood); absent = no score
    metrics                     test/validation figures recorded by training
    train_args                  the training command's arguments
    torch_version, created_at   provenance
    training_state (optional)   optimizer, scheduler, epoch... for --resume only
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.calibration import Calibration
from models.errors import CheckpointError, first_line
from models.metadata import (
    FASHION_MNIST_CLASSES,
    TUTORIAL_INPUT,
    InputSpec,
)
from models.networks import build_model, count_parameters, has_features, logits_and_features
from models.ood import OODDetector
from models.validation import check_classes, check_input, check_size, probe

logger = logging.getLogger(__name__)

FORMAT_NAME = "fashion-mnist-classifier"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A network rebuilt from a checkpoint, in eval mode, with the file's metadata."""

    model: nn.Module
    arch: str
    model_args: dict[str, Any]
    classes: list[str]
    input_spec: InputSpec
    path: Path
    sha256: str
    metrics: dict[str, Any] = field(default_factory=dict)
    train_args: dict[str, Any] = field(default_factory=dict)
    torch_version: str | None = None
    created_at: str | None = None
    format_version: int | None = None  # None for a bare state dict
    # Average each image's probabilities with its mirror image's: the recorded metrics
    # were measured that way, so the server predicts that way unless told otherwise.
    flip_average: bool = False
    calibration: Calibration = field(default_factory=Calibration)
    ood: OODDetector | None = None

    @property
    def version(self) -> str:
        """The model version: the first 12 hex digits of the file's SHA-256."""
        return self.sha256[:12]

    @property
    def num_parameters(self) -> int:
        return count_parameters(self.model)


def make_checkpoint(
    model: nn.Module,
    arch: str,
    model_args: dict[str, Any],
    classes: list[str] | tuple[str, ...],
    input_spec: InputSpec,
    metrics: dict[str, Any] | None = None,
    train_args: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
    flip_average: bool = False,
    calibration: Calibration | None = None,
    ood: OODDetector | None = None,
) -> dict[str, Any]:
    """Assemble a checkpoint dict in the current format."""
    checkpoint: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "model_args": dict(model_args),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "input": input_spec.to_dict(),
        "inference": {"flip_average": bool(flip_average)},
        "metrics": metrics or {},
        "train_args": train_args or {},
        "torch_version": str(torch.__version__),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if calibration is not None:
        checkpoint["calibration"] = calibration.to_dict()
    if ood is not None:
        checkpoint["ood"] = ood.to_dict()
    if training_state is not None:
        checkpoint["training_state"] = training_state
    return checkpoint


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it the permissions any new file gets,
        # or a server running as another user (a container's non-root user) cannot read it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """Load the raw object with ``weights_only=True``; returns it and the file's SHA-256."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: model file not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a model file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file ({exc.strerror})") from None
    if not data:
        raise CheckpointError(f"{path}: the file is empty")
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        # torch warns about a pickle protocol it did not write: noise beside our one-line verdict.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Only a forbidden global means "this file would run code"; other unpickler
        # errors are plain corruption.
        if "unsupported global" in str(exc).lower():
            raise CheckpointError(
                f"{path}: refused: the file holds objects other than weights and plain data "
                "(it may run code when unpickled); only checkpoints written by our training "
                "job or torch.save(model.state_dict()) are accepted"
            ) from None
        # torch's message here is advice about weights_only, not about the file.
        raise CheckpointError(f"{path}: corrupt checkpoint (unreadable pickle data)") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt or not a PyTorch checkpoint ({first_line(exc)})") from None
    return obj, sha256


def _is_bare_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _build(path: Path, arch: str, model_args: dict[str, Any], state_dict: Any) -> nn.Module:
    try:
        model = build_model(arch, **model_args)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except TypeError as exc:
        raise CheckpointError(f"{path}: bad model_args for {arch!r} ({exc})") from None
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: the weights do not fit arch {arch!r} ({first_line(exc)})") from None
    return model.eval()


def load_checkpoint(path: str | os.PathLike[str]) -> LoadedModel:
    """Rebuild the network from a checkpoint file alone, on the CPU, in eval mode."""
    path = Path(path)
    obj, sha256 = read_checkpoint(path)
    if _is_bare_state_dict(obj):
        logger.warning(
            "%s is a bare state dict: loading it as the tutorial's 'mlp' with the ten "
            "Fashion-MNIST classes and the tutorial's preprocessing (ToTensor, no "
            "normalisation)",
            path,
        )
        model = _build(path, "mlp", {}, obj)
        return LoadedModel(
            model=model,
            arch="mlp",
            model_args={},
            classes=list(FASHION_MNIST_CLASSES),
            input_spec=TUTORIAL_INPUT,
            path=path,
            sha256=sha256,
        )
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a {FORMAT_NAME} checkpoint or a bare state dict")
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is not supported "
            f"(this code reads version {FORMAT_VERSION})"
        )
    try:
        arch = str(obj["arch"])
        model_args = dict(obj.get("model_args") or {})
        classes = [str(c) for c in obj["classes"]]
        input_spec = InputSpec.from_dict(obj["input"])
        state_dict = obj["state_dict"]
        inference = obj.get("inference") or {}
        flip_average = inference.get("flip_average", False)
        if not isinstance(flip_average, bool):
            raise ValueError(f"inference.flip_average is {flip_average!r}, not true or false")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: checkpoint is missing or has a bad field ({exc})") from None
    spec = input_spec
    check_input(path, spec.height, spec.width, spec.channels, spec.mean, spec.std)
    check_classes(path, classes)
    check_size(path, arch, model_args, state_dict)
    model = _build(path, arch, model_args, state_dict)
    probe(path, model, classes, spec.mean[0], spec.std[0])
    calibration, ood = _read_scoring(path, obj, model)
    return LoadedModel(
        model=model,
        arch=arch,
        model_args=model_args,
        classes=classes,
        input_spec=input_spec,
        path=path,
        sha256=sha256,
        metrics=dict(obj.get("metrics") or {}),
        train_args=dict(obj.get("train_args") or {}),
        torch_version=obj.get("torch_version"),
        created_at=obj.get("created_at"),
        format_version=version,
        flip_average=flip_average,
        calibration=calibration,
        ood=ood,
    )


def _read_scoring(
    path: Path, obj: dict[str, Any], model: nn.Module
) -> tuple[Calibration, OODDetector | None]:
    """The checkpoint's calibration and out-of-distribution score, checked against the network."""
    try:
        calibration = Calibration.from_dict(obj["calibration"]) if "calibration" in obj else Calibration()
        if "ood" not in obj:
            return calibration, None
        if not has_features(model):
            raise ValueError(f"ood: the {type(model).__name__} network has no features to score")
        with torch.no_grad():
            _, features = logits_and_features(model, torch.zeros(1, 1, 28, 28))
        return calibration, OODDetector.from_dict(obj["ood"], features.shape[1])
    except ValueError as exc:
        raise CheckpointError(f"{path}: {first_line(exc)}") from None
