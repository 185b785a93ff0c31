"""Export a fine-tuned candidate, measure it and the current model on the same held-out split, promote, publish.

Everything measured here goes through the exported ONNX and `shared_code.inference.pipeline.ClassificationPipeline`
(serving decode, card preprocessing, ONNX Runtime), so the accuracy compared is the accuracy serving gives.

A version folder (`<out>/<name>/<version>/`, the same layout as the `models` container) holds:

    model.onnx, model.card.json, classifier.npz   the servable model (export.py's format)
    reference_profile.json                        drift reference: pipeline features of train + validation images
    weights.pt                                    torch checkpoint, the starting point of the next fine-tune
    evaluation.json                               candidate and current on the held-out split
    metrics/                                      params.json + metrics.jsonl (model.metrics_log)

`<out>/<name>/latest.json` is written when a version is promoted, mirroring the container's pointer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.architectures import BuiltModel, Preprocessing, build_model, with_new_head
from model.evaluate import Predictions, summarise
from model.export import (
    CLASSIFIER_FILE,
    MAX_LOGIT_DIFF,
    ONNX_FILE,
    ExportMismatch,
    build_card,
    check_agreement,
    export_onnx,
    imagenet_categories,
    write_classifier_weights,
)
from model.training_data import Sample, load_image
from shared_code.errors import ImageRejected
from shared_code.inference.classifier import load_classifier
from shared_code.inference.model_card import CARD_SUFFIX, ModelCard, load_card, save_card
from shared_code.inference.pipeline import ClassificationPipeline
from shared_code.monitoring.drift import build_reference_profile, drift_row
from shared_code.monitoring.summary import PROFILE_FILE

WEIGHTS_FILE = "weights.pt"
EVALUATION_FILE = "evaluation.json"
LATEST_POINTER = "latest.json"  # same name as shared_code.inference.model_repository.LATEST_POINTER
CHECKPOINT_FORMAT = "imgclass.finetune-checkpoint/1"
DENSE_CONFUSION_MAX_CLASSES = 100
BATCH = 16


# --- checkpoints and starting weights ------------------------------------------------------------------
def preprocessing_of(card: ModelCard) -> Preprocessing:
    return Preprocessing(resize=card.resize_size, crop=card.crop_size, mean=card.mean, std=card.std,
                         interpolation=card.interpolation)


def save_checkpoint(built: BuiltModel, labels: Sequence[str], path: Path, base: str) -> None:
    torch.save({"format": CHECKPOINT_FORMAT, "architecture": built.architecture, "labels": list(labels),
                "preprocessing": dataclasses.asdict(built.preprocessing), "base": base,
                "state_dict": built.module.state_dict()}, path)


def load_checkpoint(path: Path, seed: int = 0) -> tuple[BuiltModel, list[str]]:
    """A network rebuilt from a training checkpoint, with the labels its head was trained for."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a fine-tuning checkpoint (format {checkpoint.get('format')!r})")
    labels = list(checkpoint["labels"])
    built = build_model(checkpoint["architecture"], "random", seed)
    if built.module.linear.out_features != len(labels):
        built = with_new_head(built, len(labels), seed)
    built.module.load_state_dict(checkpoint["state_dict"], strict=True)
    built.module.eval()
    prep = checkpoint["preprocessing"]
    preprocessing = Preprocessing(resize=prep["resize"], crop=prep["crop"], mean=tuple(prep["mean"]),
                                  std=tuple(prep["std"]), interpolation=prep["interpolation"])
    return BuiltModel(built.architecture, built.module, "finetuned", f"checkpoint {path}", preprocessing), labels


@dataclass(frozen=True)
class StartingPoint:
    built: BuiltModel
    labels: list[str]
    description: str


def starting_point(base: ModelCard, base_onnx: Path, seed: int = 0) -> StartingPoint:
    """weights.pt beside the base card when an earlier training left one, else the architecture's pretrained
    weights (`auto`: offline, ResNets fall back to EfficientNet-Lite0, whose own preprocessing then applies)."""
    checkpoint = base_onnx.parent / WEIGHTS_FILE
    if checkpoint.exists():
        built, labels = load_checkpoint(checkpoint, seed)
        return StartingPoint(built, labels, f"checkpoint of {base.model_id} ({checkpoint})")
    built = build_model(base.architecture, "auto", seed)
    if built.architecture == base.architecture:
        built = dataclasses.replace(built, preprocessing=preprocessing_of(base))
    return StartingPoint(built, imagenet_categories(), f"{built.architecture} {built.weights} weights ({built.source})")


def card_for_training(base: ModelCard, built: BuiltModel) -> ModelCard:
    """The base card with the starting network's preprocessing (they differ only after a fallback)."""
    prep = built.preprocessing
    return base.model_copy(update={"resize_size": prep.resize, "crop_size": prep.crop,
                                   "input_size": (prep.crop, prep.crop), "mean": prep.mean, "std": prep.std,
                                   "interpolation": prep.interpolation})


# --- export --------------------------------------------------------------------------------------------
def export_candidate(built: BuiltModel, labels: Sequence[str], folder: Path, name: str, version: str, *,
                     source: str, check_samples: Sequence[Sample], base_id: str) -> Path:
    """ONNX (logits + features), classifier.npz, card with `labels`, agreement check, weights.pt."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / ONNX_FILE
    built.module.eval()
    export_onnx(built, onnx_path)
    write_classifier_weights(built, folder / CLASSIFIER_FILE)
    card = build_card(built, onnx_path, name, version).model_copy(
        update={"labels": list(labels), "weights": "finetuned", "source": source})
    card_path = save_card(ModelCard.model_validate(card.model_dump()), onnx_path)
    prep_card = load_card(card_path)[0]
    agreement = check_agreement(built, card_path, [load_image(s.path, prep_card) for s in check_samples[:4]])
    print(f"onnx vs torch on {agreement.images} images: max |logit diff| {agreement.max_logit_diff:.2e}, "
          f"same top-1: {agreement.same_top1}", flush=True)
    if agreement.max_logit_diff > MAX_LOGIT_DIFF or not agreement.same_top1:
        raise ExportMismatch(f"ONNX export of {name}:{version} disagrees with torch: {agreement}")
    save_checkpoint(built, labels, folder / WEIGHTS_FILE, base_id)
    return card_path


# --- measuring through the serving pipeline ------------------------------------------------------------
@dataclass(frozen=True)
class PipelineRun:
    predictions: Predictions
    rows: list[dict[str, Any]]


def run_pipeline(card_path: Path, samples: Sequence[Sample], labels: Sequence[str]) -> PipelineRun:
    """Classify the samples' bytes as serving does: top-5 indices and drift rows (true label known)."""
    pipeline = ClassificationPipeline(load_classifier(card_path))
    k = min(5, pipeline.card.num_classes)
    top, rows = [], []
    started = time.perf_counter()
    for start in range(0, len(samples), BATCH):
        chunk = samples[start:start + BATCH]
        outcomes = pipeline.classify_many([s.path.read_bytes() for s in chunk], top_k=k)
        if len(outcomes) != len(chunk) or any(isinstance(o, ImageRejected) for o in outcomes):
            rejected = [f"{s.path}: {o}" for s, o in zip(chunk, outcomes, strict=False) if isinstance(o, Exception)]
            raise ValueError(f"the serving pipeline rejected training images: {'; '.join(rejected[:3])}")
        for sample, outcome in zip(chunk, outcomes, strict=True):
            assert not isinstance(outcome, ImageRejected)
            top.append([p.class_index for p in outcome.predictions])
            rows.append(drift_row(outcome.features.to_dict(), outcome.predictions[0].label,
                                  known_label=labels[sample.class_index]))
    predictions = Predictions(truth=np.array([s.class_index for s in samples], dtype=np.int64),
                              top5=np.array(top, dtype=np.int64), seconds=time.perf_counter() - started)
    return PipelineRun(predictions, rows)


def report(predictions: Predictions, labels: Sequence[str]) -> dict[str, Any]:
    """model.evaluate's summary (accuracy = top-1) plus a dense confusion matrix for small label sets."""
    summary = summarise(predictions, labels)
    summary["accuracy"] = summary["top1"]
    if len(labels) <= DENSE_CONFUSION_MAX_CLASSES:
        matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
        for truth, predicted, count in summary["confusion"]:
            matrix[truth, predicted] = count
        summary["confusion_matrix"] = {"rows": "true class", "columns": "predicted class", "labels": list(labels),
                                       "counts": matrix.tolist()}
    return summary


def majority_baseline(train: Sequence[Sample], validation: Sequence[Sample], labels: Sequence[str]
                      ) -> dict[str, Any]:
    """Always predicting the training split's most frequent class (lowest index on ties)."""
    counts = np.bincount([s.class_index for s in train], minlength=len(labels))
    majority = int(np.argmax(counts))
    truth = np.array([s.class_index for s in validation], dtype=np.int64)
    top = np.full((len(validation), 1), majority, dtype=np.int64)
    summary = report(Predictions(truth, top, 0.0), labels)
    return {**summary, "majority_class": labels[majority]}


def write_reference_profile(card_path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """reference_profile.json beside the card (named relative to it, as shared_code.monitoring.drift resolves it)."""
    card, _ = load_card(card_path)
    profile = build_reference_profile(rows, model=card)
    target = card_path.parent / PROFILE_FILE
    target.write_text(json.dumps(profile, separators=(",", ":")), encoding="utf-8")
    save_card(card.model_copy(update={"reference_profile_file": PROFILE_FILE}), card_path.parent / card.onnx_file)
    return target


# --- which model is current ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Current:
    """What the candidate is compared with: a model card, or (card None) the majority-class baseline."""

    card_path: Path | None
    description: str


def local_versions(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.glob("*") if p.is_dir() and p.name.isdigit()) if folder.exists() else []


def read_local_latest(folder: Path) -> str | None:
    pointer = folder / LATEST_POINTER
    if not pointer.exists():
        return None
    return str(json.loads(pointer.read_text(encoding="utf-8"))["version"])


def write_local_latest(folder: Path, version: str, sha256: str) -> Path:
    pointer = folder / LATEST_POINTER
    pointer.write_text(json.dumps({"version": version, "sha256": sha256}) + "\n", encoding="utf-8")
    return pointer


def _labels_of(card_path: Path) -> list[str] | None:
    try:
        return load_card(card_path)[0].labels
    except (OSError, ValueError):
        return None


def resolve_current(*, labels: Sequence[str], base_card: Path, name_folder: Path, version: str,
                    promoted_card: Path | None) -> Current:
    """The promoted version of this name, else the base card, else the highest earlier local version -- the
    first whose labels equal the candidate's -- else the majority-class baseline."""
    wanted = list(labels)
    options: list[tuple[Path, str]] = []
    if promoted_card is not None:
        options.append((promoted_card, "promoted version in the models container"))
    local_latest = read_local_latest(name_folder)
    if local_latest is not None and local_latest != version:
        options.append((name_folder / local_latest / f"model{CARD_SUFFIX}", f"promoted local version {local_latest}"))
    options.append((base_card, "base card"))
    earlier = [v for v in local_versions(name_folder) if str(v) != version]
    options += [(name_folder / str(v) / f"model{CARD_SUFFIX}", f"earlier local version {v}") for v in reversed(earlier)]
    for card_path, why in options:
        if card_path.exists() and _labels_of(card_path) == wanted:
            card, _ = load_card(card_path)
            return Current(card_path, f"{card.model_id} ({why})")
    return Current(None, "majority-class baseline (no earlier model with these labels)")


# --- publishing ----------------------------------------------------------------------------------------
def blob_service(connection_string: str | None, account_url: str | None) -> Any:
    """A BlobServiceClient from a connection string, or an account URL with DefaultAzureCredential
    (managed identity; AZURE_CLIENT_ID selects a user-assigned one)."""
    from azure.storage.blob import BlobServiceClient  # noqa: PLC0415 - only when publishing

    if connection_string:
        return BlobServiceClient.from_connection_string(connection_string)
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415

    credential = DefaultAzureCredential(managed_identity_client_id=os.environ.get("AZURE_CLIENT_ID") or None)
    return BlobServiceClient(account_url or "", credential=credential)


class Publisher:
    """The models container, through shared_code's BlobModelRepository."""

    def __init__(self, service: Any, container: str) -> None:
        from azure.core.exceptions import ResourceExistsError  # noqa: PLC0415

        from shared_code.inference.model_repository import BlobModelRepository  # noqa: PLC0415

        self.cache = Path(tempfile.mkdtemp(prefix="imgclass-train-models-"))
        self.repository = BlobModelRepository(service, container, self.cache)
        with contextlib.suppress(ResourceExistsError):  # the container usually exists already
            self.repository.container.create_container()

    def versions(self, name: str) -> list[int]:
        pattern = re.compile(rf"^{re.escape(name)}/(\d+)/")
        found = set()
        for blob in self.repository.container.list_blobs(name_starts_with=f"{name}/"):
            match = pattern.match(blob.name)
            if match:
                found.add(int(match.group(1)))
        return sorted(found)

    def promoted_card(self, name: str) -> Path | None:
        from shared_code.errors import ModelUnavailable  # noqa: PLC0415

        try:
            return self.repository.fetch(name, self.repository.latest_version(name))
        except ModelUnavailable:
            return None

    def publish(self, name: str, version: str, folder: Path, *, promote: bool) -> None:
        self.repository.publish(name, version, folder, promote=promote)

    def upload(self, name: str, version: str, path: Path) -> None:
        """One file of a published version again (its evaluation.json after the promotion outcome changed)."""
        with path.open("rb") as handle:
            self.repository.container.upload_blob(f"{name}/{version}/{path.name}", handle, overwrite=True)

    def promote(self, name: str, version: str, sha256: str) -> str | None:
        """Move `latest.json` to the version (automatic promotion); None when moved, else why not.

        The one conditional, forward-only pointer write (`advance_pointer`, which the approval route uses too):
        two runs finishing out of order never put the older version back.
        """
        from shared_code.inference.model_repository import advance_pointer  # noqa: PLC0415 - only when publishing

        moved, current = advance_pointer(self.repository.container, name, version, {
            "sha256": sha256, "approved_by": "automatic",
            "approved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return None if moved else f"version {current} is already promoted and not older than {version}"

    def close(self) -> None:
        """Drop the downloaded copy of the promoted version."""
        shutil.rmtree(self.cache, ignore_errors=True)

