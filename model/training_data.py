"""Labelled training data: a folder of class subfolders or a CSV of path,label rows, split and augmented.

Images are decoded with the serving decoder (`shared_code.inference.imaging.decode_image`, the same JPEG draft rule as
`ClassificationPipeline.decode`), so EXIF orientation, palette and alpha handling match what serving sees.
Validation batches use exactly the serving preprocessing (`shared_code.inference.preprocess.preprocess_batch`, from the
card); training batches add RandomResizedCrop(crop, scale=(0.6, 1)), a horizontal flip and a light colour
jitter on top of the card's mean/std.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from model.dataset import IMAGE_SUFFIXES, image_files
from shared_code.inference.imaging import decode_image
from shared_code.inference.model_card import ModelCard
from shared_code.inference.preprocess import preprocess_batch

PATH_COLUMNS = ("path", "filename", "file")
LABEL_COLUMN = "label"
SCALE = (0.6, 1.0)
_INTERPOLATION = {
    "bilinear": transforms.InterpolationMode.BILINEAR,
    "bicubic": transforms.InterpolationMode.BICUBIC,
    "nearest": transforms.InterpolationMode.NEAREST,
}


class BadTrainingData(ValueError):
    """The labelled data cannot be trained on; the message says what to fix."""


@dataclass(frozen=True)
class Sample:
    """One labelled image: its file, its label as written in the data, and the class index it trains."""

    path: Path
    label: str
    class_index: int = -1


@dataclass(frozen=True)
class Split:
    train: list[Sample]
    validation: list[Sample]


def normalised(label: str) -> str:
    """Label matching is case-, underscore- and whitespace-insensitive (as model.dataset matches folders)."""
    return " ".join(label.replace("_", " ").split()).casefold()


def _from_csv(csv_path: Path, data_root: Path | None) -> list[Sample]:
    root = data_root or csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = [name.strip().casefold() for name in reader.fieldnames or []]
        path_column = next((name for name in PATH_COLUMNS if name in fields), None)
        if path_column is None or LABEL_COLUMN not in fields:
            raise BadTrainingData(f"{csv_path}: needs the columns path,label (found {', '.join(fields) or 'none'})")
        original = {name.strip().casefold(): name for name in reader.fieldnames or []}
        samples: list[Sample] = []
        for line, row in enumerate(reader, start=2):
            relative = (row.get(original[path_column]) or "").strip()
            label = (row.get(original[LABEL_COLUMN]) or "").strip()
            if not relative or not label:
                raise BadTrainingData(f"{csv_path}:{line}: empty path or label")
            samples.append(Sample(root / relative, label))
    return samples


def _from_subfolders(folder: Path) -> list[Sample]:
    samples: list[Sample] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        samples.extend(Sample(path, sub.name) for path in image_files(sub))
    return samples


def load_samples(data: Path, data_root: Path | None = None) -> list[Sample]:
    """Labelled images from a CSV (path,label; paths relative to the CSV's folder unless `data_root`), a folder
    holding such a `labels.csv`, or a folder of class subfolders."""
    data = Path(data)
    if not data.exists():
        raise BadTrainingData(f"{data} does not exist")
    if data.is_file():
        samples = _from_csv(data, data_root)
    elif (data / "labels.csv").exists() and _csv_has_labels(data / "labels.csv"):
        samples = _from_csv(data / "labels.csv", data_root)
    else:
        samples = _from_subfolders(data)
    if not samples:
        raise BadTrainingData(f"no labelled images in {data} (expected class subfolders or a path,label CSV)")
    missing = [str(s.path) for s in samples if not s.path.is_file()]
    if missing:
        raise BadTrainingData(f"{len(missing)} listed images do not exist, e.g. {', '.join(missing[:3])}")
    odd = [str(s.path) for s in samples if s.path.suffix.lower() not in IMAGE_SUFFIXES]
    if odd:
        raise BadTrainingData(f"not image files: {', '.join(odd[:3])}")
    return samples


def _csv_has_labels(path: Path) -> bool:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = [name.strip().casefold() for name in next(csv.reader(handle), [])]
    return LABEL_COLUMN in header and any(name in header for name in PATH_COLUMNS)


def custom_labels(samples: Sequence[Sample]) -> list[str]:
    """The classes of a custom data set: its distinct labels, sorted."""
    labels = sorted({s.label for s in samples})
    clashes = Counter(normalised(label) for label in labels)
    doubled = [label for label in labels if clashes[normalised(label)] > 1]
    if doubled:
        raise BadTrainingData(f"labels that differ only in case/underscores: {', '.join(doubled)}")
    if len(labels) < 2:
        raise BadTrainingData(f"a custom model needs at least 2 classes; the data has {labels}")
    return labels


def index_samples(samples: Sequence[Sample], labels: Sequence[str]) -> list[Sample]:
    """Give each sample the index of its label in `labels` (first match wins: ImageNet repeats a few names)."""
    index_of: dict[str, int] = {}
    for index, label in enumerate(labels):
        index_of.setdefault(normalised(label), index)
    unknown = sorted({s.label for s in samples if normalised(s.label) not in index_of})
    if unknown:
        raise BadTrainingData(f"{len(unknown)} labels are not among the model's {len(labels)} classes: "
                              f"{', '.join(unknown[:10])}")
    return [Sample(s.path, s.label, index_of[normalised(s.label)]) for s in samples]


def check_class_sizes(samples: Sequence[Sample], labels: Sequence[str], *, every_class: bool) -> None:
    """Every class needs 2 images (one to train, one to validate); `every_class`: each label must occur."""
    counts = Counter(s.class_index for s in samples)
    small = [f"{labels[i]!r} ({counts[i]})" for i in sorted(counts) if counts[i] < 2]
    if every_class:
        small += [f"{labels[i]!r} (0)" for i in range(len(labels)) if i not in counts]
    if small:
        raise BadTrainingData(f"classes with fewer than 2 images (one to train, one to validate): "
                              f"{', '.join(small[:10])}")


def _by_class(samples: Sequence[Sample], rng: np.random.Generator) -> dict[int, list[Sample]]:
    groups: dict[int, list[Sample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: (s.class_index, str(s.path))):
        groups[sample.class_index].append(sample)
    return {index: [group[int(i)] for i in rng.permutation(len(group))] for index, group in sorted(groups.items())}


def limit_samples(samples: Sequence[Sample], max_images: int, seed: int = 0) -> list[Sample]:
    """At most `max_images`, taken round-robin over the classes (seeded), so every class keeps what it can."""
    if max_images <= 0 or len(samples) <= max_images:
        return list(samples)
    groups = _by_class(samples, np.random.default_rng(seed))
    chosen: list[Sample] = []
    depth = 0
    while len(chosen) < max_images:
        for group in groups.values():
            if depth < len(group) and len(chosen) < max_images:
                chosen.append(group[depth])
        depth += 1
    return chosen


def stratified_split(samples: Sequence[Sample], val_fraction: float, seed: int = 0) -> Split:
    """Per class: round(n * val_fraction) images, at least 1 and at most n - 1, to validation (seeded).

    A class with a single image goes to training only. The order within each part is stable for a seed.
    """
    if not 0.0 < val_fraction < 1.0:
        raise BadTrainingData(f"--val-fraction must be between 0 and 1, not {val_fraction}")
    train: list[Sample] = []
    validation: list[Sample] = []
    for group in _by_class(samples, np.random.default_rng(seed)).values():
        count = len(group)
        held = 0 if count < 2 else min(count - 1, max(1, round(count * val_fraction)))
        validation.extend(group[:held])
        train.extend(group[held:])
    if not validation:
        raise BadTrainingData("no class has 2 images, so nothing is left to validate on")
    return Split(train, validation)


def load_image(path: Path, card: ModelCard) -> Image.Image:
    """Decode a file as the service decodes an upload for this card."""
    return decode_image(path.read_bytes(), min_side_hint=2 * card.resize_size).image


def train_transform(card: ModelCard) -> Any:
    """Augmentation for training: random resized crop, flip, light colour jitter, then the card's mean/std."""
    return transforms.Compose([
        transforms.RandomResizedCrop(card.crop_size, scale=SCALE, interpolation=_INTERPOLATION[card.interpolation]),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        transforms.PILToTensor(),
        transforms.ConvertImageDtype(torch.float32),
        transforms.Normalize(card.mean, card.std),
    ])


class TrainingImages(torch.utils.data.Dataset):  # type: ignore[misc,unused-ignore]  # torch is Any without it
    """Samples decoded on access and augmented; items are (CHW float tensor, class index)."""

    def __init__(self, samples: Sequence[Sample], card: ModelCard) -> None:
        self.samples = list(samples)
        self.card = card
        self.transform = train_transform(card)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        return self.transform(load_image(sample.path, self.card)), sample.class_index


def validation_batches(samples: Sequence[Sample], card: ModelCard, batch_size: int
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(NCHW float32 batch, class indices) preprocessed exactly as serving does."""
    batches = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        batch = preprocess_batch([load_image(s.path, card) for s in chunk], card)
        batches.append((batch, np.array([s.class_index for s in chunk], dtype=np.int64)))
    return batches
