"""Inference backends: the choice rule, ONNX Runtime and OpenVINO agreeing on a real tiny model, the fallback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared_code.errors import ModelUnavailable
from shared_code.inference import backends
from shared_code.inference.backends import BF16_PARITY_METRIC, choose_backend, openvino_installed
from shared_code.inference.classifier import Classifier, load_classifier
from shared_code.inference.model_card import ModelCard, load_card
from shared_code.inference.pipeline import ClassificationPipeline
from shared_code.inference.preprocess import Normaliser
from tests.factories import image_bytes, make_tiny_model

pytestmark = pytest.mark.unit
needs_openvino = pytest.mark.skipif(not openvino_installed(), reason="openvino is not installed")
AMX = frozenset({"avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16", "avx512_bf16"})
AVX2 = frozenset({"avx2", "fma"})
ROOT = Path(__file__).resolve().parents[3]
ROOT_ARTIFACTS = ROOT / "model" / "artifacts"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-backends"))


def card_of(path: Path, **update: object) -> ModelCard:
    card, _ = load_card(path)
    return card.model_copy(update=update)


def test_auto_takes_openvino_for_int8_only_with_int8_dot_products(tiny: Path) -> None:
    int8 = card_of(tiny, precision="int8-qdq-static")
    assert choose_backend("auto", int8, AMX, True).name == "openvino"
    assert choose_backend("auto", int8, AVX2, True).name == "onnxruntime"
    assert choose_backend("auto", int8, AMX, False).name == "onnxruntime"  # not installed: ONNX Runtime
    assert "not installed" in choose_backend("auto", int8, AMX, False).reason


def test_bf16_needs_a_recorded_parity_within_half_a_point(tiny: Path) -> None:
    plain = card_of(tiny)
    assert choose_backend("auto", plain, AMX, True).name == "onnxruntime"  # fp32, no parity measured
    close = card_of(tiny, metrics={BF16_PARITY_METRIC: -0.004})
    assert choose_backend("auto", close, AMX, True).precision == "bf16"
    assert choose_backend("auto", close, AVX2, True).name == "onnxruntime"  # no bf16 in this CPU
    far = card_of(tiny, metrics={BF16_PARITY_METRIC: -0.02})
    assert choose_backend("auto", far, AMX, True).name == "onnxruntime"
    assert choose_backend("openvino", far, AMX, True).precision == "fp32"  # explicit openvino: still f32


def test_explicit_settings_are_obeyed_or_refused(tiny: Path) -> None:
    card = card_of(tiny, precision="int8-qdq-static")
    assert choose_backend("onnxruntime", card, AMX, True).name == "onnxruntime"
    with pytest.raises(ModelUnavailable, match="not installed"):
        choose_backend("openvino", card, AMX, False)
    with pytest.raises(ModelUnavailable, match="INFERENCE_BACKEND"):
        choose_backend("tensorrt", card, AMX, True)


@needs_openvino
def test_both_backends_give_the_same_logits_and_features(tiny: Path) -> None:
    ort = load_classifier(tiny, backend="onnxruntime")
    ov = load_classifier(tiny, backend="openvino")
    assert (ort.backend_label, ov.backend_label) == ("onnxruntime-fp32", "openvino-fp32")
    assert ov.has_features and ort.has_features
    crops = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = ort.run(Normaliser(ort.card)(list(crops)))
    for outputs in (ov.run_crops(crops), ov.run(Normaliser(ov.card)(list(crops))), ort.run_crops(crops)):
        np.testing.assert_allclose(outputs.logits, expected.logits, atol=1e-4)
        assert outputs.features is not None and expected.features is not None
        np.testing.assert_allclose(outputs.features, expected.features, atol=1e-4)


@needs_openvino
def test_pipeline_on_openvino_classifies_and_reports_the_backend(tiny: Path) -> None:
    pipeline = ClassificationPipeline(load_classifier(tiny, backend="openvino"))
    result = pipeline.classify_bytes(image_bytes("JPEG", size=(50, 40), color=(230, 20, 20)), top_k=2)
    assert result.predictions[0].label == "red"
    assert result.backend == "openvino-fp32"
    assert len(result.features.embedding) == 32


def test_auto_falls_back_to_onnxruntime_when_openvino_cannot_compile(tiny: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no CPU plugin")

    monkeypatch.setattr(backends, "OpenVinoBackend", broken)
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    card, onnx_path = load_card(tiny)
    choice = backends.BackendChoice("openvino", "int8", "auto: int8 model and a CPU with int8 dot products")
    backend, used = backends.open_backend(card, onnx_path, choice)
    assert backend.name == "onnxruntime" and used.name == "onnxruntime"
    assert "failed to compile" in used.reason
    with pytest.raises(ModelUnavailable, match="OpenVINO cannot compile"):
        backends.open_backend(card, onnx_path, backends.BackendChoice("openvino", "fp32", "INFERENCE_BACKEND=openvino"))


def test_classifiers_are_cached_per_backend_setting(tiny: Path) -> None:
    first = load_classifier(tiny, backend="onnxruntime")
    assert load_classifier(tiny, backend="onnxruntime") is first
    auto = load_classifier(tiny, backend="auto")
    assert isinstance(auto, Classifier) and auto is not first


def test_large_jpeg_decodes_at_the_smallest_dct_scale_keeping_the_resize_target(tiny: Path) -> None:
    pipeline = ClassificationPipeline(load_classifier(tiny))  # resize target 36
    buffer = io.BytesIO()
    Image.new("RGB", (400, 300), (200, 30, 30)).save(buffer, format="JPEG", quality=90)
    decoded = pipeline.decode(buffer.getvalue())
    assert decoded.image.size == (50, 38)  # 1/8: short side 38 >= 36 (1/16 does not exist; 1/4 would be 75)
    buffer = io.BytesIO()
    Image.new("RGB", (280, 140), (200, 30, 30)).save(buffer, format="JPEG", quality=90)
    assert pipeline.decode(buffer.getvalue()).image.size == (140, 70)  # 1/2: 1/4 would leave 35 < 36


@needs_openvino
def test_auto_quick_start_serves_on_onnxruntime_until_openvino_is_compiled(
        tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared_code.inference import classifier as classifier_module  # noqa: PLC0415

    gate = threading.Event()
    real_open = backends.open_backend

    def gated(card: ModelCard, onnx_path: Path, choice: backends.BackendChoice, threads: int = 0
              ) -> tuple[backends.Backend, backends.BackendChoice]:
        if choice.name == "openvino":
            assert gate.wait(30)
        return real_open(card, onnx_path, choice, threads)

    monkeypatch.setattr(classifier_module, "open_backend", gated)
    monkeypatch.setattr(classifier_module, "choose_backend",
                        lambda *args: backends.BackendChoice("openvino", "fp32", "auto: test"))
    card, onnx_path = load_card(tiny)
    quick = Classifier(card, onnx_path, backend="auto")
    pipeline = ClassificationPipeline(quick)
    red = image_bytes("PNG", size=(50, 40), color=(230, 20, 20))
    first = pipeline.classify_bytes(red)
    assert first.backend == "onnxruntime-fp32" and not quick.ready.is_set()
    assert "quick start" in quick.choice.reason
    gate.set()
    assert quick.wait_ready(30)
    assert quick.backend_label == "openvino-fp32"
    second = pipeline.classify_bytes(red)
    assert second.backend == "openvino-fp32"
    assert second.predictions[0].label == first.predictions[0].label == "red"
    assert second.predictions[0].score == pytest.approx(first.predictions[0].score, abs=1e-4)


INT8_CARDS = [ROOT_ARTIFACTS / "resnet50" / "1-int8" / "model.card.json",
              ROOT_ARTIFACTS / "efficientnet_lite0" / "1-int8" / "model.card.json"]
EXIT_WHILE_COMPILING = """
import sys, time
from pathlib import Path
import numpy as np
from shared_code.inference.classifier import load_classifier
classifier = load_classifier(Path(sys.argv[1]), backend="auto")
assert classifier._pending is not None, classifier.choice  # the quick start: OpenVINO compiles after this run
classifier.run_crops(np.zeros((1, *classifier.card.input_size, 3), np.uint8))
time.sleep(float(sys.argv[2]))  # then leave while the compile runs
"""


@needs_openvino
def test_a_worker_leaving_while_openvino_compiles_exits_cleanly() -> None:
    """The background compile was a daemon thread: exiting mid-compile aborted the process (SIGABRT, -6)."""
    card = next((path for path in INT8_CARDS if path.exists()), None)
    if card is None:
        pytest.skip("no int8 model in model/artifacts (make bench quantizes them)")
    if not {"avx512_vnni", "amx_int8", "avx_vnni"} & backends.cpu_flags():
        pytest.skip("auto picks OpenVINO only on CPUs with int8 dot products")
    codes = [subprocess.run([sys.executable, "-c", EXIT_WHILE_COMPILING, str(card), str(delay)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=120, check=False).returncode for delay in (0.1, 0.2, 0.3, 0.4, 0.5)]
    assert codes == [0] * 5
