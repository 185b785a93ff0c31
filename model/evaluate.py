"""Evaluate an ONNX classifier on a labelled image folder through the serving path (no torch).

    python -m model.evaluate --model CARD_OR_ONNX --data DIR [--out metrics.json] [--backend openvino]
    python -m model.evaluate --model FP32_CARD --data DIR --record-bf16-parity

`--backend` is an INFERENCE_BACKEND value (default onnxruntime). `--record-bf16-parity` evaluates an fp32
model on ONNX Runtime fp32 and on OpenVINO bf16 and writes the top-1 change into the card's metrics
(`bf16_top1_delta`): only then may `auto` serve it in bf16.

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
from shared_code.inference.backends import BF16_MAX_TOP1_DROP, BF16_PARITY_METRIC
from shared_code.inference.classifier import Classifier, load_classifier
from shared_code.inference.model_card import load_card, save_card
from shared_code.inference.pipeline import ClassificationPipeline
from shared_code.inference.preprocess import resize_and_crop

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
        crops = np.stack([np.asarray(resize_and_crop(pipeline.decode(item.path.read_bytes()).image, classifier.card))
                          for item in chunk])
        logits = classifier.run_crops(crops).logits  # the serving entry point (normalisation per backend)
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


def evaluate(model_path: Path, data: Path, intra_op_threads: int = 0, backend: str = "onnxruntime") -> dict[str, Any]:
    """Evaluate a card (or bare ImageNet ONNX) on a labelled folder; return the full report."""
    card_path = ensure_card(model_path)
    classifier = load_classifier(card_path, intra_op_threads=intra_op_threads, backend=backend)
    classifier.wait_ready(300)  # `auto` may quick-start on ONNX Runtime: evaluate the engine that will serve
    items = labelled_images(data, classifier.card.labels)
    report = summarise(predict(classifier, items), classifier.card.labels)
    card = classifier.card
    model = {"name": card.name, "version": card.version, "precision": card.precision, "sha256": card.sha256,
             "card": str(card_path), "backend": classifier.backend_label}
    return {"model": model, "data": str(data), **report}


def record_bf16_parity(model_path: Path, data: Path, intra_op_threads: int = 0) -> dict[str, Any]:
    """Top-1 of fp32 (ONNX Runtime) and bf16 (OpenVINO) on `data`; the change goes into the card's metrics."""
    card_path = ensure_card(model_path)
    card, onnx_path = load_card(card_path)
    if card.precision != "fp32":
        raise SystemExit(f"{card_path}: bf16 parity applies to fp32 models, not {card.precision}")
    fp32 = evaluate(card_path, data, intra_op_threads, "onnxruntime")["top1"]
    bf16 = evaluate(card_path, data, intra_op_threads, "openvino-bf16")["top1"]
    delta = round(bf16 - fp32, 4)
    save_card(card.model_copy(update={"metrics": {**card.metrics, BF16_PARITY_METRIC: delta}}), onnx_path)
    return {"card": str(card_path), "fp32_top1": fp32, "bf16_top1": bf16, BF16_PARITY_METRIC: delta,
            "bf16_allowed": delta >= -BF16_MAX_TOP1_DROP, "data": str(data)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model card, or an ONNX file")
    parser.add_argument("--data", type=Path, required=True, help="folder with labels.csv or class subfolders")
    parser.add_argument("--out", type=Path, help="write the full report (per class, confusion) here")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    parser.add_argument("--backend", default="onnxruntime",
                        help="auto, onnxruntime, openvino (INFERENCE_BACKEND values), openvino-f32 or openvino-bf16")
    parser.add_argument("--record-bf16-parity", action="store_true",
                        help="fp32 model: measure OpenVINO bf16 against ONNX Runtime fp32 and record it in the card")
    args = parser.parse_args(argv)
    if args.record_bf16_parity:
        print(json.dumps(record_bf16_parity(args.model, args.data, args.threads)))
        return 0
    report = evaluate(args.model, args.data, args.threads, args.backend)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    summary = {key: report[key] for key in ("n", "top1", "top5", "macro_f1", "images_per_s")}
    print(json.dumps({**summary, "model": f"{report['model']['name']}:{report['model']['version']}",
                      "backend": report["model"]["backend"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
