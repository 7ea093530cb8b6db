"""What a checkpoint says about its data, without torch: the class names and the input's
size and normalisation (``InputSpec``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Pixel mean and std of the 60,000 Fashion-MNIST training images, scaled to 0..1.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


@dataclass(frozen=True)
class InputSpec:
    """What the network expects: image size, channels and normalisation."""

    height: int = 28
    width: int = 28
    channels: int = 1
    mean: tuple[float, ...] = FASHION_MNIST_MEAN
    std: tuple[float, ...] = FASHION_MNIST_STD

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        return cls(
            height=int(data["height"]),
            width=int(data["width"]),
            channels=int(data["channels"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
        )


# The tutorial trains on ToTensor() output: 0..1 with no normalisation.
TUTORIAL_INPUT = InputSpec(mean=(0.0,), std=(1.0,))
