"""Inference backends behind one interface: ONNX Runtime (portable default) and OpenVINO (Intel CPUs).

Both run the same ONNX file and return the same named outputs (logits and, when the card names one, the
feature map that explanations and drift use). Each offers two entry points:
  * `infer(batch)`: the float32 network input as preprocessing writes it (benchmarks, tools);
  * `infer_crops(crops)`: the uint8 HWC centre crops the pipeline holds. ONNX Runtime normalises them in
    place of a copy (one fused multiply-add per channel into the input buffer); OpenVINO folds the
    normalisation, the uint8->float conversion and the HWC->CHW transpose into the compiled graph
    (PrePostProcessor), so the serving path never materialises a float image in Python.

Choosing (`INFERENCE_BACKEND=auto`) is a capability check, not a timing probe: a probe would compile the
model twice on every cold start. The rule is the measured one (docs/benchmark.md, `make bench`): OpenVINO's
CPU plugin beats ONNX Runtime by ~1.5-2x on int8 QDQ graphs where the CPU has VNNI/AMX int8 dot products,
and on fp32 graphs only when it may run them in bf16 (AMX/AVX-512 BF16), which is allowed only for a model
whose card records a measured bf16 top-1 parity (`metrics.bf16_top1_delta`, written by
`python -m model.evaluate --record-bf16-parity`). Everything else runs on ONNX Runtime, as does any model
OpenVINO fails to compile (logged, reported as the backend actually used).

ONNX Runtime's OpenVINO execution provider was not used: it ships as a separate wheel (onnxruntime-openvino)
that replaces the onnxruntime package rather than installing beside it, so the portable fallback would be lost.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from shared_code.errors import ModelUnavailable
from shared_code.inference.model_card import ModelCard

logger = logging.getLogger(__name__)

BackendName = Literal["onnxruntime", "openvino"]
BackendSetting = Literal["auto", "onnxruntime", "openvino"]
BACKEND_SETTINGS: tuple[BackendSetting, ...] = ("auto", "onnxruntime", "openvino")
BF16_PARITY_METRIC = "bf16_top1_delta"
BF16_MAX_TOP1_DROP = 0.005  # 0.5 point of top-1 on the shared photos, the project's accuracy budget
_INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


class Backend(Protocol):
    """What the classifier needs from an inference engine."""

    name: BackendName
    precision: str  # the arithmetic actually used: fp32, bf16, int8
    outputs: list[str]  # logits, then the feature map when the model has one

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs (logits first, then features if any) of a float32 network-input batch."""
        ...

    def infer_crops(self, crops: np.ndarray) -> list[np.ndarray]:
        """Outputs of a uint8 batch of centre crops [N, H, W, 3] (RGB)."""
        ...


@dataclass(frozen=True)
class BackendChoice:
    """Which backend serves a model, in which precision, and why (reported in health and telemetry)."""

    name: BackendName
    precision: str
    reason: str


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (empty where /proc/cpuinfo is unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@lru_cache(maxsize=1)
def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def bf16_allowed(card: ModelCard) -> bool:
    """An fp32 model may run in bf16 only with a recorded top-1 parity within the accuracy budget."""
    delta = card.metrics.get(BF16_PARITY_METRIC)
    return card.precision == "fp32" and delta is not None and delta >= -BF16_MAX_TOP1_DROP


def choose_backend(requested: str, card: ModelCard, flags: frozenset[str], openvino_present: bool) -> BackendChoice:
    """The backend (and precision) for `card` under the INFERENCE_BACKEND setting `requested`.

    `openvino-bf16` / `openvino-f32` (not settings: the evaluation and benchmark tools') force the precision of
    an fp32 model, to measure the parity that later allows bf16, and f32 beside it.
    """
    int8 = card.precision.startswith("int8")
    if requested in ("openvino-bf16", "openvino-f32"):
        if not openvino_present:
            raise ModelUnavailable(f"{requested} needs the openvino package")
        forced = "bf16" if requested == "openvino-bf16" and card.precision == "fp32" else None
        return BackendChoice("openvino", forced or ("int8" if int8 else "fp32"), f"forced {requested} (measurement)")
    if requested not in BACKEND_SETTINGS:
        raise ModelUnavailable(f"INFERENCE_BACKEND={requested!r}; expected one of {', '.join(BACKEND_SETTINGS)}")
    bf16 = bf16_allowed(card) and bool(flags & _BF16_FLAGS)
    if requested == "onnxruntime":
        return BackendChoice("onnxruntime", "int8" if int8 else "fp32", "INFERENCE_BACKEND=onnxruntime")
    if requested == "openvino":
        if not openvino_present:
            raise ModelUnavailable("INFERENCE_BACKEND=openvino but the openvino package is not installed")
        return BackendChoice("openvino", "int8" if int8 else ("bf16" if bf16 else "fp32"),
                             "INFERENCE_BACKEND=openvino")
    if not openvino_present:
        return BackendChoice("onnxruntime", "int8" if int8 else "fp32", "auto: openvino is not installed")
    if int8 and flags & _INT8_DOT_PRODUCT_FLAGS:
        return BackendChoice("openvino", "int8", "auto: int8 model and a CPU with int8 dot products (VNNI/AMX)")
    if bf16:
        return BackendChoice("openvino", "bf16", "auto: fp32 model with measured bf16 parity on a bf16 CPU")
    return BackendChoice("onnxruntime", "int8" if int8 else "fp32",
                         "auto: no faster path on this CPU for this model (OpenVINO f32 ~= ONNX Runtime)")


# --- ONNX Runtime -----------------------------------------------------------------------------------------
def served_outputs(card: ModelCard, available: Sequence[str]) -> list[str]:
    """The logits output (required) and the feature map (when the card names it and the graph has it)."""
    if card.output_name not in available:
        raise ModelUnavailable(f"model has no output {card.output_name!r} (has {sorted(available)})")
    features = card.feature_output_name
    return [card.output_name, *([features] if features and features in available else [])]


def session_options(intra_op_threads: int = 0) -> Any:
    """ONNX Runtime settings used everywhere (serving, benchmark, evaluation).

    One inter-op thread (the graphs are a chain), intra-op threads = the cores this process may use, and no
    spin-waiting between runs, so the decode of the next request is not starved by idle ORT workers.
    """
    import onnxruntime as ort  # noqa: PLC0415 - only the backend that runs pays for its import

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = intra_op_threads or available_cores()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OnnxRuntimeBackend:
    """ONNX Runtime's CPU execution provider; crops are normalised straight into the input buffer."""

    name: BackendName = "onnxruntime"

    def __init__(self, card: ModelCard, onnx_path: Path, threads: int = 0) -> None:
        import onnxruntime as ort  # noqa: PLC0415

        from shared_code.inference.preprocess import Normaliser  # noqa: PLC0415 - preprocess imports model_card only

        self.card = card
        self.precision = "int8" if card.precision.startswith("int8") else "fp32"
        self.session = ort.InferenceSession(str(onnx_path), sess_options=session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.outputs = served_outputs(card, [o.name for o in self.session.get_outputs()])
        self._normalise = Normaliser(card)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.session.run(self.outputs, {self.card.input_name: batch})]

    def infer_crops(self, crops: np.ndarray) -> list[np.ndarray]:
        return self.infer(self._normalise.batch(crops))


# --- OpenVINO ---------------------------------------------------------------------------------------------
class OpenVinoBackend:
    """OpenVINO's CPU plugin, latency mode (one stream using every core), a small pool of infer requests.

    An infer request is not thread-safe, so each call borrows one from a pool; `infer` releases the GIL, so
    while one request runs, other threads decode, write results and answer HTTP. Two requests let a second
    call wait inside OpenVINO rather than in Python. Outputs are copied out before the request is returned
    to the pool (the next inference overwrites its buffers).
    """

    name: BackendName = "openvino"

    def __init__(self, card: ModelCard, onnx_path: Path, *, precision: str, threads: int = 0,
                 requests: int = 2) -> None:
        import openvino as ov  # noqa: PLC0415 - optional: installed where it pays (Intel CPUs)

        self.card = card
        self.precision = precision
        self._onnx_path = onnx_path
        self._threads = threads or available_cores()
        self._core = ov.Core()
        self._config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self._threads,
                        "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                        "ENABLE_CPU_PINNING": False}
        network = self._core.read_model(str(onnx_path))
        self.outputs = served_outputs(card, [name for output in network.outputs for name in output.get_names()])
        crops_model = self._with_crop_input(network)
        self._crops = self._compile(crops_model, requests)
        self._float: tuple[Any, queue.SimpleQueue[Any]] | None = None  # compiled on first `infer` only
        self._float_lock = threading.Lock()

    def _compile(self, model: Any, requests: int) -> tuple[Any, queue.SimpleQueue[Any]]:
        compiled = self._core.compile_model(model, "CPU", self._config)
        pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(requests):
            pool.put(compiled.create_infer_request())
        return compiled, pool

    def _with_crop_input(self, model: Any) -> Any:
        """The same network taking uint8 NHWC RGB crops: convert, reorder, normalise inside the graph."""
        import openvino as ov  # noqa: PLC0415
        from openvino.preprocess import ColorFormat, PrePostProcessor  # noqa: PLC0415

        card = self.card
        ppp = PrePostProcessor(model)
        tensor = ppp.input(card.input_name).tensor()
        tensor.set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.RGB)
        ppp.input(card.input_name).model().set_layout(ov.Layout(card.layout))
        steps = ppp.input(card.input_name).preprocess()
        steps.convert_element_type(ov.Type.f32)
        if card.channel_order == "BGR":
            steps.convert_color(ColorFormat.BGR)
        # x * scale / std - mean / std == (x - mean / scale) / (std / scale)
        steps.mean([m / card.scale for m in card.mean]).scale([s / card.scale for s in card.std])
        return ppp.build()

    def _run(self, compiled_pool: tuple[Any, queue.SimpleQueue[Any]], data: np.ndarray) -> list[np.ndarray]:
        compiled, pool = compiled_pool
        request = pool.get()
        try:
            request.infer({0: data})
            return [np.array(request.get_tensor(compiled.output(name)).data) for name in self.outputs]
        finally:
            pool.put(request)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._float is None:
            with self._float_lock:
                if self._float is None:
                    self._float = self._compile(self._core.read_model(str(self._onnx_path)), 2)
        return self._run(self._float, np.ascontiguousarray(batch, dtype=np.float32))

    def infer_crops(self, crops: np.ndarray) -> list[np.ndarray]:
        return self._run(self._crops, np.ascontiguousarray(crops, dtype=np.uint8))


def open_backend(card: ModelCard, onnx_path: Path, choice: BackendChoice, threads: int = 0
                 ) -> tuple[Backend, BackendChoice]:
    """Build the chosen backend; an OpenVINO failure under `auto` falls back to ONNX Runtime."""
    started = time.perf_counter()
    if choice.name == "openvino":
        try:
            backend: Backend = OpenVinoBackend(card, onnx_path, precision=choice.precision, threads=threads)
        except Exception as exc:  # openvino raises its own untyped errors
            if not choice.reason.startswith("auto"):
                raise ModelUnavailable(f"OpenVINO cannot compile model {card.model_id}: {exc}") from exc
            logger.warning("OpenVINO cannot compile %s (%s); falling back to ONNX Runtime", card.model_id, exc)
            choice = BackendChoice("onnxruntime", "int8" if card.precision.startswith("int8") else "fp32",
                                   f"auto: OpenVINO failed to compile ({type(exc).__name__})")
        else:
            logger.info("model %s on OpenVINO %s in %.0f ms", card.model_id, choice.precision,
                        (time.perf_counter() - started) * 1000.0)
            return backend, choice
    try:
        backend = OnnxRuntimeBackend(card, onnx_path, threads)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelUnavailable(f"cannot load model {card.model_id}: {exc}") from exc
    return backend, choice
