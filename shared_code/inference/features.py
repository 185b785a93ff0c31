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


def image_statistics(crop: np.ndarray) -> dict[str, float]:
    """Brightness, contrast, saturation, sharpness and entropy of an HWC uint8 RGB crop, all in [0, ~1]."""
    rgb = crop.astype(np.float32)
    luma = rgb @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    # Saturation from every other pixel (a mean needs no more), with element-wise max/min of the three
    # planes: ~20x faster than a reduction over the short last axis.
    half = rgb[::2, ::2]
    red, green, blue = half[..., 0], half[..., 1], half[..., 2]
    high = np.maximum(np.maximum(red, green), blue)
    low = np.minimum(np.minimum(red, green), blue)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1.0), 0.0)
    laplacian = (
        -4.0 * luma[1:-1, 1:-1] + luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:]
    )
    histogram = np.bincount(np.clip(luma, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = histogram[histogram > 0] / histogram.sum()
    return {
        "brightness": float(luma.mean() / 255.0),
        "contrast": float(luma.std() / 255.0),
        "saturation": float(saturation.mean()),
        # log keeps the heavy-tailed Laplacian variance on a scale drift tests handle well
        "sharpness": float(np.log1p(laplacian.var())),
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
