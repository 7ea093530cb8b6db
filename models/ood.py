"""The out-of-distribution score: how unlike the training images a picture is to the network.

Two measures, each standardised on the validation images and added:

- **Mahalanobis distance** (Lee et al., 2018) of the image's features (the last conv
  blocks' activations summed per channel) from the training images' mean, under their
  covariance.
  A photo, text or noise lights up features no garment does. One Gaussian for all the
  training images: one per class, as Lee et al. fit, measured no better here and costs
  more per image.
- **Energy** (Liu et al., 2020), ``-T logsumexp(logits / T)`` (each view's, averaged): low
  when some class fits well. It catches what the features miss: a digit is a thin light
  stroke on black, close to a sandal's features, but no class fits it.

The threshold is the validation score that flags the chosen share (``flag_rate``) of the
validation images. A score costs one D x D product per image (D is a few hundred), and a
handful of small tensor operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

METHOD = "mahalanobis+energy"
# Share of in-distribution validation images flagged: below the 5% promised, because the
# test split, drawn apart from the training file, runs about a point higher.
DEFAULT_FLAG_RATE = 0.03


@dataclass(frozen=True)
class OODDetector:
    """A fitted score and its threshold; ``score`` is higher for less familiar pictures."""

    whitening: torch.Tensor  # D x D: |(f - mean) @ whitening|^2 is the squared Mahalanobis distance
    mean: torch.Tensor  # D: the training images' mean features
    mahalanobis_center: float
    mahalanobis_scale: float
    energy_center: float
    energy_scale: float
    threshold: float
    flag_rate: float

    def __post_init__(self) -> None:
        # The score runs on every prediction, where each small tensor operation costs as much
        # as its maths: the centring and the distance's standardisation are folded into one
        # matrix-multiply-add, |f @ W' + b'|^2 = (distance - 0) / scale.
        root = (1 / self.mahalanobis_scale) ** 0.5
        object.__setattr__(self, "_weight", (self.whitening * root).contiguous())
        object.__setattr__(self, "_bias", (-(self.mean @ self.whitening) * root).contiguous())
        offset = self.mahalanobis_center / self.mahalanobis_scale + self.energy_center / self.energy_scale
        object.__setattr__(self, "_offset", offset)

    def mahalanobis(self, features: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of N x D features from the training images' mean."""
        return (features.float() @ self.whitening - self.mean @ self.whitening).square().sum(1)

    def score(self, log_partition: torch.Tensor, features: torch.Tensor, temperature: float) -> torch.Tensor:
        """N scores from N log partitions (``logsumexp(logits / T)``, views averaged) and
        N x D features (views averaged)."""
        whitened = torch.addmm(self._bias, features, self._weight)  # type: ignore[attr-defined]
        distance = whitened.square().sum(1)  # not linalg.vecdot: ONNX has no such operator
        # + (energy - centre) / scale, with energy = -T log partition.
        return distance.add_(log_partition, alpha=-temperature / self.energy_scale).sub_(self._offset)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "whitening": self.whitening.float().contiguous(),
            "mean": self.mean.float().contiguous(),
            "mahalanobis": [self.mahalanobis_center, self.mahalanobis_scale],
            "energy": [self.energy_center, self.energy_scale],
            "threshold": self.threshold,
            "flag_rate": self.flag_rate,
        }

    @classmethod
    def from_dict(cls, data: Any, feature_dim: int) -> OODDetector:
        """Read a checkpoint's ``ood``; ValueError naming the field if it does not fit the network."""
        if not isinstance(data, dict) or data.get("method") != METHOD:
            raise ValueError(f"ood.method must be {METHOD!r}")
        whitening = _matrix(data.get("whitening"), "ood.whitening", (feature_dim, feature_dim))
        mean = _matrix(data.get("mean"), "ood.mean", (feature_dim,))
        maha, energy = (
            _pair(data.get("mahalanobis"), "ood.mahalanobis"),
            _pair(data.get("energy"), "ood.energy"),
        )
        threshold, flag_rate = (
            _number(data.get("threshold"), "ood.threshold"),
            _number(data.get("flag_rate"), "ood.flag_rate"),
        )
        if not 0 < flag_rate < 1:
            raise ValueError(f"ood.flag_rate must be between 0 and 1, not {flag_rate}")
        return cls(whitening, mean, *maha, *energy, threshold, flag_rate)


def _number(value: Any, name: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}"[:200])
    return float(value)


def _pair(value: Any, name: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{name} must be [center, scale]")
    center, scale = _number(value[0], name), _number(value[1], name)
    if scale <= 0:
        raise ValueError(f"{name}'s scale must be positive, not {scale}")
    return center, scale


def _matrix(value: Any, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor")
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} has shape {list(value.shape)}; this network needs {list(shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return value.float().contiguous()


def fit(
    train_features: torch.Tensor,
    val_log_partition: torch.Tensor,
    val_features: torch.Tensor,
    temperature: float,
    flag_rate: float = DEFAULT_FLAG_RATE,
) -> OODDetector:
    """Mean and covariance from the training images' N x D features; standardisation and the
    threshold from the validation images' (N log partitions, N x D features)."""
    features = train_features.double()
    mean = features.mean(0)
    centred = features - mean
    covariance = centred.T @ centred / max(1, len(features) - 1)
    # A little shrinkage: dead channels (always 0) would make the covariance singular.
    dim = features.shape[1]
    covariance += torch.eye(dim, dtype=torch.float64) * (1e-4 * covariance.diagonal().mean() + 1e-8)
    whitening = torch.linalg.cholesky(torch.linalg.inv(covariance)).float()  # P = W W^T
    unscaled = OODDetector(whitening, mean.float(), 0.0, 1.0, 0.0, 1.0, 0.0, flag_rate)
    distances, energies = (
        unscaled.mahalanobis(val_features).double(),
        -temperature * val_log_partition.double(),
    )
    # A floor under each spread: a validation set on which a measure is constant must not
    # make a checkpoint whose scores are infinite.
    spread = (max(float(distances.std()), 1e-6), max(float(energies.std()), 1e-6))
    stats = (float(distances.mean()), spread[0], float(energies.mean()), spread[1])
    scaled = OODDetector(whitening, mean.float(), *stats, 0.0, flag_rate)
    scores = scaled.score(val_log_partition.float(), val_features.float(), temperature)
    threshold = float(torch.quantile(scores.double(), 1 - flag_rate))
    return OODDetector(whitening, mean.float(), *stats, threshold, flag_rate)
