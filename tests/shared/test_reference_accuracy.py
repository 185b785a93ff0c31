"""The serving path reproduces the published accuracy of the shared MobileNetV2 on the shared photos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from model.card import ensure_card
from model.evaluate import evaluate
from shared_code.inference.model_card import load_card
from tests.factories import SHARED_MOBILENET, SHARED_PHOTOS

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not (SHARED_MOBILENET.exists() and (SHARED_PHOTOS / "labels.csv").exists()),
                       reason="../shared (MobileNetV2 and the ImageNet sample) is not available"),
]

REFERENCE_TOP1 = 0.776  # ../shared/README.md: Pillow bilinear 256, centre crop 224, ImageNet mean/std
REFERENCE_TOP5 = 0.928


def cpu_has_vnni() -> bool:
    """Whether ONNX Runtime can use VNNI int8 dot products on this CPU.

    Without VNNI, ORT's u8s8 convolutions saturate 16-bit intermediate sums, which is the arithmetic the
    published figure was measured with (77.6 %). With VNNI the same model is computed exactly and scores
    higher on these photos (81.6 % was measured on an AVX-512 VNNI machine), so the figure is a floor there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cache = tmp_path_factory.mktemp("cards")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_CARD_CACHE", str(cache))  # ../shared is read-only: the card goes to the cache
        card_path = ensure_card(SHARED_MOBILENET)
        assert card_path.is_relative_to(cache)
        return evaluate(card_path, SHARED_PHOTOS)


def test_standard_card_for_the_bare_model(report: dict[str, Any]) -> None:
    card, onnx_path = load_card(Path(report["model"]["card"]))
    assert onnx_path == SHARED_MOBILENET.resolve()
    assert (card.input_name, card.output_name, card.precision) == ("input", "output", "int8")
    assert (card.resize_size, card.crop_size, card.interpolation) == (256, 224, "bilinear")
    assert card.labels[0] == "tench" and card.num_classes == 1000


def test_top1_matches_the_published_figure(report: dict[str, Any]) -> None:
    assert report["n"] == 250
    if cpu_has_vnni():
        # Exact int8 arithmetic: a preprocessing mistake still costs points below the published floor.
        assert report["top1"] >= REFERENCE_TOP1 - 0.005
        assert report["top5"] >= REFERENCE_TOP5 - 0.01
    else:
        assert report["top1"] == pytest.approx(REFERENCE_TOP1, abs=0.005)
        assert report["top5"] == pytest.approx(REFERENCE_TOP5, abs=0.01)
