"""The training entry point: custom classes and ImageNet corrections end to end, promotion, data rules.

Runs in model/.venv (torch). The photos are real (../shared/imagenet-sample); each class is one photo plus
six PIL variants (flip, crops, brightness), so classes are learnable in one or two epochs on the CPU.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is only in the model venv (model/.venv)")

from PIL import Image, ImageEnhance, ImageOps  # noqa: E402 - after the torch skip

from model.architectures import build_model, with_new_head  # noqa: E402
from model.export import imagenet_categories  # noqa: E402
from model.finetune import FinetuneConfig, finetune  # noqa: E402
from model.metrics_log import MetricsLog, read_metrics  # noqa: E402
from model.train import build_parser, main, train  # noqa: E402
from model.training_data import (  # noqa: E402
    BadTrainingData,
    Sample,
    index_samples,
    limit_samples,
    load_samples,
    stratified_split,
)
from shared_code.inference.classifier import load_classifier  # noqa: E402
from shared_code.inference.model_card import ModelCard, load_card  # noqa: E402
from shared_code.inference.pipeline import ClassificationPipeline  # noqa: E402
from shared_code.monitoring.drift import load_reference_profile  # noqa: E402
from tests.factories import SHARED_PHOTOS, make_tiny_model  # noqa: E402

pytestmark = [pytest.mark.model]
needs_photos = pytest.mark.skipif(not (SHARED_PHOTOS / "labels.csv").exists(),
                                  reason="../shared/imagenet-sample is not available")
REPO = Path(__file__).resolve().parents[2]
CLASSES = ["killer_whale", "tench", "toucan"]  # sorted, as a custom model orders them
CORRECTION_CLASSES = ["hen", "macaw", "whippet"]


def _photo(label: str) -> Path:
    with (SHARED_PHOTOS / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return next(SHARED_PHOTOS / row["filename"] for row in csv.DictReader(handle) if row["label"] == label)


def _variants(image: Image.Image) -> list[Image.Image]:
    w, h = image.size
    return [image, ImageOps.mirror(image), image.crop((w // 10, h // 10, w, h)),
            image.crop((0, 0, w * 9 // 10, h * 9 // 10)), ImageEnhance.Brightness(image).enhance(0.7),
            ImageEnhance.Brightness(image).enhance(1.3), ImageOps.mirror(image.crop((w // 8, 0, w, h * 7 // 8)))]


def make_class_folder(root: Path, labels: list[str]) -> Path:
    """One subfolder per label: the real photo and six variants of it, as JPEGs."""
    for label in labels:
        folder = root / label
        folder.mkdir(parents=True)
        with Image.open(_photo(label)) as photo:
            for i, variant in enumerate(_variants(photo.convert("RGB"))):
                variant.save(folder / f"{label}_{i}.jpg", quality=90)
    return root


def lite0_base_card(folder: Path) -> Path:
    """A base card naming EfficientNet-Lite0 (custom training takes architecture and preprocessing from it;
    no ONNX is needed: nothing with its labels is compared for a new label set)."""
    folder.mkdir(parents=True, exist_ok=True)
    card = ModelCard(name="efficientnet_lite0", version="1", architecture="efficientnet_lite0", weights="imagenet",
                     onnx_file="model.onnx", sha256="0" * 64, input_name="input", output_name="logits",
                     input_size=(224, 224), resize_size=256, crop_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                     labels=imagenet_categories())
    path = folder / "model.card.json"
    path.write_text(card.to_json(), encoding="utf-8")
    return path


def run_train(argv: list[str]) -> dict[str, Any]:
    return train(build_parser().parse_args(argv))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SHARED_PHOTOS / "labels.csv").exists():
        pytest.skip("../shared/imagenet-sample is not available")
    root = tmp_path_factory.mktemp("train")
    make_class_folder(root / "species", CLASSES)
    lite0_base_card(root / "base")
    return root


@pytest.fixture(scope="module")
def custom_run(workspace: Path) -> dict[str, Any]:
    return run_train(["--data", str(workspace / "species"), "--task", "custom", "--base",
                      str(workspace / "base" / "model.card.json"), "--out", str(workspace / "out"), "--name", "species",
                      "--epochs-head", "2", "--epochs-top", "1", "--seed", "0", "--make-current"])


@needs_photos
def test_custom_model_serves_the_folder_classes(custom_run: dict[str, Any], workspace: Path) -> None:
    card, onnx_path = load_card(Path(custom_run["card"]))
    assert card.labels == CLASSES == custom_run["labels"] and custom_run["num_classes"] == 3
    assert (card.name, card.version, card.weights) == ("species", "1", "finetuned")
    assert onnx_path == workspace / "out" / "species" / "1" / "model.onnx"
    # 6 held-out images (2 a class); chance is 1/3 and the baseline (majority class) scores exactly that
    assert custom_run["candidate"]["accuracy"] > 1 / 3
    assert custom_run["current"]["accuracy"] == pytest.approx(1 / 3, abs=1e-3)
    assert custom_run["promoted"] is True and custom_run["published"] is False
    assert card.metrics["validation_accuracy"] == custom_run["candidate"]["accuracy"]
    pointer = json.loads((workspace / "out" / "species" / "latest.json").read_text())
    assert pointer == {"version": "1", "sha256": card.sha256}
    folder = onnx_path.parent
    assert {"model.onnx", "model.card.json", "classifier.npz", "reference_profile.json", "weights.pt",
            "evaluation.json"} <= {p.name for p in folder.iterdir()}
    current, current_onnx = load_card(workspace / "out" / "current.card.json")  # --make-current
    assert current_onnx == onnx_path and current.sha256 == card.sha256 and current.metrics == card.metrics
    assert load_reference_profile(current, current_onnx) is not None  # found from the artifacts folder too


@needs_photos
def test_exported_model_classifies_through_the_serving_pipeline(custom_run: dict[str, Any]) -> None:
    card_path = Path(custom_run["card"])
    pipeline = ClassificationPipeline(load_classifier(card_path, intra_op_threads=1))
    for label in CLASSES:
        outcome = pipeline.classify_bytes(_photo(label).read_bytes(), top_k=3)
        assert outcome.predictions[0].label == label
        assert sorted(p.label for p in outcome.predictions) == CLASSES
        assert outcome.model_name == "species" and len(outcome.features.embedding) > 0
    card, onnx_path = load_card(card_path)
    profile = load_reference_profile(card, onnx_path)
    assert profile is not None and profile["row_count"] == 21  # train + validation images
    assert profile["model"] == {"name": "species", "version": "1", "sha256": card.sha256}
    assert set(profile["known_label"]) == set(CLASSES)


@needs_photos
def test_evaluation_has_per_class_metrics_and_confusion(custom_run: dict[str, Any]) -> None:
    evaluation = json.loads(Path(custom_run["evaluation"]).read_text())
    candidate = evaluation["candidate"]
    assert evaluation["split"]["validation"] == {label: 2 for label in CLASSES}
    assert evaluation["split"]["train"] == {label: 5 for label in CLASSES}
    assert [m["label"] for m in candidate["per_class"] if m["support"]] == CLASSES
    assert all({"precision", "recall", "f1"} <= set(m) for m in candidate["per_class"])
    matrix = np.array(candidate["confusion_matrix"]["counts"])
    assert matrix.shape == (3, 3) and matrix.sum() == 6 and matrix.sum(axis=1).tolist() == [2, 2, 2]
    assert np.trace(matrix) / 6 == pytest.approx(candidate["accuracy"], abs=1e-3)
    assert evaluation["current"]["model"].startswith("majority-class baseline")
    assert evaluation["current"]["confusion_matrix"]["counts"] != candidate["confusion_matrix"]["counts"]
    assert [(h["phase"], h["epoch"]) for h in evaluation["history"]] == [("head", 1), ("head", 2), ("top", 1)]
    metrics = read_metrics(Path(custom_run["card"]).parent / "metrics")
    assert [m["step"] for m in metrics if m["key"] == "val_accuracy"] == [0, 1, 2]
    assert {m["key"] for m in metrics} >= {"train_loss", "lr", "candidate_accuracy", "current_accuracy"}


@needs_photos
def test_same_seed_same_weights(workspace: Path, tmp_path: Path) -> None:
    samples = index_samples(load_samples(workspace / "species"), CLASSES)
    split = stratified_split(limit_samples(samples, 6, seed=1), 0.5, seed=1)  # 3 train, 3 validation
    card, _ = load_card(workspace / "base" / "model.card.json")
    config = FinetuneConfig(epochs_head=1, epochs_top=1, batch_size=4, seed=5)
    trained = []
    for run in range(2):
        built = with_new_head(build_model("efficientnet_lite0", "imagenet"), len(CLASSES), seed=5)
        history = finetune(built, split.train, split.validation, card, config, MetricsLog(tmp_path / str(run)))
        trained.append((built.module.state_dict(), history))
    (first, first_history), (second, second_history) = trained
    assert [h.train_loss for h in first_history] == [h.train_loss for h in second_history]
    for key in ("linear.weight", "network._conv_head.weight", "network._blocks.15._project_conv.weight"):
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    untouched = build_model("efficientnet_lite0", "imagenet").module.state_dict()
    torch.testing.assert_close(first["network._blocks.0._depthwise_conv.weight"],
                               untouched["network._blocks.0._depthwise_conv.weight"], rtol=0, atol=0)  # frozen
    assert not torch.equal(first["network._conv_head.weight"], untouched["network._conv_head.weight"])  # phase 2


@needs_photos
def test_csv_retraining_not_promoted_without_enough_improvement(custom_run: dict[str, Any], workspace: Path,
                                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                                ) -> None:
    listing = tmp_path / "lists" / "corrections.csv"
    listing.parent.mkdir()
    with listing.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for path in sorted((workspace / "species").rglob("*.jpg")):
            writer.writerow([path.relative_to(workspace).as_posix(), path.parent.name])
    code = main(["--data", str(listing), "--data-root", str(workspace), "--task", "custom",
                 "--base", custom_run["card"], "--out", str(workspace / "out"), "--name", "species",
                 "--epochs-head", "1", "--epochs-top", "0", "--max-images", "12", "--min-improvement", "1.0"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    result = json.loads(printed[-1])
    assert result["promoted"] is False and result["version"] == "2" and result["labels"] == CLASSES
    assert result["current"]["model"].startswith("species:1:")  # the promoted version, not the baseline
    assert any("starting from checkpoint of species:1" in line for line in printed)
    evaluation = json.loads(Path(result["evaluation"]).read_text())
    assert sum(evaluation["split"]["train"].values()) + sum(evaluation["split"]["validation"].values()) == 12
    assert json.loads((workspace / "out" / "species" / "latest.json").read_text())["version"] == "1"


@needs_photos
def test_corrections_fine_tune_the_imagenet_head(tmp_path: Path) -> None:
    base = REPO / "model" / "artifacts" / "current.card.json"
    if not base.exists():
        pytest.skip("model/artifacts/current.card.json is not there (make model)")
    make_class_folder(tmp_path / "corrections", CORRECTION_CLASSES)
    result = run_train(["--data", str(tmp_path / "corrections"), "--base", str(base), "--out", str(tmp_path / "out"),
                        "--name", "efficientnet_lite0", "--epochs-head", "1", "--epochs-top", "0"])
    card, _ = load_card(Path(result["card"]))
    assert card.labels == load_card(base)[0].labels and "labels" not in result and result["num_classes"] == 1000
    assert result["current"]["model"].endswith("(base card)")
    assert result["candidate"]["accuracy"] >= 0.5
    assert result["promoted"] == (result["candidate"]["accuracy"] > result["current"]["accuracy"])


def test_stratified_split_keeps_every_class_on_both_sides() -> None:
    samples = [Sample(Path(f"{c}/{i}.jpg"), c, k) for k, (c, n) in enumerate([("a", 8), ("b", 2), ("c", 5), ("d", 1)])
               for i in range(n)]
    split = stratified_split(samples, 0.25, seed=3)
    validation = {s.label: 0 for s in split.validation}
    for s in split.validation:
        validation[s.label] += 1
    assert validation == {"a": 2, "b": 1, "c": 1}  # round(n/4), at least 1, never the class's last image
    assert {s.label for s in split.train} == {"a", "b", "c", "d"}  # a single image only trains
    assert sorted(map(str, [s.path for s in split.train + split.validation])) == sorted(str(s.path) for s in samples)
    assert stratified_split(samples, 0.25, seed=3) == split
    assert stratified_split(samples, 0.25, seed=4).validation != split.validation
    with pytest.raises(BadTrainingData, match="nothing is left to validate"):
        stratified_split([s for s in samples if s.label == "d"], 0.25)


def test_max_images_is_class_balanced() -> None:
    samples = [Sample(Path(f"{c}/{i}.jpg"), c, k) for k, (c, n) in enumerate([("a", 20), ("b", 3), ("c", 6)])
               for i in range(n)]
    chosen = limit_samples(samples, 10, seed=0)
    counts = {c: sum(s.label == c for s in chosen) for c in "abc"}
    assert counts == {"a": 4, "b": 3, "c": 3}  # round-robin: every class before any class gets more
    assert len(limit_samples(samples, 0)) == len(samples)


def test_csv_paths_resolve_against_the_csv_folder(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for name in ("x.png", "y.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / name)
    (tmp_path / "list.csv").write_text("path,label\nimg/x.png,cat\nimg/y.png,dog\n", encoding="utf-8")
    assert load_samples(tmp_path / "list.csv") == [Sample(tmp_path / "img" / "x.png", "cat"),
                                                   Sample(tmp_path / "img" / "y.png", "dog")]
    (tmp_path / "bad.csv").write_text("file_name,class\nimg/x.png,cat\n", encoding="utf-8")
    with pytest.raises(BadTrainingData, match="path,label"):
        load_samples(tmp_path / "bad.csv")
    (tmp_path / "missing.csv").write_text("path,label\nimg/z.png,cat\n", encoding="utf-8")
    with pytest.raises(BadTrainingData, match="do not exist"):
        load_samples(tmp_path / "missing.csv")


def _images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")


@pytest.mark.parametrize(("task", "layout", "message"), [
    ("custom", {"red": 3, "blue": 1}, "fewer than 2 images"),
    ("custom", {"red": 3}, "at least 2 classes"),
    ("imagenet", {"red": 2, "zebra": 2}, "not among the model's 4 classes: zebra"),
])
def test_bad_data_exits_2_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str,
                                               layout: dict[str, int], message: str) -> None:
    base = make_tiny_model(tmp_path / "tiny")  # labels dark, red, green, blue; bad data fails before torch
    for label, count in layout.items():
        _images(tmp_path / "data" / label, count)
    code = main(["--data", str(tmp_path / "data"), "--task", task, "--base", str(base), "--out",
                 str(tmp_path / "out"), "--name", "bad"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_base_card_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _images(tmp_path / "data" / "a", 2)
    code = main(["--data", str(tmp_path / "data"), "--base", str(tmp_path / "none.card.json"), "--out",
                 str(tmp_path / "out"), "--name", "x"])
    assert code == 1 and "base card" in capsys.readouterr().err


@needs_photos
def test_publish_to_azurite_serves_the_promoted_version(workspace: Path, tmp_path: Path) -> None:
    from azure.storage.blob import BlobServiceClient  # noqa: PLC0415 - only this test needs storage

    from devstack.emulators import AZURITE_JS, NodeMissing, start_azurite  # noqa: PLC0415
    from shared_code.inference.model_repository import BlobModelRepository, ModelProvider  # noqa: PLC0415

    if not AZURITE_JS.exists():
        pytest.skip("Azurite is not installed (make node-modules)")
    try:
        azurite = start_azurite(tmp_path)
    except NodeMissing as exc:
        pytest.skip(str(exc))
    try:
        result = run_train(["--data", str(workspace / "species"), "--task", "custom", "--base",
                            str(workspace / "base" / "model.card.json"), "--out", str(tmp_path / "out"),
                            "--name", "plants", "--epochs-head", "1", "--epochs-top", "0", "--max-images", "12",
                            "--publish-connection-string", azurite.connection_string])
        assert result["published"] is True and result["version"] == "1" and result["promoted"] is True
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        names = {b.name for b in service.get_container_client("models").list_blobs()}
        assert {"plants/latest.json", "plants/1/model.onnx", "plants/1/model.card.json", "plants/1/weights.pt",
                "plants/1/reference_profile.json", "plants/1/evaluation.json"} <= names
        provider = ModelProvider(repository=BlobModelRepository(service, "models", tmp_path / "cache"), name="plants")
        outcome = provider.current().classify_bytes(_photo("toucan").read_bytes(), top_k=1)
        assert (outcome.model_name, outcome.model_version) == ("plants", "1")
        assert outcome.predictions[0].label == "toucan"
    finally:
        azurite.stop()


# --- promotion gates (model/gates.py) -----------------------------------------------------------------
@needs_photos
def test_unvetted_corrections_without_a_guard_set_are_never_promoted(workspace: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--data", str(workspace / "species"), "--task", "custom", "--base",
                 str(workspace / "base" / "model.card.json"), "--out", str(tmp_path / "out"), "--name", "species",
                 "--epochs-head", "1", "--epochs-top", "0", "--max-images", "12", "--data-trust", "unvetted",
                 "--promotion", "automatic", "--make-current"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    result = json.loads(printed[-1])
    assert result["candidate"]["accuracy"] > result["current"]["accuracy"]  # the split alone would promote it
    assert result["promoted"] is False and result["promotable"] is False and result["state"] == "not_promotable"
    assert "no trusted guard set" in result["reasons"][0]
    assert any("not promoted: no trusted guard set" in line for line in printed)  # the run says why
    assert not (tmp_path / "out" / "species" / "latest.json").exists()
    assert not (tmp_path / "out" / "current.card.json").exists()
    promotion = json.loads(Path(result["evaluation"]).read_text())["promotion"]
    assert promotion["gates"]["guard"] == {**promotion["gates"]["guard"], "required": True, "evaluated": False,
                                           "passed": False}
    assert promotion["gates"]["split"]["passed"] is True


@needs_photos
def test_a_guarded_candidate_waits_for_approval_and_automatic_never_goes_back(workspace: Path, tmp_path: Path
                                                                              ) -> None:
    from azure.storage.blob import BlobServiceClient  # noqa: PLC0415 - only these tests need storage

    from devstack.emulators import AZURITE_JS, NodeMissing, start_azurite  # noqa: PLC0415
    from model.promotion import Publisher  # noqa: PLC0415
    from shared_code.inference.model_repository import BlobModelRepository, read_pointer  # noqa: PLC0415
    from shared_code.retraining.approval import approve  # noqa: PLC0415

    if not AZURITE_JS.exists():
        pytest.skip("Azurite is not installed (make node-modules)")
    try:
        azurite = start_azurite(tmp_path)
    except NodeMissing as exc:
        pytest.skip(str(exc))
    make_class_folder(tmp_path / "guard", CLASSES)  # curated: outside the training data
    common = ["--data", str(workspace / "species"), "--task", "custom", "--base",
              str(workspace / "base" / "model.card.json"), "--out", str(tmp_path / "out"), "--name", "plants",
              "--epochs-head", "1", "--epochs-top", "0", "--max-images", "12", "--data-trust", "unvetted",
              "--guard-data", str(tmp_path / "guard"), "--publish-connection-string", azurite.connection_string]
    try:
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        repository = BlobModelRepository(service, "models", tmp_path / "cache")
        candidate = run_train([*common, "--promotion", "approval"])
        assert candidate["published"] is True and candidate["promotable"] is True, candidate
        assert candidate["promoted"] is False and candidate["state"] == "candidate" and candidate["reasons"] == []
        assert repository.promoted_version("plants") is None  # published, not promoted
        evaluation = json.loads(repository.read_file("plants", "1", "evaluation.json") or b"{}")
        assert evaluation["promotion"]["promotable"] is True and evaluation["promotion"]["mode"] == "approval"
        assert evaluation["guard"]["data"] == str(tmp_path / "guard") and evaluation["guard"]["passed"] is True
        assert not (tmp_path / "out" / "plants" / "latest.json").exists()

        approval = approve(repository, "plants", "1", approved_by="ops")  # what the admin route does
        assert approval["previous"] is None and repository.promoted_version("plants") == "1"

        # automatic: version 2 is promoted by the run itself, through the same never-go-back pointer write
        automatic = run_train([*common, "--promotion", "automatic", "--min-improvement", "-1",
                               "--max-regression", "1"])
        assert automatic["version"] == "2" and automatic["promoted"] is True, automatic
        pointer = read_pointer(repository.container, "plants").body
        assert pointer is not None and pointer["version"] == "2" and pointer["approved_by"] == "automatic"
        assert pointer["previous"] == "1"
        publisher = Publisher(service, "models")
        try:  # a run for version 1 finishing late must not put it back
            assert "already promoted" in (publisher.promote("plants", "1", "0" * 64) or "")
        finally:
            publisher.close()
        assert repository.promoted_version("plants") == "2"
    finally:
        azurite.stop()
