"""One cached classifier per model version and backend, with batch inference and top-k.

The engine underneath (ONNX Runtime or OpenVINO) is chosen by `shared_code.inference.backends`; this module
only checks the model against its card and turns outputs into predictions.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared_code.errors import ModelUnavailable
from shared_code.inference.backends import (
    Backend,
    BackendChoice,
    available_cores,
    choose_backend,
    cpu_flags,
    open_backend,
    openvino_installed,
    session_options,
)
from shared_code.inference.batching import MicroBatcher
from shared_code.inference.model_card import ModelCard, load_card, sha256_of

logger = logging.getLogger(__name__)
__all__ = ["Classifier", "ModelOutputs", "Prediction", "available_cores", "load_classifier", "session_options",
           "softmax"]


@dataclass(frozen=True)
class ModelOutputs:
    """Raw outputs of one batch: logits [N, classes] and the optional feature map [N, C, h, w]."""

    logits: np.ndarray
    features: np.ndarray | None
    inference_ms: float
    backend: str = ""  # the engine that computed them, e.g. openvino-int8


@dataclass(frozen=True)
class Prediction:
    label: str
    class_index: int
    score: float


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    shifted: np.ndarray = logits - logits.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


class Classifier:
    """An ONNX classifier described by its model card, run by one backend."""

    def __init__(self, card: ModelCard, onnx_path: Path, intra_op_threads: int = 0,
                 backend: str = "onnxruntime", max_batch: int = 8) -> None:
        self.card = card
        self.onnx_path = onnx_path
        choice = choose_backend(backend, card, cpu_flags(), openvino_installed())
        # Concurrent calls that find the engine busy are combined into one batch (shared_code.inference.batching).
        self._batcher = MicroBatcher(self._infer_crops, max_batch=max_batch)
        self._pending_lock = threading.Lock()
        self.ready = threading.Event()  # set once the chosen backend serves (at once, except for a quick start)
        if choice.name == "openvino" and choice.reason.startswith("auto"):
            # Quick start: ONNX Runtime loads in a fraction of OpenVINO's compile time, so it answers the first
            # requests while OpenVINO compiles on another thread, started after the first inference so that the
            # compile does not compete with the first answer for the cores; the faster engine takes over when it
            # is ready (in-flight calls finish on the engine they started on). Cold start stays ONNX Runtime's.
            quick, _ = open_backend(card, onnx_path, BackendChoice("onnxruntime", choice.precision, "quick start"),
                                    intra_op_threads)
            self.backend: Backend = quick
            self.choice: BackendChoice = BackendChoice(
                "onnxruntime", quick.precision, "auto: ONNX Runtime while OpenVINO compiles (quick start)")
            self._pending: tuple[BackendChoice, int] | None = (choice, intra_op_threads)
        else:
            self._pending = None
            self.backend, self.choice = open_backend(card, onnx_path, choice, intra_op_threads)
            self.ready.set()

    def _switch_to(self, choice: BackendChoice, threads: int) -> None:
        try:
            started = time.perf_counter()
            backend, used = open_backend(self.card, self.onnx_path, choice, threads)
            if used.name == choice.name:
                self.backend, self.choice = backend, used
                logger.info("model %s switched to %s after %.0f ms of background compile", self.card.model_id,
                            self.backend_label, (time.perf_counter() - started) * 1000.0)
            else:
                self.choice = used  # the fallback reason; ONNX Runtime keeps serving
        except Exception as exc:  # the quick-start engine keeps serving; never crash the worker here
            logger.warning("model %s stays on ONNX Runtime: %s", self.card.model_id, exc)
        finally:
            self.ready.set()

    def _start_switch(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            # Not a daemon: interpreter exit waits for the compile (about a second). A daemon thread frozen inside
            # OpenVINO's C++ compile when the runtime tears down aborts the process ("terminate called without an
            # active exception", SIGABRT) instead of exiting.
            threading.Thread(target=self._switch_to, args=pending, name="backend-compile", daemon=False).start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait for the chosen backend (benchmarks and tests measure the engine that will serve)."""
        self._start_switch()
        return self.ready.wait(timeout)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def backend_label(self) -> str:
        """What health, result documents and telemetry report, e.g. `openvino-int8`, `onnxruntime-fp32`."""
        return f"{self.backend.name}-{self.backend.precision}"

    @property
    def has_features(self) -> bool:
        return len(self.backend.outputs) > 1

    def run(self, batch: np.ndarray) -> ModelOutputs:
        """Run one float32 network-input batch (N, ...) through the network."""
        backend = self.backend  # one engine per call, even if a quick start switches engines meanwhile
        started = time.perf_counter()
        outputs = backend.infer(batch)
        return self._outputs(outputs, (time.perf_counter() - started) * 1000.0, f"{backend.name}-{backend.precision}")

    def run_crops(self, crops: np.ndarray) -> ModelOutputs:
        """Run a uint8 batch of centre crops [N, H, W, 3]; normalisation is the backend's (in place or in graph)."""
        outputs, share_ms, label = self._batcher.run(crops)
        if self._pending is not None:
            self._start_switch()
        return self._outputs(outputs, share_ms, label)

    def warm_up(self, crops: np.ndarray) -> ModelOutputs:
        """Run `crops` on the serving engine outside the batcher and without starting a quick start's switch."""
        outputs, label = self._infer_crops(crops)
        return self._outputs(outputs, 0.0, label)

    def _infer_crops(self, crops: np.ndarray) -> tuple[list[np.ndarray], str]:
        backend = self.backend  # one engine per batch, even if a quick start switches engines meanwhile
        return backend.infer_crops(crops), f"{backend.name}-{backend.precision}"

    def _outputs(self, outputs: list[np.ndarray], elapsed_ms: float, backend: str) -> ModelOutputs:
        logits = np.asarray(outputs[0], dtype=np.float32)
        if logits.shape[-1] != self.card.num_classes:
            raise ModelUnavailable(
                f"model returned {logits.shape[-1]} classes but its card lists {self.card.num_classes} labels"
            )
        features = np.asarray(outputs[1], dtype=np.float32) if len(outputs) > 1 else None
        return ModelOutputs(logits=logits, features=features, inference_ms=elapsed_ms,
                            backend=backend)

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


def load_classifier(path: Path, *, intra_op_threads: int = 0, verify_sha256: bool = True,
                    backend: str = "onnxruntime") -> Classifier:
    """Load (once per model version, content hash and backend setting) the classifier a card or ONNX file describes.

    `backend` is an INFERENCE_BACKEND value; tools default to ONNX Runtime (reproducible figures), the service
    passes its setting (default `auto`).
    """
    try:
        card, onnx_path = load_card(Path(path))
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"cannot read model card for {path}: {exc}") from exc
    key = f"{card.model_id}:{onnx_path.resolve()}:{intra_op_threads}:{backend}"
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        if not onnx_path.exists():
            raise ModelUnavailable(f"model file {onnx_path} is missing")
        if verify_sha256 and sha256_of(onnx_path) != card.sha256:
            raise ModelUnavailable(f"model file {onnx_path.name} does not match the sha256 in its card")
        started = time.perf_counter()
        classifier = Classifier(card, onnx_path, intra_op_threads, backend)
        logger.info("loaded model %s on %s (%s) in %.0f ms", card.model_id, classifier.backend_label,
                    classifier.choice.reason, (time.perf_counter() - started) * 1000.0)
        _cache[key] = classifier
        return classifier
