"""int8 quantization and evaluation of a small real ONNX classifier, in the app venv (no torch)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from model.evaluate import evaluate
from model.evaluate import main as evaluate_main
from model.quantize import DYNAMIC_PRECISION, STATIC_PRECISION, calibration_files, quantize
from shared_code.inference.classifier import load_classifier
from shared_code.inference.model_card import load_card, save_card, sha256_of
from shared_code.inference.preprocess import preprocess_batch
from tests.factories import make_tiny_model

pytestmark = pytest.mark.unit

COLOURS = {"dark": (20, 20, 20), "red": (210, 40, 30), "green": (30, 200, 40), "blue": (35, 45, 220)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One subfolder per class of noisy solid-colour images (the tiny model's four classes)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for label, colour in COLOURS.items():
        (root / label).mkdir()
        for i in range(4):
            noise = rng.integers(-25, 26, (40 + i, 50, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}_{i}.png")
    return root


@pytest.fixture()
def tiny_card(tmp_path: Path) -> Path:
    card_path = make_tiny_model(tmp_path / "tiny" / "1")
    card, onnx_path = load_card(card_path)
    np.savez(onnx_path.parent / "classifier.npz", W=np.eye(4, dtype=np.float32), b=np.zeros(4, dtype=np.float32))
    return save_card(card.model_copy(update={"classifier_weights_file": "classifier.npz"}), onnx_path)


def test_evaluate_class_subfolders(tiny_card: Path, photos: Path) -> None:
    report = evaluate(tiny_card, photos, intra_op_threads=1)
    assert report["n"] == 16
    assert report["top1"] == 1.0 and report["top5"] == 1.0
    assert [m["label"] for m in report["per_class"]] == ["dark", "red", "green", "blue"]
    assert all(m["f1"] == 1.0 and m["support"] == 4 for m in report["per_class"])
    assert report["confusion"] == [[i, i, 4] for i in range(4)]


def test_evaluate_labels_csv_counts_mistakes(tiny_card: Path, photos: Path, tmp_path: Path) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    with (folder / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "class_index"])
        for index, label in enumerate(COLOURS):
            image = photos / label / f"{label}_0.png"
            (folder / image.name).write_bytes(image.read_bytes())
            writer.writerow([image.name, index if label != "blue" else 1])  # blue labelled as red: one error
    report = evaluate(tiny_card, folder, intra_op_threads=1)
    assert report["n"] == 4 and report["top1"] == 0.75
    red = next(m for m in report["per_class"] if m["label"] == "red")
    assert (red["support"], red["recall"]) == (2, 0.5)
    assert [1, 3, 1] in report["confusion"]


def test_evaluate_cli_prints_summary_last(tiny_card: Path, photos: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "metrics.json"
    assert evaluate_main(["--model", str(tiny_card), "--data", str(photos), "--out", str(out), "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["n"], summary["top1"], summary["top5"]) == (16, 1.0, 1.0)
    assert json.loads(out.read_text(encoding="utf-8"))["confusion"]


def test_evaluate_rejects_unknown_class_folder(tiny_card: Path, tmp_path: Path) -> None:
    (tmp_path / "data" / "purple").mkdir(parents=True)
    with pytest.raises(ValueError, match="purple"):
        evaluate(tiny_card, tmp_path / "data")


def test_static_quantization_keeps_outputs_and_accuracy(tiny_card: Path, photos: Path) -> None:
    new_card_path = quantize(tiny_card, photos, count=8, allow_dynamic_fallback=False)
    assert new_card_path.parent == tiny_card.parent.parent / "1-int8"
    card, onnx_path = load_card(new_card_path)
    assert (card.precision, card.version, card.sha256) == (STATIC_PRECISION, "1-int8", sha256_of(onnx_path))
    assert card.classifier_weights_file == "classifier.npz" and (onnx_path.parent / "classifier.npz").exists()
    graph = onnx.load(str(onnx_path)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    assert {o.name for o in graph.output} == {"logits", "features"}
    fp32 = load_classifier(tiny_card, intra_op_threads=1)
    int8 = load_classifier(new_card_path, intra_op_threads=1)
    assert int8.has_features
    assert evaluate(new_card_path, photos, intra_op_threads=1)["top1"] == 1.0
    images = [Image.open(path).convert("RGB") for path in sorted(photos.rglob("*_1.png"))]
    batch = preprocess_batch(images, fp32.card)
    reference = fp32.run(batch).logits
    assert np.abs(int8.run(batch).logits - reference).max() < 0.05 * np.abs(reference).max()


def test_dynamic_quantization(tiny_card: Path) -> None:
    card, _ = load_card(quantize(tiny_card, None, dynamic=True))
    assert card.precision == DYNAMIC_PRECISION and card.version == "1-int8dyn"


def test_calibration_sample_is_reproducible(photos: Path) -> None:
    first = calibration_files(photos, 5)
    assert len(first) == 5 and first == calibration_files(photos, 5)
    assert len(calibration_files(photos, 100)) == 16
