"""Finding the item in a photo: the background's level and lighting are estimated from the
picture itself and removed, and the item is cut out, so a product or phone photo looks the
way Fashion-MNIST's pictures do (the item light on pure black, its strongest part at 255).

Fashion-MNIST was made from product photos on white: trimmed, scaled, negated. A real
photo's background is never white nor flat: an off-white level, a lighting gradient, sensor
noise, the grain of paper, cloth or wood. Here the background is modelled as a smooth
surface (a quadratic in x and y, fitted to the border and then to every pixel that looks like
background), the item as what departs from it, in either direction: a dark item on a light
background is inverted, a light one on a dark background is not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

# The border band the first background fit reads: this share of the shorter side.
_BORDER = 0.04
# At most this many pixels are sampled for each fit: the surface has six parameters.
_SAMPLES = 1024
# Pixels further than this many noise deviations from the surface are not background.
_OUTLIER = 3.0
# The item's contrast has the background's noise removed: this many deviations of it.
_FLOOR = 3.0
# The item's box holds the pixels of at least this share of its strongest contrast: JPEG's
# blocks and a texture's grain that pass the floor stay out of it.
_EDGE = 0.1
# Rows and columns with fewer item pixels than this share of the side are not trimmed into
# the box: specks of noise or texture that pass the floor do not widen it.
_SPECKS = 0.01


@dataclass(frozen=True)
class Cutout:
    """The item, light on black and trimmed to its box, and what was done to find it."""

    image: Image.Image  # L, same scale as the picture given
    inverted: bool  # the item was darker than its background
    background: float  # the background's mean level removed (0-255, before any inversion)
    box: tuple[int, int, int, int] | None  # left, upper, right, lower in the picture; None: none found


def _design(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(xs), xs, ys, xs * xs, ys * ys, xs * ys], axis=1)


def _surface(coefficients: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    y = np.arange(h, dtype=np.float64) / h
    x = np.arange(w, dtype=np.float64) / w
    c = coefficients
    # The terms of one coordinate as a row and a column; one pass over the pixels adds them.
    rows = (c[0] + c[2] * y + c[4] * y * y).astype(np.float32)
    cols = (c[1] * x + c[3] * x * x).astype(np.float32)
    surface = np.outer(y.astype(np.float32), (c[5] * x).astype(np.float32))
    surface += rows[:, None]
    surface += cols[None, :]
    return surface


def _middle(values: np.ndarray) -> float:
    """The median, near enough (the upper one of an even count), at a fraction of np.median's cost."""
    k = len(values) // 2
    return float(np.partition(values, k)[k])


def _spread(departures: np.ndarray) -> float:
    """The noise's standard deviation from departures around a median, robustly (the median
    absolute deviation), at least one level."""
    return 1.4826 * _middle(np.abs(departures)) + 1.0


# Keeps the normal equations solvable when the samples cannot tell the terms apart (a
# picture one pixel wide).
_RIDGE = {terms: np.eye(terms) * 1e-9 for terms in (3, 6)}


@functools.lru_cache(maxsize=16)
def _grid(h: int, w: int) -> tuple[int, np.ndarray, np.ndarray]:
    """For a picture of h x w: the sampling step, the fit's design matrix at the samples, and
    which samples lie in the border band (the same for every picture of that size)."""
    # Every step-th pixel: plenty for six parameters, at a flat cost.
    step = max(1, int(np.sqrt(h * w / _SAMPLES)))
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    design = _design((ys / h).ravel(), (xs / w).ravel())
    band = max(1, round(_BORDER * min(h, w)))
    border = ((ys < band) | (ys >= h - band) | (xs < band) | (xs >= w - band)).ravel()
    design.flags.writeable = border.flags.writeable = False
    return step, design, border


def estimate_background(pixels: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """The background surface, the standard deviation of its noise, and the departures from
    the surface of the sampled pixels."""
    h, w = pixels.shape
    step, design, border = _grid(h, w)
    values = pixels[::step, ::step].astype(np.float64).ravel()
    # Start from the border's median level: an item may cover part of the border (Fashion-
    # MNIST's own pictures touch the frame), but not most of it.
    edge = values[border]
    level = _middle(edge)
    chosen = border & (np.abs(values - level) <= _OUTLIER * _spread(edge - level))
    if np.count_nonzero(chosen) < 24:
        chosen = border
    coefficients = np.zeros(6)
    for terms in (3, 6):  # a plane through the border first: a curve would run wild between gaps
        fitted = design[chosen, :terms]
        # The normal equations: a 6x6 solve (lstsq's SVD costs a hundred times more here).
        gram = fitted.T @ fitted + _RIDGE[terms]
        coefficients[:terms] = np.linalg.solve(gram, fitted.T @ values[chosen])
        residual = values - design @ coefficients
        # With an intercept, a least-squares fit's residuals on its own samples average zero.
        inliers = residual[chosen]
        noise = float(np.sqrt(inliers @ inliers / len(inliers))) + 1.0
        # Refit on every pixel close to the surface: the border alone leaves the middle of a
        # vignette or a gradient's curve to extrapolation.
        close = np.abs(residual) <= _OUTLIER * noise
        if np.count_nonzero(close) >= 24:
            chosen = close
    return _surface(coefficients, (h, w)), noise, residual


def cut_out(gray: Image.Image, invert: bool | None) -> Cutout:
    """The item in an 8-bit grayscale picture, on black, trimmed; ``invert`` None decides."""
    pixels = np.asarray(gray, dtype=np.float32)
    surface, noise, sampled = estimate_background(pixels)
    level = float(surface.mean())
    if invert is None:
        # The item is whichever way the picture departs most from its background.
        away = sampled[np.abs(sampled) > _OUTLIER * noise]
        darker, lighter = float(-away[away < 0].sum()), float(away[away > 0].sum())
        invert = darker > lighter if darker != lighter else level >= 128
    # Contrast relative to the light available: lighting that falls off dims an item as much
    # as its background, so dividing by the surface undoes a gradient.
    if invert:
        contrast = surface - pixels
        light = np.maximum(surface, 16.0)
    else:
        contrast = pixels - surface
        light = np.maximum(255.0 - surface, 16.0)
    contrast /= light
    contrast -= _FLOOR * noise / max(level if invert else 255.0 - level, 16.0)
    np.maximum(contrast, 0.0, out=contrast)
    peak = float(contrast.max())
    box = _box(contrast > _EDGE * peak)
    if box is None or peak <= 0:
        return Cutout(Image.new("L", gray.size, 0), bool(invert), level, None)
    left, upper, right, lower = box
    item = contrast[upper:lower, left:right]
    item *= 255.0 / peak
    image = Image.fromarray(np.rint(item).astype(np.uint8), mode="L")
    return Cutout(image, bool(invert), level, box)


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    h, w = mask.shape
    rows = np.flatnonzero(np.count_nonzero(mask, axis=1) >= max(1, _SPECKS * w))
    cols = np.flatnonzero(np.count_nonzero(mask, axis=0) >= max(1, _SPECKS * h))
    if len(rows) == 0 or len(cols) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
