"""Labelled image folders for evaluation and unlabelled ones for calibration, read through the serving decoder."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from shared_code.inference.imaging import decode_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
LABELS_CSV = "labels.csv"


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    class_index: int


def _normalised(label: str) -> str:
    return label.replace("_", " ").strip().casefold()


def image_files(folder: Path) -> list[Path]:
    """Every image file below `folder`, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _from_csv(folder: Path, num_classes: int) -> list[LabelledImage]:
    items = []
    with (folder / LABELS_CSV).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            index = int(row["class_index"])
            if not 0 <= index < num_classes:
                raise ValueError(f"{LABELS_CSV}: class_index {index} of {row['filename']} is outside the model's "
                                 f"{num_classes} classes")
            items.append(LabelledImage(folder / row["filename"], index))
    return items


def _from_subfolders(folder: Path, labels: Sequence[str]) -> list[LabelledImage]:
    # First occurrence wins: ImageNet repeats a few names ("crane", "maillot") for different synsets.
    index_of: dict[str, int] = {}
    for index, label in enumerate(labels):
        index_of.setdefault(_normalised(label), index)
    items: list[LabelledImage] = []
    unknown: list[str] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        class_index = index_of.get(_normalised(sub.name))
        if class_index is None:
            unknown.append(sub.name)
            continue
        items.extend(LabelledImage(path, class_index) for path in image_files(sub))
    if unknown:
        raise ValueError(f"subfolders that match no label of the model: {', '.join(unknown[:10])}")
    return items


def labelled_images(folder: Path, labels: Sequence[str]) -> list[LabelledImage]:
    """Images with their true class: from `labels.csv`, else one subfolder per class named like its label."""
    items = _from_csv(folder, len(labels)) if (folder / LABELS_CSV).exists() else _from_subfolders(folder, labels)
    if not items:
        raise ValueError(f"no labelled images in {folder}")
    return items


def load_rgb(path: Path) -> Image.Image:
    """Decode a file exactly as the service decodes an upload."""
    return decode_image(path.read_bytes()).image


def batched(items: Sequence[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
