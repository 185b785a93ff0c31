"""ImageNet-1k conventions shared by export, card writing and evaluation (no torch needed)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from shared_code.inference.model_card import IMAGENET_MEAN, IMAGENET_STD

IMAGENET_LABELS_FILE = Path(__file__).resolve().parents[1] / "shared_code" / "inference" / "imagenet_labels.txt"
IMAGENET_CLASSES = 1000
STANDARD_RESIZE = 256
STANDARD_CROP = 224
STANDARD_MEAN = IMAGENET_MEAN
STANDARD_STD = IMAGENET_STD


@cache
def _labels_from(path: Path) -> tuple[str, ...]:
    labels = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(labels) != IMAGENET_CLASSES:
        raise ValueError(f"{path} has {len(labels)} labels, expected {IMAGENET_CLASSES}")
    return labels


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard (sorted synset) order."""
    return list(_labels_from(IMAGENET_LABELS_FILE))


def resize_for_crop(crop: int) -> int:
    """The conventional shorter-side resize for a centre crop (256 for 224, same 0.875 ratio)."""
    return round(crop * STANDARD_RESIZE / STANDARD_CROP)
