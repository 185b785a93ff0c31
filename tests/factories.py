"""Small real artefacts for tests: a tiny ONNX classifier with a card, and images in every format."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from shared_code.inference.model_card import ModelCard, save_card, sha256_of

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_PHOTOS = SHARED / "imagenet-sample"
SHARED_MOBILENET = SHARED / "models" / "mobilenetv2-12-int8.onnx"
TINY_LABELS = ["dark", "red", "green", "blue"]


def make_tiny_model(folder: Path, *, version: str = "1", crop: int = 32, resize: int = 36) -> Path:
    """A 4-class ONNX model (1x1 conv -> features -> GAP -> linear) whose logits follow colour and brightness."""
    folder.mkdir(parents=True, exist_ok=True)
    conv_w = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    conv_w = np.concatenate([conv_w, -np.ones((1, 3, 1, 1), dtype=np.float32) / 3.0])  # 4th channel: darkness
    gemm_w = np.array([[0, 0, 0, 3], [4, -2, -2, 0], [-2, 4, -2, 0], [-2, -2, 4, 0]], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "conv_w"], ["features"]),
            helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "gemm_w", "gemm_b"], ["logits"], transB=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, crop, crop])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4, crop, crop]),
        ],
        [
            numpy_helper.from_array(conv_w, "conv_w"),
            numpy_helper.from_array(gemm_w, "gemm_w"),
            numpy_helper.from_array(np.zeros(4, dtype=np.float32), "gemm_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx_path = folder / "model.onnx"
    onnx.save(model, str(onnx_path))
    card = ModelCard(
        name="tiny", version=version, architecture="tiny-conv", weights="handmade", onnx_file="model.onnx",
        sha256=sha256_of(onnx_path), input_name="input", output_name="logits", feature_output_name="features",
        input_size=(crop, crop), resize_size=resize, crop_size=crop, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        labels=TINY_LABELS,
    )
    return save_card(card, onnx_path)


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48), color: object = (200, 30, 30),
                mode: str = "RGB", **save_args: object) -> bytes:
    """Encode a solid image in the given format."""
    image = Image.new(mode, size, color)  # type: ignore[arg-type]
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def with_classifier_weights(card_path: Path) -> Path:
    """Give a model made by `make_tiny_model` its classifier.npz (the Gemm weights), as export does, for CAM."""
    model = onnx.load(str(card_path.with_name("model.onnx")))
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    np.savez(card_path.with_name("classifier.npz"), W=weights["gemm_w"], b=weights["gemm_b"])
    card = ModelCard.model_validate_json(card_path.read_text(encoding="utf-8"))
    card_path.write_text(card.model_copy(update={"classifier_weights_file": "classifier.npz"}).to_json() + "\n",
                         encoding="utf-8")
    return card_path


def noisy_photo(rng: np.random.Generator, dim: float = 1.0) -> bytes:
    """A noisy colour field as PNG; `dim` < 1 darkens it like an underexposed camera."""
    base = rng.uniform(40, 220, 3)
    pixels = np.clip((base + rng.normal(0, 25, (48, 64, 3))) * dim, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def make_profiled_tiny_model(profiler_folder: Path, model_folder: Path, *, version: str, seed: int,
                             photos: int = 80) -> Path:
    """A tiny model whose card names a reference profile of `photos` normally lit noisy photos.

    Classifiers are cached per file, so the profile is made with an identical copy in `profiler_folder` and
    the served copy loads only its final card.
    """
    from shared_code.inference.classifier import load_classifier  # noqa: PLC0415 - drift helpers only where needed
    from shared_code.inference.model_card import load_card  # noqa: PLC0415
    from shared_code.inference.pipeline import ClassificationPipeline  # noqa: PLC0415
    from shared_code.monitoring.drift import build_reference_profile, drift_row  # noqa: PLC0415
    from shared_code.monitoring.summary import PROFILE_FILE  # noqa: PLC0415

    profiler = ClassificationPipeline(load_classifier(make_tiny_model(profiler_folder, version=version)))
    card_path = make_tiny_model(model_folder, version=version)
    card, _ = load_card(card_path)
    rng = np.random.default_rng(seed)
    outcomes = profiler.classify_many([noisy_photo(rng) for _ in range(photos)], top_k=1)
    rows = [drift_row(o.features.to_dict(), o.predictions[0].label, known_label=o.predictions[0].label)
            for o in outcomes if not isinstance(o, Exception)]
    (card_path.parent / PROFILE_FILE).write_text(json.dumps(build_reference_profile(rows, model=card)))
    card_path.write_text(card.model_copy(update={"reference_profile_file": PROFILE_FILE}).to_json())
    return card_path
