"""The classification pipeline on a tiny real ONNX model: batching, top-k, features, caching, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared_code.errors import ImageRejected, ModelUnavailable, NotAnImage, UnsupportedFormat
from shared_code.inference.classifier import load_classifier, softmax
from shared_code.inference.features import EMBEDDING_DIM, image_statistics
from shared_code.inference.pipeline import ClassificationPipeline
from tests.factories import image_bytes, make_tiny_model

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> ClassificationPipeline:
    card_path = make_tiny_model(tmp_path_factory.mktemp("tiny"))
    return ClassificationPipeline(load_classifier(card_path))


@pytest.mark.parametrize(("colour", "label"), [((230, 20, 20), "red"), ((20, 230, 20), "green"),
                                                ((20, 20, 230), "blue"), ((5, 5, 5), "dark")])
def test_top1_follows_the_colour(pipeline: ClassificationPipeline, colour: tuple[int, int, int], label: str) -> None:
    result = pipeline.classify_bytes(image_bytes("PNG", size=(50, 40), color=colour), top_k=2)
    assert result.predictions[0].label == label
    assert len(result.predictions) == 2
    assert result.predictions[0].score >= result.predictions[1].score
    assert result.model_name == "tiny" and result.model_version == "1"
    assert set(result.timings_ms) == {"decode", "preprocess", "inference", "total"}


def test_batch_keeps_order_and_reports_rejections_in_place(pipeline: ClassificationPipeline) -> None:
    outcomes = pipeline.classify_many(
        [image_bytes("JPEG", color=(20, 230, 20)), b"not an image", image_bytes("GIF", color=(20, 20, 230))], top_k=1
    )
    assert [type(o).__name__ for o in outcomes] == ["ImageClassification", "NotAnImage", "ImageClassification"]
    assert outcomes[0].predictions[0].label == "green"  # type: ignore[union-attr]
    assert outcomes[2].predictions[0].label == "blue"  # type: ignore[union-attr]


def test_single_bad_image_raises_its_typed_error(pipeline: ClassificationPipeline) -> None:
    with pytest.raises(NotAnImage) as not_an_image:
        pipeline.classify_bytes(b"hello")
    assert not_an_image.value.status_code == 400  # bytes in no image format: a broken request
    with pytest.raises(UnsupportedFormat) as svg:
        pipeline.classify_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    assert svg.value.status_code == 415  # a real image format, just not one the service accepts
    with pytest.raises(ImageRejected):
        pipeline.classify_bytes(b"")


def test_features_cover_what_drift_needs(pipeline: ClassificationPipeline) -> None:
    result = pipeline.classify_bytes(image_bytes("PNG", size=(80, 60), color=(230, 20, 20)))
    features = result.features
    assert (features.width, features.height, features.format) == (80, 60, "PNG")
    assert len(features.embedding) == EMBEDDING_DIM
    assert 0.0 < features.confidence <= 1.0
    assert features.margin == pytest.approx(result.predictions[0].score - result.predictions[1].score, abs=1e-6)
    assert features.saturation > 0.8 and features.sharpness == pytest.approx(0.0)


def test_image_statistics_separate_dark_flat_and_busy_images() -> None:
    rng = np.random.default_rng(0)
    dark = image_statistics(np.full((32, 32, 3), 10, dtype=np.uint8))
    busy = image_statistics(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    grey = image_statistics(np.repeat(rng.integers(0, 256, (32, 32, 1), dtype=np.uint8), 3, axis=2))
    assert dark["brightness"] < 0.05 < busy["brightness"]
    assert busy["sharpness"] > dark["sharpness"] and busy["entropy"] > dark["entropy"]
    assert grey["saturation"] == pytest.approx(0.0)
    assert busy["saturation"] > 0.3


def _reference_statistics(crop: np.ndarray) -> dict[str, float]:
    """The definitions in plain NumPy (what the optimised `image_statistics` must equal)."""
    # float32 luma, as served: a pixel's histogram bin must not depend on the precision of the reference
    luma = (crop.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float64)
    rgb = crop.astype(np.float64)
    half = rgb[::2, ::2]
    high, low = half.max(axis=-1), half.min(axis=-1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1.0), 0.0)
    laplacian = -4.0 * luma[1:-1, 1:-1] + luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:]
    histogram = np.bincount(np.clip(luma, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = histogram[histogram > 0] / histogram.sum()
    return {"brightness": luma.mean() / 255.0, "contrast": luma.std() / 255.0, "saturation": saturation.mean(),
            "sharpness": float(np.log1p(laplacian.var())), "entropy": float(-(p * np.log2(p)).sum() / 8.0)}


def _crops() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8), 8, axis=0), 8, axis=1)
    return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), smooth,
            np.full((224, 224, 3), 255, dtype=np.uint8), np.zeros((224, 224, 3), dtype=np.uint8),
            np.full((224, 224, 3), (200, 30, 90), dtype=np.uint8),
            rng.integers(120, 124, (224, 224, 3), dtype=np.uint8)]  # nearly flat: moments by cancellation


@pytest.mark.parametrize("index", range(6))
def test_image_statistics_equal_their_plain_definitions(index: int) -> None:
    crop = _crops()[index]
    expected = _reference_statistics(crop)
    actual = image_statistics(crop)
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name


def test_sessions_are_cached_per_version(tmp_path: Path) -> None:
    first = load_classifier(make_tiny_model(tmp_path / "v1", version="1"))
    assert load_classifier(tmp_path / "v1" / "model.card.json") is first
    second = load_classifier(make_tiny_model(tmp_path / "v2", version="2"))
    assert second is not first and second.card.version == "2"


def test_tampered_model_file_is_refused(tmp_path: Path) -> None:
    card_path = make_tiny_model(tmp_path, version="tampered")
    with (tmp_path / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelUnavailable, match="sha256"):
        load_classifier(card_path)


def test_softmax_is_stable_for_large_logits() -> None:
    probabilities = softmax(np.array([[1000.0, 1000.0, -1000.0]], dtype=np.float32))
    assert np.allclose(probabilities, [[0.5, 0.5, 0.0]])


_PEAK_PROBE = """
import resource, sys
from shared_code.inference.classifier import load_classifier
from shared_code.inference.pipeline import ClassificationPipeline
from tests.factories import image_bytes
pipeline = ClassificationPipeline(load_classifier(sys.argv[1]))
png = image_bytes("PNG", size=(2500, 2500), color=(20, 230, 20))
pipeline.classify_many([png], top_k=1)  # warm up: the session and its first buffers
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcomes = pipeline.classify_many([png] * 16, top_k=1)
assert all(o.predictions[0].label == "green" for o in outcomes), outcomes
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_a_batch_of_large_flat_pngs_holds_one_full_image_at_a_time(tmp_path: Path) -> None:
    """16 flat 2500x2500 PNGs (19 MB each decoded, 300 MB together) keep only their crops across the batch."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    card_path = make_tiny_model(tmp_path)
    repo = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
    probe = subprocess.run([sys.executable, "-c", _PEAK_PROBE, str(card_path)], cwd=repo, capture_output=True,
                           text=True, timeout=300, check=True)
    growth = int(probe.stdout.strip().splitlines()[-1])
    assert growth < 120 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MiB over the batch"


def test_the_decoded_pixels_of_a_request_are_capped(pipeline: ClassificationPipeline) -> None:
    from shared_code.errors import PayloadTooLarge  # noqa: PLC0415

    png = image_bytes("PNG", size=(100, 100))
    assert len(pipeline.classify_many([png] * 3, max_total_pixels=30_000)) == 3
    with pytest.raises(PayloadTooLarge):
        pipeline.classify_many([png] * 4, max_total_pixels=30_000)
