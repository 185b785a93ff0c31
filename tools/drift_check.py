"""Drift from the command line: write a model's reference profile, check drift on shifted data, run a window.

    python -m tools.drift_check profile --data DIR [--model CARD_OR_ONNX]
    python -m tools.drift_check check --data DIR [--model CARD_OR_ONNX] [--seed 0]
    python -m tools.drift_check window [--window 2026-11-23T00:00Z/PT24H] [--force]

DIR holds images with a `labels.csv` (filename plus class_index or label) or one subfolder per class.
`check` splits DIR 50/50 (seeded) into reference and current, shifts the current half (dark, blur,
grayscale, few_classes) and prints, as its last line, one JSON object with the verdict of each variant.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from shared_code.errors import ImageRejected
from shared_code.inference.classifier import load_classifier
from shared_code.inference.model_card import ModelCard, load_card
from shared_code.inference.pipeline import ClassificationPipeline
from shared_code.monitoring.drift import build_reference_profile, compute_drift, drift_row
from shared_code.monitoring.summary import PROFILE_FILE, DriftSummary, DriftThresholds

DEFAULT_MODEL = Path("model/artifacts/current.card.json")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
BATCH = 16
FEW_CLASSES = 3
logger = logging.getLogger("drift_check")


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str | None


def labelled_images(folder: Path, labels: Sequence[str]) -> list[LabelledImage]:
    """The images of a folder with their true labels (from labels.csv, else the class subfolder names)."""
    listing = folder / "labels.csv"
    if listing.exists():
        images = []
        with listing.open(newline="", encoding="utf-8") as handle:
            for entry in csv.DictReader(handle):
                index = entry.get("class_index")
                # the card's own label for an index keeps names identical to what the model predicts
                label = labels[int(index)] if index and index.isdigit() and int(index) < len(labels) else (
                    entry.get("label") or None)
                images.append(LabelledImage(folder / entry["filename"], label))
        return images
    return [LabelledImage(path, sub.name) for sub in sorted(p for p in folder.iterdir() if p.is_dir())
            for path in sorted(sub.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]


def resolve_model(model: Path) -> Path:
    """A card path for a card, or for a bare ImageNet ONNX file (writing its standard card once)."""
    if model.suffix == ".onnx":
        from model.card import ensure_card  # noqa: PLC0415 - only bare ONNX files need the card writer

        return ensure_card(model)
    return model


def classify_rows(pipeline: ClassificationPipeline, images: Sequence[bytes], labels: Sequence[str | None]
                  ) -> list[dict[str, Any]]:
    """Drift rows for images (rejected ones are left out, with a warning)."""
    rows: list[dict[str, Any]] = []
    for start in range(0, len(images), BATCH):
        outcomes = pipeline.classify_many(images[start:start + BATCH], top_k=1)
        for outcome, label in zip(outcomes, labels[start:start + BATCH], strict=True):
            if isinstance(outcome, ImageRejected):
                logger.warning("image rejected: %s", outcome.message)
                continue
            rows.append(drift_row(outcome.features.to_dict(), outcome.predictions[0].label, known_label=label))
    return rows


def _reencode(data: bytes, change: Callable[[Image.Image], Image.Image]) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        shifted = change(image.convert("RGB"))
    buffer = io.BytesIO()
    shifted.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


SHIFTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "dark": lambda image: ImageEnhance.Brightness(image).enhance(0.4),
    "blur": lambda image: image.filter(ImageFilter.GaussianBlur(radius=3)),
    "grayscale": lambda image: image.convert("L").convert("RGB"),
}


def few_classes(rows: Sequence[dict[str, Any]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Only the rows of the FEW_CLASSES most frequent true classes, replicated to the original count."""
    counts = Counter(str(row["known_label"]) for row in rows)
    order = list(counts)
    rng.shuffle(order)  # seeded tie-break: one photo per class is the common case
    chosen = set(sorted(order, key=lambda label: -counts[label])[:FEW_CLASSES])
    kept = [row for row in rows if str(row["known_label"]) in chosen]
    return [kept[i % len(kept)] for i in range(len(rows))]


def summary_line(summary: DriftSummary) -> dict[str, Any]:
    return {"drift": summary.drift, "signals": summary.signals, "drift_share": summary.drift_share,
            "reference_rows": summary.reference_rows, "current_rows": summary.current_rows,
            "p_values": {detail.name: detail.p_value for detail in summary.details},
            "computed_ms": summary.computed_ms}


def run_check(data: Path, model: Path, *, seed: int = 0, thresholds: DriftThresholds | None = None
              ) -> dict[str, dict[str, Any]]:
    """Split `data` 50/50, shift the current half, and compare each variant with the reference half."""
    pipeline = ClassificationPipeline(load_classifier(resolve_model(model)))
    images = labelled_images(data, pipeline.card.labels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    half = len(images) // 2
    reference = [images[int(i)] for i in order[:half]]
    current = [images[int(i)] for i in order[half:]]
    current_bytes = [image.path.read_bytes() for image in current]
    current_labels = [image.label for image in current]
    reference_rows = classify_rows(pipeline, [image.path.read_bytes() for image in reference],
                                   [image.label for image in reference])
    variants: dict[str, list[dict[str, Any]]] = {"same": classify_rows(pipeline, current_bytes, current_labels)}
    for name, change in SHIFTS.items():
        variants[name] = classify_rows(pipeline, [_reencode(b, change) for b in current_bytes], current_labels)
    variants["few_classes"] = few_classes(variants["same"], rng)
    verdicts = {}
    for name, rows in variants.items():
        # corrections are not part of this experiment: the current half's labels stay unknown to the check
        unlabelled = [{**row, "known_label": None} for row in rows]
        summary = compute_drift(reference_rows, unlabelled, thresholds=thresholds or DriftThresholds())
        verdicts[name] = summary_line(summary)
    return verdicts


def write_profile(data: Path, model: Path) -> Path:
    """Classify a labelled folder, write `reference_profile.json` beside the card and name it in the card."""
    card_path = resolve_model(model)
    card, onnx_path = load_card(card_path)
    pipeline = ClassificationPipeline(load_classifier(card_path))
    images = labelled_images(data, card.labels)
    rows = classify_rows(pipeline, [image.path.read_bytes() for image in images], [image.label for image in images])
    profile = build_reference_profile(rows, model=card)
    target = card_path.parent / PROFILE_FILE
    target.write_text(json.dumps(profile, separators=(",", ":")), encoding="utf-8")
    # a card that names its ONNX file by absolute path (a cached card) names its profile the same way
    named = str(target.resolve()) if Path(card.onnx_file).is_absolute() else PROFILE_FILE
    updated: ModelCard = card.model_copy(update={"reference_profile_file": named})
    card_path.write_text(updated.to_json() + "\n", encoding="utf-8")
    logger.info("profile of %d rows (%d images) written to %s for %s", profile["sample_size"], len(images), target,
                onnx_path.name)
    return target


def run_window(window: str | None, force: bool) -> dict[str, Any]:
    """Run one drift window against the configured stores (local.settings.json), like the timer does."""
    from datetime import UTC, datetime  # noqa: PLC0415 - only this command needs the stores

    from functions.dependencies import get_components  # noqa: PLC0415
    from functions.drift_api import run_owner  # noqa: PLC0415
    from shared_code.monitoring.drift import run_drift_window  # noqa: PLC0415
    from shared_code.monitoring.window import last_complete_window, parse_window  # noqa: PLC0415
    from shared_code.settings import apply_local_settings_file, get_settings  # noqa: PLC0415

    apply_local_settings_file()
    settings = get_settings()
    target = parse_window(window) if window else last_complete_window(datetime.now(UTC), settings.DRIFT_WINDOW_HOURS)
    run = run_drift_window(target, get_components().drift_dependencies(), owner=f"cli:{run_owner()}",
                           force=force)
    return {"status": run.status, "reason": run.reason, "window": target.id,
            "summary": run.summary.model_dump(mode="json") if run.summary else None}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.drift_check", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("profile", "check"):
        command = commands.add_parser(name)
        command.add_argument("--data", type=Path, required=True, help="labels.csv folder or class subfolders")
        command.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model card or bare ImageNet ONNX")
        command.add_argument("--seed", type=int, default=0)
    window = commands.add_parser("window")
    window.add_argument("--window", help="window id or key; default: the last complete window")
    window.add_argument("--force", action="store_true", help="re-run a window that is already done")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command == "profile":
        print(write_profile(args.data, args.model))
        return 0
    if args.command == "window":
        print(json.dumps(run_window(args.window, args.force)))
        return 0
    verdicts = run_check(args.data, args.model, seed=args.seed)
    for name, verdict in verdicts.items():
        print(f"{name:12s} drift={verdict['drift']!s:5s} share={verdict['drift_share']:.2f} "
              f"signals={','.join(verdict['signals']) or '-'}")
    print(json.dumps(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
