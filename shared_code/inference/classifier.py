"""One cached onnxruntime session per model version, with batch inference and top-k.

Thread settings are chosen for a small Functions instance: one inter-op thread (the graphs are a chain,
parallel branches buy nothing), intra-op threads = the cores this process may use, and no spin-waiting
between runs, so the decode of the next request is not starved by idle ORT workers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from shared_code.errors import ModelUnavailable
from shared_code.inference.model_card import ModelCard, load_card, sha256_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOutputs:
    """Raw outputs of one batch: logits [N, classes] and the optional feature map [N, C, h, w]."""

    logits: np.ndarray
    features: np.ndarray | None
    inference_ms: float


@dataclass(frozen=True)
class Prediction:
    label: str
    class_index: int
    score: float


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def session_options(intra_op_threads: int = 0) -> ort.SessionOptions:
    """The session settings used everywhere (serving, benchmark, evaluation)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = intra_op_threads or available_cores()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    shifted: np.ndarray = logits - logits.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


class Classifier:
    """An ONNX classifier described by its model card."""

    def __init__(self, card: ModelCard, onnx_path: Path, intra_op_threads: int = 0) -> None:
        self.card = card
        self.onnx_path = onnx_path
        try:
            self.session = ort.InferenceSession(
                str(onnx_path), sess_options=session_options(intra_op_threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelUnavailable(f"cannot load model {card.model_id}: {exc}") from exc
        output_names = {o.name for o in self.session.get_outputs()}
        if card.output_name not in output_names:
            raise ModelUnavailable(f"model has no output {card.output_name!r} (has {sorted(output_names)})")
        self._outputs = [card.output_name]
        if card.feature_output_name and card.feature_output_name in output_names:
            self._outputs.append(card.feature_output_name)

    @property
    def has_features(self) -> bool:
        return len(self._outputs) > 1

    def run(self, batch: np.ndarray) -> ModelOutputs:
        """Run one batch (N, ...) through the network."""
        started = time.perf_counter()
        outputs = self.session.run(self._outputs, {self.card.input_name: batch})
        elapsed = (time.perf_counter() - started) * 1000.0
        logits = np.asarray(outputs[0], dtype=np.float32)
        if logits.shape[-1] != self.card.num_classes:
            raise ModelUnavailable(
                f"model returned {logits.shape[-1]} classes but its card lists {self.card.num_classes} labels"
            )
        features = np.asarray(outputs[1], dtype=np.float32) if len(outputs) > 1 else None
        return ModelOutputs(logits=logits, features=features, inference_ms=elapsed)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return np.array(logits, dtype=np.float32) if self.card.outputs_are == "probabilities" else softmax(
            np.array(logits, dtype=np.float32)
        )

    def top_k(self, probabilities: np.ndarray, k: int) -> list[Prediction]:
        """The k most likely classes of one image, best first."""
        k = max(1, min(k, probabilities.shape[-1]))
        candidates = np.argpartition(-probabilities, k - 1)[:k]
        ordered = candidates[np.argsort(-probabilities[candidates], kind="stable")]
        return [Prediction(self.card.labels[i], int(i), float(probabilities[i])) for i in ordered]


_cache: dict[str, Classifier] = {}
_cache_lock = threading.Lock()


def evict_classifier(classifier: Classifier) -> None:
    """Forget a superseded classifier: its session is freed once the requests still using it finish."""
    with _cache_lock:
        for key in [key for key, cached in _cache.items() if cached is classifier]:
            del _cache[key]


def load_classifier(path: Path, *, intra_op_threads: int = 0, verify_sha256: bool = True) -> Classifier:
    """Load (once per model version and content hash) the classifier a card or ONNX file describes."""
    try:
        card, onnx_path = load_card(Path(path))
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"cannot read model card for {path}: {exc}") from exc
    key = f"{card.model_id}:{onnx_path.resolve()}:{intra_op_threads}"
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        if not onnx_path.exists():
            raise ModelUnavailable(f"model file {onnx_path} is missing")
        if verify_sha256 and sha256_of(onnx_path) != card.sha256:
            raise ModelUnavailable(f"model file {onnx_path.name} does not match the sha256 in its card")
        started = time.perf_counter()
        classifier = Classifier(card, onnx_path, intra_op_threads)
        logger.info("loaded model %s in %.0f ms", card.model_id, (time.perf_counter() - started) * 1000.0)
        _cache[key] = classifier
        return classifier
