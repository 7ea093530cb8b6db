"""What the routes need from the inference engine, and the refusals it raises."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.card import ModelCard
from app.inference.messages import PixelType
from app.prediction import Prediction
from models.images import InvertMode


class QueueFullError(RuntimeError):
    """More images are in flight than the queue allows; the client should retry later."""


class InferenceTimeoutError(TimeoutError):
    """A request waited longer than the request timeout for its prediction."""


class InferenceUnavailableError(RuntimeError):
    """The inference worker stopped (and is restarting), or the server is shutting down."""


class NonFiniteOutputError(RuntimeError):
    """The network's output for an image is NaN or infinite (the server's fault, not the client's)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"the model gave no finite probabilities for image {index} of this request")
        self.index = index


RESTARTING = "the inference process is restarting; retry"


class Engine(Protocol):
    """Classifies uploads for the routes: decode -> batch -> predict -> unbatch -> encode."""

    @property
    def depth(self) -> int:
        """Images admitted and not yet answered."""
        ...

    @property
    def ready(self) -> bool:
        """Takes requests now (false while the inference worker starts or restarts)."""
        ...

    @property
    def card(self) -> ModelCard | None:
        """The model the worker loaded, as served; None before it first says."""
        ...

    async def classify(
        self, data: bytes, top_k: int = 3, invert: InvertMode = "auto", keep_image: bool = False
    ) -> Prediction:
        """One upload; raises ImageError, QueueFullError, InferenceTimeoutError, InferenceUnavailableError."""
        ...

    async def classify_many(
        self, payloads: Sequence[bytes], top_k: int = 3, invert: InvertMode = "auto"
    ) -> list[Prediction]:
        """Several uploads, in order; the first bad one raises ItemError naming its index."""
        ...

    async def classify_pixels(
        self, pixels: Sequence[bytes], dtype: PixelType = "uint8", top_k: int = 3
    ) -> list[Prediction]:
        """28x28 pixel arrays a client sent (784 values each: uint8 0-255, or native float32 0-1),
        straight to the network, in order."""
        ...

    async def aclose(self) -> None:
        """Answer what is held, then stop; what cannot be answered fails with InferenceUnavailableError."""
        ...
