"""Evaluate an ONNX classifier on a labelled image folder through the serving path (no torch).

    python -m model.evaluate --model CARD_OR_ONNX --data DIR [--out metrics.json]

DIR holds a `labels.csv` (filename,class_index[,synset,label]) or one subfolder per class named like
the label. The last line printed is one JSON object with at least n, top1 and top5 (fractions).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.card import ensure_card
from model.dataset import LabelledImage, labelled_images
from shared_code.inference.classifier import Classifier, load_classifier
from shared_code.inference.pipeline import ClassificationPipeline
from shared_code.inference.preprocess import preprocess_batch

BATCH_SIZE = 16


@dataclass(frozen=True)
class Predictions:
    """True classes and the five best predicted classes of every image, in dataset order."""

    truth: np.ndarray
    top5: np.ndarray
    seconds: float


def predict(classifier: Classifier, items: Sequence[LabelledImage], batch_size: int = BATCH_SIZE) -> Predictions:
    """Decode, preprocess (from the card) and classify every image; return the top-5 indices."""
    rows = []
    pipeline = ClassificationPipeline(classifier)  # decode exactly as the service does (same JPEG draft rule)
    started = time.perf_counter()
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        batch = preprocess_batch([pipeline.decode(item.path.read_bytes()).image for item in chunk], classifier.card)
        logits = classifier.run(batch).logits
        k = min(5, logits.shape[1])
        rows.append(np.argsort(-logits, axis=1, kind="stable")[:, :k])
    return Predictions(
        truth=np.array([item.class_index for item in items], dtype=np.int64),
        top5=np.concatenate(rows),
        seconds=time.perf_counter() - started,
    )


def per_class_metrics(truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Precision, recall and F1 of every class that occurs as truth or prediction."""
    metrics = []
    for index in sorted(set(truth.tolist()) | set(predicted.tolist())):
        true_positive = int(np.sum((truth == index) & (predicted == index)))
        support = int(np.sum(truth == index))
        predicted_count = int(np.sum(predicted == index))
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        metrics.append({"class_index": index, "label": labels[index], "support": support,
                        "predicted": predicted_count, "precision": round(precision, 4), "recall": round(recall, 4),
                        "f1": round(f1, 4)})
    return metrics


def summarise(predictions: Predictions, labels: Sequence[str]) -> dict[str, Any]:
    """Top-1/top-5, per-class metrics, macro F1 over classes with support, and a sparse confusion matrix."""
    truth, top5 = predictions.truth, predictions.top5
    top1 = top5[:, 0]
    per_class = per_class_metrics(truth, top1, labels)
    supported = [m["f1"] for m in per_class if m["support"]]
    confusion = Counter(zip(truth.tolist(), top1.tolist(), strict=True))
    return {
        "n": len(truth),
        "top1": round(float(np.mean(top1 == truth)), 4),
        "top5": round(float(np.mean((top5 == truth[:, None]).any(axis=1))), 4),
        "macro_f1": round(float(np.mean(supported)), 4) if supported else 0.0,
        "images_per_s": round(len(truth) / predictions.seconds, 1) if predictions.seconds else 0.0,
        "per_class": per_class,
        "confusion": [[t, p, c] for (t, p), c in sorted(confusion.items())],
    }


def evaluate(model_path: Path, data: Path, intra_op_threads: int = 0) -> dict[str, Any]:
    """Evaluate a card (or bare ImageNet ONNX) on a labelled folder; return the full report."""
    card_path = ensure_card(model_path)
    classifier = load_classifier(card_path, intra_op_threads=intra_op_threads)
    items = labelled_images(data, classifier.card.labels)
    report = summarise(predict(classifier, items), classifier.card.labels)
    card = classifier.card
    model = {"name": card.name, "version": card.version, "precision": card.precision, "sha256": card.sha256,
             "card": str(card_path)}
    return {"model": model, "data": str(data), **report}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model card, or an ONNX file")
    parser.add_argument("--data", type=Path, required=True, help="folder with labels.csv or class subfolders")
    parser.add_argument("--out", type=Path, help="write the full report (per class, confusion) here")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (default: all cores)")
    args = parser.parse_args(argv)
    report = evaluate(args.model, args.data, args.threads)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    summary = {key: report[key] for key in ("n", "top1", "top5", "macro_f1", "images_per_s")}
    print(json.dumps({**summary, "model": f"{report['model']['name']}:{report['model']['version']}"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
