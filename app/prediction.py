"""What a prediction is, as the routes and the engine see it, without torch: the top
classes of one image, and the errors of a request's items."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from models.images import ImageError, Steps


class DeviceError(RuntimeError):
    """The configured device does not exist on this machine."""


class ItemError(ValueError):
    """One item of a batch cannot be used; ``index`` says which, ``error`` why."""

    def __init__(self, index: int, error: ImageError) -> None:
        super().__init__(f"item {index}: {error}")
        self.index = index
        self.error = error


@dataclass(frozen=True)
class ScoredClass:
    index: int
    name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The top classes of one image, best first, and what preprocessing did to it."""

    top: list[ScoredClass]
    steps: Steps
    input_image: Image.Image | None = None  # the 28x28 grayscale the network saw, when asked for
    # How unlike the training images it is, and whether that is past the threshold; None
    # for a checkpoint without a fitted score.
    ood_score: float | None = None
    out_of_distribution: bool | None = None
