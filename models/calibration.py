"""Calibrated probabilities: temperature scaling, and how far confidence is from accuracy.

Temperature scaling (Guo et al., 2017) divides the logits by one number fitted on held-out
data. It cannot change which class wins for a single view, and it fixes what training
methods such as label smoothing do to confidence: a model trained with it says 0.85 where
it is right 94% of the time. With flip averaging each view's logits are scaled before its
softmax, so the fitted temperature is the one for the probabilities actually served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

# A temperature outside this range would be a broken fit or a hostile file, not a calibration.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0
ECE_BINS = 15


@dataclass(frozen=True)
class Calibration:
    """How the network's logits become the probabilities served."""

    temperature: float = 1.0
    fitted_on: str | None = None  # what the temperature was fitted on; None: not calibrated

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """V x N x C logits (one slice per view) to N x C probabilities, the views averaged."""
        return view_probabilities(logits, self.temperature)

    def probabilities_and_log_partition(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The probabilities, and each image's ``logsumexp(logits / T)`` averaged over the views
        (what the out-of-distribution score's energy term needs), from one log-softmax."""
        scaled = logits if self.temperature == 1.0 else logits * (1 / self.temperature)
        return probabilities_and_log_partition(scaled)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "temperature", "temperature": self.temperature, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """Read a checkpoint's ``calibration``; ValueError naming the field if it is not sane."""
        if not isinstance(data, dict) or data.get("method") != "temperature":
            raise ValueError("calibration must be {'method': 'temperature', 'temperature': ...}")
        temperature = data.get("temperature")
        if (
            not isinstance(temperature, int | float)
            or isinstance(temperature, bool)
            or not math.isfinite(temperature)
            or not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE
        ):
            raise ValueError(
                f"calibration.temperature must be a number from {MIN_TEMPERATURE} to {MAX_TEMPERATURE}, "
                f"not {temperature!r}"
            )
        fitted_on = data.get("fitted_on")
        return cls(float(temperature), None if fitted_on is None else str(fitted_on)[:200])


def view_probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """V x N x C logits to N x C probabilities: each view's softmax at ``temperature``, averaged."""
    scaled = logits if temperature == 1.0 else logits / temperature
    probs = scaled.softmax(dim=-1)
    return probs[0] if probs.shape[0] == 1 else probs.mean(0)


def probabilities_and_log_partition(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """V x N x C logits to N x C probabilities (each view's softmax, averaged) and N log
    partitions (each view's ``logsumexp`` over the classes, averaged).

    The partition comes from the softmax: ``p_max = exp(z_max - logsumexp(z))``, so
    ``logsumexp(z) = z_max - log(p_max)``, exact and safe since ``p_max >= 1/C``. That is four
    small operations where ``torch.logsumexp`` takes a dozen, on every prediction.
    """
    probs = logits.softmax(dim=-1)
    partition = logits.amax(dim=-1) - probs.amax(dim=-1).log()
    if logits.shape[0] == 1:
        return probs[0], partition[0]
    return probs.mean(0), partition.mean(0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that minimises the negative log-likelihood of the served probabilities
    of V x N x C ``logits`` (held-out data: never the training images)."""
    logits, labels = logits.detach().double(), labels.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        probs = (logits / log_t.exp()).softmax(dim=-1).mean(0)
        loss = -probs.gather(1, labels[:, None]).clamp_min(1e-12).log().mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(MIN_TEMPERATURE, MAX_TEMPERATURE))


def reliability_bins(
    probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Equal-width confidence bins: each one's count, mean confidence and accuracy."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    index = (confidence.double() * bins).ceil().long().clamp(1, bins) - 1  # (lo, hi] bins, as usual
    rows = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        rows.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": count,
                "confidence": float(confidence[mask].double().mean()) if count else 0.0,
                "accuracy": float(correct[mask].mean()) if count else 0.0,
            }
        )
    return rows


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over equal-width bins."""
    total = len(labels)
    return sum(
        row["count"] / total * abs(row["accuracy"] - row["confidence"])
        for row in reliability_bins(probs, labels, bins)
    )
