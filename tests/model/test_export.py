"""Export to ONNX reproduces torch, carries a correct card and a dynamic batch (run in model/.venv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is only in the model venv (model/.venv)")

from model.architectures import FALLBACK_MESSAGE, build_model  # noqa: E402 - after the torch skip
from model.export import MAX_LOGIT_DIFF, check_agreement, check_images, export  # noqa: E402
from model.imagenet import imagenet_labels  # noqa: E402
from shared_code.inference.classifier import load_classifier  # noqa: E402
from shared_code.inference.model_card import load_card, sha256_of  # noqa: E402
from shared_code.inference.preprocess import preprocess_batch  # noqa: E402
from tests.factories import SHARED_PHOTOS  # noqa: E402

pytestmark = [pytest.mark.model, pytest.mark.slow]
needs_photos = pytest.mark.skipif(not (SHARED_PHOTOS / "labels.csv").exists(),
                                  reason="../shared/imagenet-sample is not available")


@pytest.fixture(scope="module")
def resnet18_card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifacts = tmp_path_factory.mktemp("resnet")
    return export("resnet18", "random", artifacts, check_dir=SHARED_PHOTOS, eval_dir=None)


@pytest.fixture(scope="module")
def lite0_card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifacts = tmp_path_factory.mktemp("lite0")
    eval_dir = SHARED_PHOTOS if SHARED_PHOTOS.exists() else None
    return export("efficientnet_lite0", "imagenet", artifacts, check_dir=SHARED_PHOTOS, eval_dir=eval_dir)


def test_random_resnet18_card(resnet18_card: Path) -> None:
    card, onnx_path = load_card(resnet18_card)
    artifacts = resnet18_card.parents[2]
    assert resnet18_card == artifacts / "resnet18" / "1" / "model.card.json"
    assert (card.architecture, card.weights, card.precision) == ("resnet18", "random", "fp32")
    assert (card.input_name, card.output_name, card.feature_output_name) == ("input", "logits", "features")
    assert (card.resize_size, card.crop_size, card.input_size) == (256, 224, (224, 224))
    assert card.mean == pytest.approx((0.485, 0.456, 0.406)) and card.channel_order == "RGB"
    assert card.labels == imagenet_labels()
    assert card.sha256 == sha256_of(onnx_path)
    head = np.load(onnx_path.parent / str(card.classifier_weights_file))
    assert head["W"].shape == (1000, 512) and head["b"].shape == (1000,)
    assert not (artifacts / "current.card.json").exists()  # random weights are never made current


def test_dynamic_batch_and_features(resnet18_card: Path) -> None:
    classifier = load_classifier(resnet18_card, intra_op_threads=1)
    images = check_images(SHARED_PHOTOS, 3)
    batch = preprocess_batch(images, classifier.card)
    one, three = classifier.run(batch[:1]), classifier.run(batch)
    assert one.logits.shape == (1, 1000) and three.logits.shape == (3, 1000)
    assert three.features is not None and three.features.shape == (3, 512, 7, 7)
    np.testing.assert_allclose(one.logits[0], three.logits[0], atol=1e-4)


def test_class_activation_weights_reproduce_logits(resnet18_card: Path) -> None:
    classifier = load_classifier(resnet18_card, intra_op_threads=1)
    outputs = classifier.run(preprocess_batch(check_images(SHARED_PHOTOS, 2), classifier.card))
    head = np.load(resnet18_card.parent / str(classifier.card.classifier_weights_file))
    assert outputs.features is not None
    pooled = outputs.features.mean(axis=(2, 3))
    np.testing.assert_allclose(pooled @ head["W"].T + head["b"], outputs.logits, atol=1e-3)


@needs_photos
def test_resnet18_onnx_agrees_with_torch_on_photos(resnet18_card: Path) -> None:
    built = build_model("resnet18", "random")  # same seed as the export: identical weights
    agreement = check_agreement(built, resnet18_card, check_images(SHARED_PHOTOS, 6))
    assert agreement.images == 6 and agreement.same_top1
    assert agreement.max_logit_diff < MAX_LOGIT_DIFF


@needs_photos
def test_lite0_onnx_agrees_with_torch_on_photos(lite0_card: Path) -> None:
    built = build_model("efficientnet_lite0", "imagenet")
    agreement = check_agreement(built, lite0_card, check_images(SHARED_PHOTOS, 6))
    assert agreement.same_top1 and agreement.max_logit_diff < MAX_LOGIT_DIFF


@needs_photos
def test_lite0_real_weights_classify_photos(lite0_card: Path) -> None:
    card, _ = load_card(lite0_card)
    assert (card.weights, card.mean, card.std) == ("imagenet", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert card.metrics["imagenet_sample_top1"] >= 0.85  # measured 0.896 on the 250 shared photos
    pointer, onnx_path = load_card(lite0_card.parents[2] / "current.card.json")
    assert onnx_path == lite0_card.parent / "model.onnx" and pointer.sha256 == card.sha256


def test_auto_weights_fall_back_offline(capsys: pytest.CaptureFixture[str]) -> None:
    built = build_model("resnet18", "auto")
    printed = capsys.readouterr().out
    if built.architecture == "resnet18":  # torchvision's weights were reachable (or cached)
        assert built.weights == "imagenet" and FALLBACK_MESSAGE not in printed
    else:
        assert built.architecture == "efficientnet_lite0" and built.weights == "imagenet"
        assert printed.count(FALLBACK_MESSAGE) == 1
