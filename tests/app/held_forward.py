"""A forward pass that waits for the test: what is queued behind it is then known exactly."""

from __future__ import annotations

import threading

import torch

from app.predictor import Predictor

SAFETY_S = 30  # only ever reached when the code under test is broken


class HeldForward:
    """Replaces Predictor.predict_scored: records each batch's size; the first call waits for
    ``release``."""

    def __init__(self, predictor: Predictor) -> None:
        self.inner = predictor.predict_scored
        self.sizes: list[int] = []
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.sizes.append(len(batch))
        self.started.set()
        self.release.wait(SAFETY_S)
        return self.inner(batch)
