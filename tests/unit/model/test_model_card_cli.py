"""`python -m model.card` writes a correct card for a bare ONNX classifier, with no torch involved."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from model.card import build_card, ensure_card, folder_is_writable, main
from model.imagenet import imagenet_labels
from shared_code.inference.classifier import load_classifier
from shared_code.inference.model_card import card_path_for, load_card, sha256_of

pytestmark = pytest.mark.unit


def bare_onnx(path: Path, classes: int = 1000, size: int = 32, nhwc: bool = False) -> Path:
    """A tiny conv classifier with a [N, classes] output and a 4-D feature output, and no card."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["image" if not nhwc else "nchw", "conv_w"], ["feature_map"]),
        helper.make_node("GlobalAveragePool", ["feature_map"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["scores"], transB=1),
    ]
    shape: list[int | str] = ["N", 3, size, size]
    if nhwc:
        nodes.insert(0, helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]))
        shape = ["N", size, size, 3]
    graph = helper.make_graph(
        nodes, "bare",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", classes]),
         helper.make_tensor_value_info("feature_map", TensorProto.FLOAT, ["N", 8, size, size])],
        [numpy_helper.from_array(rng.standard_normal((8, 3, 1, 1)).astype(np.float32), "conv_w"),
         numpy_helper.from_array(rng.standard_normal((classes, 8)).astype(np.float32), "fc_w"),
         numpy_helper.from_array(np.zeros(classes, dtype=np.float32), "fc_b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def test_cli_writes_standard_imagenet_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path = bare_onnx(tmp_path / "net.onnx")
    assert main([str(onnx_path), "--name", "net", "--version", "7"]) == 0
    card, resolved = load_card(card_path_for(onnx_path))
    assert resolved == onnx_path
    assert (card.name, card.version, card.precision) == ("net", "7", "fp32")
    assert (card.input_name, card.output_name, card.feature_output_name) == ("image", "scores", "feature_map")
    assert card.input_size == (32, 32) and card.crop_size == 32 and card.resize_size == 37  # 32 * 256 / 224
    assert card.mean == pytest.approx((0.485, 0.456, 0.406)) and card.layout == "NCHW"
    assert card.labels == imagenet_labels() and card.labels[0] == "tench"
    assert card.sha256 == sha256_of(onnx_path)
    assert "wrote" in capsys.readouterr().out


def test_cli_options_override_preprocessing(tmp_path: Path) -> None:
    onnx_path = bare_onnx(tmp_path / "net.onnx")
    out = tmp_path / "cards" / "custom.card.json"
    args = [str(onnx_path), "--resize", "40", "--crop", "32", "--mean", "0.5,0.5,0.5", "--std", "0.25 0.25 0.25",
            "--interpolation", "bicubic", "--out", str(out)]
    assert main(args) == 0
    card, resolved = load_card(out)
    assert resolved.resolve() == onnx_path.resolve()  # onnx_file is relative to the card's own folder
    assert (card.resize_size, card.interpolation) == (40, "bicubic")
    assert card.mean == (0.5, 0.5, 0.5) and card.std == (0.25, 0.25, 0.25)


def test_cli_custom_labels_and_nhwc(tmp_path: Path) -> None:
    onnx_path = bare_onnx(tmp_path / "net.onnx", classes=3, nhwc=True)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n", encoding="utf-8")
    assert main([str(onnx_path), "--labels", str(labels)]) == 0
    card, _ = load_card(card_path_for(onnx_path))
    assert card.labels == ["cat", "dog", "bird"] and card.layout == "NHWC"


def test_cli_refuses_non_imagenet_model_without_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path = bare_onnx(tmp_path / "net.onnx", classes=3)
    assert main([str(onnx_path)]) == 2
    assert "--labels" in capsys.readouterr().err
    assert not card_path_for(onnx_path).exists()


def test_card_runs_through_the_serving_classifier(tmp_path: Path) -> None:
    onnx_path = bare_onnx(tmp_path / "net.onnx")
    classifier = load_classifier(ensure_card(onnx_path))
    outputs = classifier.run(np.zeros((2, 3, 32, 32), dtype=np.float32))
    assert outputs.logits.shape == (2, 1000)
    assert outputs.features is not None and outputs.features.shape == (2, 8, 32, 32)


def test_ensure_card_writes_beside_then_reuses(tmp_path: Path) -> None:
    onnx_path = bare_onnx(tmp_path / "net.onnx")
    first = ensure_card(onnx_path)
    assert first == card_path_for(onnx_path)
    stamp = first.stat().st_mtime_ns
    assert ensure_card(onnx_path) == first and first.stat().st_mtime_ns == stamp
    assert ensure_card(first) == first


def test_ensure_card_uses_cache_for_read_only_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "readonly"
    onnx_path = bare_onnx(folder / "net.onnx")
    folder.chmod(0o555)  # no write bit: read-only by policy, even for root
    monkeypatch.setenv("MODEL_CARD_CACHE", str(tmp_path / "cache"))
    try:
        assert not folder_is_writable(folder)
        card_file = ensure_card(onnx_path)
        assert card_file.is_relative_to(tmp_path / "cache")
        assert sorted(os.listdir(folder)) == ["net.onnx"]
        card, resolved = load_card(card_file)
        assert resolved == onnx_path.resolve() and card.sha256 == sha256_of(onnx_path)
        assert ensure_card(onnx_path) == card_file
    finally:
        folder.chmod(0o755)


def test_build_card_rejects_crop_that_does_not_fit(tmp_path: Path) -> None:
    onnx_path = bare_onnx(tmp_path / "net.onnx", size=32)
    with pytest.raises(ValueError, match="does not fit"):
        build_card(onnx_path, crop=224)


def test_card_json_round_trips(tmp_path: Path) -> None:
    onnx_path = bare_onnx(tmp_path / "net.onnx")
    card = build_card(onnx_path)
    assert json.loads(card.to_json())["labels"][-1] == "toilet tissue"
