"""Network definitions, the checkpoint format and the shared image preprocessing."""

from models.checkpoint import (
    FASHION_MNIST_CLASSES,
    CheckpointError,
    InputSpec,
    LoadedModel,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from models.networks import ARCHITECTURES, DEFAULT_ARCH, build_model, count_parameters

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_ARCH",
    "FASHION_MNIST_CLASSES",
    "CheckpointError",
    "InputSpec",
    "LoadedModel",
    "build_model",
    "count_parameters",
    "load_checkpoint",
    "make_checkpoint",
    "save_checkpoint",
]
