"""Class activation maps: the math, the crop geometry back to original pixels, and the end-to-end explain path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared_code.errors import BadRequest
from shared_code.inference.explain import (
    ExplanationUnavailable,
    choose_class,
    class_activation_map,
    colormap,
    crop_in_original,
    explain_image,
    heatmap_size,
    oriented_size,
    peak_in_image,
    project_to_image,
)
from shared_code.inference.model_repository import ModelProvider
from tests.factories import make_tiny_model, with_classifier_weights

pytestmark = pytest.mark.unit
RESIZE, CROP = 256, 224


def hot_spot_features(row: int, col: int, size: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Three channels: flat noise floor, a single hot cell, and a channel the class weighs negatively."""
    features = np.full((3, size, size), 0.2, dtype=np.float32)
    features[1, row, col] = 5.0
    features[2] = 3.0
    return features, np.array([0.0, 1.0, -0.1], dtype=np.float32)


def test_cam_is_the_weighted_sum_with_relu_normalised_to_one() -> None:
    features, weights = hot_spot_features(2, 5)
    cam = class_activation_map(features, weights)
    assert cam.shape == (7, 7) and cam.dtype == np.float32
    assert cam[2, 5] == pytest.approx(1.0)
    assert np.count_nonzero(cam) == 1  # every other cell is 1.0*0 - 0.1*3 < 0 and clipped by the ReLU
    against = np.array([0.0, -1.0, -0.1], dtype=np.float32)
    assert not class_activation_map(features, against).any()  # no positive evidence anywhere: all zeros
    with pytest.raises(ValueError, match="do not fit"):
        class_activation_map(features, weights[:2])


@pytest.mark.parametrize(("size", "cell", "expected_peak", "expected_box"), [
    # Landscape 400x300: resized to 341x256, crop left = round(58.5) = 58, top = 16. Cell (row 2, col 5) of 7
    # has its centre at (5.5/7*224, 2.5/7*224) = (176, 80) in the crop, (234, 96) in the resized image, and
    # (234*400/341, 96*300/256) = (274.49, 112.5) in the original.
    ((400, 300), (2, 5), (274, 112), (58 * 400 / 341, 16 * 300 / 256, 282 * 400 / 341, 240 * 300 / 256)),
    # Portrait 300x400: resized to 256x341, crop left = 16, top = 58; cell (row 5, col 1) centre (48, 176) in the
    # crop, (64, 234) resized, (64*300/256, 234*400/341) = (75.0, 274.49) original.
    ((300, 400), (5, 1), (75, 274), (16 * 300 / 256, 58 * 400 / 341, 240 * 300 / 256, 282 * 400 / 341)),
])
def test_the_peak_maps_through_the_centre_crop_to_original_pixels(
        size: tuple[int, int], cell: tuple[int, int], expected_peak: tuple[int, int],
        expected_box: tuple[float, float, float, float]) -> None:
    width, height = size
    cam = class_activation_map(*hot_spot_features(*cell))
    box = crop_in_original(size, size, RESIZE, CROP)
    assert box == pytest.approx(expected_box)
    assert peak_in_image(cam, box, size) == expected_peak
    heat = project_to_image(cam, box, size)
    assert heat.shape == (height, width) and heat.dtype == np.uint8
    hot_y, hot_x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    cell_w, cell_h = (box[2] - box[0]) / 7, (box[3] - box[1]) / 7
    assert abs(hot_x - expected_peak[0]) <= cell_w / 2 and abs(hot_y - expected_peak[1]) <= cell_h / 2
    assert heat.max() >= 250  # bilinear sampling at pixel centres lands within half a pixel of the cell centre
    left, top, right, bottom = (int(v) for v in box)
    # Outside the crop nothing is claimed; inside, the far corner of the map is cold too.
    assert not heat[:, : left - 1].any() and not heat[:, right + 2:].any()
    assert not heat[: top - 1].any() and not heat[bottom + 2:].any()


def test_a_reduced_scale_decode_is_scaled_back_to_the_original() -> None:
    # A 1000x750 JPEG decoded at 1/2 DCT scale is 500x375: the box must be twice the one of the decoded image.
    half = crop_in_original((500, 375), (500, 375), RESIZE, CROP)
    full = crop_in_original((500, 375), (1000, 750), RESIZE, CROP)
    assert full == pytest.approx(tuple(2 * v for v in half))


def test_the_heatmap_covers_the_image_and_is_capped_in_size() -> None:
    assert heatmap_size(640, 480) == (640, 480)
    assert heatmap_size(4000, 3000, max_side=1000) == (1000, 750)
    assert heatmap_size(300, 6000, max_side=600) == (30, 600)
    ones = np.ones((7, 7), dtype=np.float32)
    box = crop_in_original((4000, 3000), (4000, 3000), RESIZE, CROP)
    small = project_to_image(ones, box, (4000, 3000), (400, 300))
    assert small.shape == (300, 400)
    inside_columns = np.flatnonzero(small[150])
    # The crop spans original x in [box[0], box[2]); in the 1/10 grid that is columns box/10, within one.
    assert abs(inside_columns[0] - box[0] / 10) <= 1 and abs(inside_columns[-1] + 1 - box[2] / 10) <= 1
    assert set(np.unique(small)) == {0, 255}


def test_choose_class_by_index_label_or_top1() -> None:
    labels = ["cat", "Dog", "bird"]
    probabilities = np.array([0.1, 0.2, 0.7], dtype=np.float32)
    assert choose_class(labels, probabilities, None, None) == 2
    assert choose_class(labels, probabilities, 0, None) == 0
    assert choose_class(labels, probabilities, None, "dog") == 1
    with pytest.raises(BadRequest, match="between 0 and 2"):
        choose_class(labels, probabilities, 3, None)
    with pytest.raises(BadRequest, match="not one of"):
        choose_class(labels, probabilities, None, "fish")


def test_colormap_runs_from_blue_to_red() -> None:
    ends = colormap(np.array([[0, 128, 255]], dtype=np.uint8))[0]
    assert ends[0][2] > ends[0][0] and ends[2][0] > ends[2][2]  # cold is blue, hot is red
    assert ends[1][1] == 255  # the middle is green


# --- the whole path with a real (tiny) ONNX model -----------------------------------------------------------
def jpeg_with_red_corner(size: tuple[int, int], corner: tuple[int, int], *, orientation: int | None = None) -> bytes:
    """A dark image with one red square of a quarter of the shorter side at `corner` (x, y of its top-left)."""
    image = Image.new("RGB", size, (10, 10, 10))
    side = min(size) // 4
    image.paste((240, 10, 10), (corner[0], corner[1], corner[0] + side, corner[1] + side))
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_cam_provider(tmp_path_factory: pytest.TempPathFactory) -> ModelProvider:
    card = with_classifier_weights(make_tiny_model(tmp_path_factory.mktemp("cam-model")))
    return ModelProvider(local_path=str(card))


def test_explain_finds_the_red_square_in_original_pixels(tiny_cam_provider: ModelProvider) -> None:
    # 800x600 with the tiny model's resize 36 decodes at 1/8 DCT scale (100x75): the explanation must still
    # speak in 800x600 pixels. The red square sits at x 450..600, y 200..350, inside the centre crop.
    data = jpeg_with_red_corner((800, 600), (450, 200))
    explanation = explain_image(tiny_cam_provider.current(), data, label="red", max_side=400)
    assert (explanation.image_width, explanation.image_height) == (800, 600)
    assert explanation.label == "red" and explanation.class_index == 1 and 0.0 < explanation.score <= 1.0
    x, y = explanation.peak
    assert 450 <= x < 600 and 200 <= y < 350
    assert explanation.heatmap.shape == (300, 400)  # capped at 400 px, aspect kept
    hot = explanation.heatmap > 128
    ys, xs = np.nonzero(hot)
    # In the 400x300 grid the square spans x 225..300, y 100..175; bilinear spill is at most one cell (8 px).
    assert xs.min() >= 225 - 8 and xs.max() <= 300 + 8 and ys.min() >= 100 - 8 and ys.max() <= 175 + 8
    with Image.open(io.BytesIO(explanation.overlay_png)) as overlay:
        assert overlay.format == "PNG" and overlay.size == (400, 300)


def test_explain_follows_exif_orientation(tiny_cam_provider: ModelProvider) -> None:
    # Stored 600x400 with orientation 6 (rotate 90 clockwise to view): viewers show it 400x600, and the square
    # stored at the top-left (x 0..100, y 0..100) appears at the top-right (x 300..400, y 0..100).
    data = jpeg_with_red_corner((600, 400), (40, 40), orientation=6)
    assert oriented_size(data) == (400, 600)
    explanation = explain_image(tiny_cam_provider.current(), data, label="red")
    assert (explanation.image_width, explanation.image_height) == (400, 600)
    assert explanation.heatmap.shape == (600, 400)
    x, y = explanation.peak
    assert x >= 200 and y < 300  # the right half, upper half: where a viewer sees the square


def test_a_model_without_classifier_weights_cannot_explain(tmp_path: Path) -> None:
    provider = ModelProvider(local_path=str(make_tiny_model(tmp_path / "plain", version="nocam")))
    with pytest.raises(ExplanationUnavailable, match=r"classifier\.npz") as raised:
        explain_image(provider.current(), jpeg_with_red_corner((64, 64), (0, 0)))
    assert raised.value.status_code == 409
