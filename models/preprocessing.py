"""Pictures to tensors: the normalisation shared by training and serving.

Both go through :func:`normalize`, so a picture seen by the server becomes exactly the
tensor the network saw in training and evaluation. Decoding an upload to a picture is
``models.images``, which needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models.images import InvertMode, Steps, model_image


@dataclass(frozen=True)
class Preprocessed:
    """A network input and what was done to produce it."""

    tensor: torch.Tensor  # float32, 1 x 28 x 28, normalised
    steps: Steps  # original_size: of the picture given (see preprocess)


def pixels_to_tensor(image: Image.Image) -> torch.Tensor:
    """A 28x28 L image as a uint8 tensor of shape 28 x 28."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))


def normalize(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 pixels (any leading shape, channel dim of 1 or none) to normalised float32.

    The one place the scaling happens, for training batches and served images alike.
    """
    return standardize(unit_scale(pixels), mean, std)


def unit_scale(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (0-255) as float32 in 0-1, torchvision's ToTensor scale."""
    return pixels.to(torch.float32).div_(255.0)


def standardize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float32 pixels in 0-1 (ToTensor's scale) to the network's input, in place."""
    return x.sub_(float(mean[0])).div_(float(std[0]))


def preprocess(
    image: Image.Image,
    mean: Sequence[float],
    std: Sequence[float],
    invert: InvertMode = "auto",
) -> Preprocessed:
    """A decoded picture to a normalised 1x28x28 tensor, as the network expects it.

    ``original_size`` is the size of ``image``: for a big JPEG from :func:`decode_image`
    that is the reduced scale it was decoded at (the server reports the upload's own).
    """
    fitted, steps = model_image(image, invert)
    tensor = normalize(pixels_to_tensor(fitted), mean, std).unsqueeze(0)
    return Preprocessed(tensor=tensor, steps=steps)
