"""Per-image features for drift monitoring, computed from data the pipeline already holds.

Image statistics come from the 8-bit centre crop the network sees (224x224, so they cost well under a
millisecond and are comparable across image sizes); prediction features from the probabilities; the
embedding from the feature map the model exports (global-average-pooled), or from the log-probabilities
when the model has no feature output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

EMBEDDING_DIM = 32
_PROJECTION_SEED = 20_241_123  # fixed: embeddings stay comparable across processes and model versions


@dataclass(frozen=True)
class ImageFeatures:
    """What drift monitoring compares between a reference profile and recent traffic."""

    width: int
    height: int
    format: str
    brightness: float
    contrast: float
    saturation: float
    sharpness: float
    entropy: float
    confidence: float
    margin: float
    embedding: list[float]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


def _mean_and_variance(values: np.ndarray) -> tuple[float, float]:
    """Of a flat float32 array, from one sum and one dot product (no second pass over the deviations)."""
    mean = float(values.sum(dtype=np.float64)) / values.size
    return mean, max(float(np.dot(values, values)) / values.size - mean * mean, 0.0)


def image_statistics(crop: np.ndarray) -> dict[str, float]:
    """Brightness, contrast, saturation, sharpness and entropy of an HWC uint8 RGB crop, all in [0, ~1].

    Written for the serving path (about half the time of the plain NumPy expressions, tests/unit/inference
    keep those as the reference): one float luma plane, moments from sums and dot products instead of
    `mean`/`var` passes, the Laplacian accumulated in one buffer, the histogram without a clip (luma of 8-bit
    RGB stays in [0, 255]).
    """
    luma = crop.astype(np.float32) @ _LUMA
    flat = luma.ravel()
    mean, variance = _mean_and_variance(flat)
    # Saturation from every other pixel (a mean needs no more), with element-wise max/min of the three
    # planes: ~20x faster than a reduction over the short last axis.
    half = crop[::2, ::2]
    red, green, blue = half[..., 0], half[..., 1], half[..., 2]
    high = np.maximum(np.maximum(red, green), blue).astype(np.float32)
    low = np.minimum(np.minimum(red, green), blue)
    saturation = np.divide(high - low, high, out=np.zeros_like(high), where=high > 0)
    laplacian = luma[:-2, 1:-1] + luma[2:, 1:-1]
    laplacian += luma[1:-1, :-2]
    laplacian += luma[1:-1, 2:]
    laplacian -= 4.0 * luma[1:-1, 1:-1]
    _, lap_variance = _mean_and_variance(laplacian.ravel())
    histogram = np.bincount(flat.astype(np.uint8), minlength=256)
    p = histogram[histogram > 0] / flat.size
    return {
        "brightness": mean / 255.0,
        "contrast": float(np.sqrt(variance)) / 255.0,
        "saturation": float(saturation.mean()),
        # log keeps the heavy-tailed Laplacian variance on a scale drift tests handle well
        "sharpness": float(np.log1p(lap_variance)),
        "entropy": float(-(p * np.log2(p)).sum() / 8.0),
    }


@lru_cache(maxsize=8)
def _projection(input_dim: int) -> np.ndarray:
    rng = np.random.default_rng(_PROJECTION_SEED + input_dim)
    matrix: np.ndarray = (rng.standard_normal((input_dim, EMBEDDING_DIM)) / np.sqrt(EMBEDDING_DIM)).astype(np.float32)
    return matrix


def embeddings(features: np.ndarray | None, probabilities: np.ndarray) -> np.ndarray:
    """Compact embeddings [N, 32]: a fixed random projection (Johnson-Lindenstrauss) of pooled features."""
    if features is not None and features.ndim == 4:
        pooled = features.mean(axis=(2, 3))
    elif features is not None and features.ndim == 2:
        pooled = features
    else:
        pooled = np.log(np.clip(probabilities, 1e-7, 1.0))
    pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    projected: np.ndarray = pooled.astype(np.float32) @ _projection(pooled.shape[1])
    return projected


def confidence_and_margin(probabilities: np.ndarray) -> tuple[float, float]:
    """Top-1 probability and its lead over the runner-up."""
    if probabilities.shape[-1] < 2:
        return float(probabilities.max()), float(probabilities.max())
    top_two = np.partition(probabilities, -2)[-2:]
    return float(top_two[1]), float(top_two[1] - top_two[0])
