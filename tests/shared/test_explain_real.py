"""CAM with the real EfficientNet-Lite0 on real photos: the evidence peak lies on the object.

Each bounding box was drawn by hand, before looking at any heatmap: the photo was rendered with a 50 px grid
(lines every 50 px, labelled with their coordinate) and the box read off as the tightest grid-aligned rectangle
(to about 5 px) around the named object, in original pixel coordinates (these JPEGs carry no EXIF rotation).
Photos were picked where one object is clearly localised and fills well under the whole frame, both landscape
and portrait, so the test checks the crop mapping back to the original in both orientations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared_code.inference.explain import explain_image
from shared_code.inference.model_repository import ModelProvider
from tests.factories import SHARED_PHOTOS

CURRENT_CARD = Path(__file__).resolve().parents[2] / "model" / "artifacts" / "current.card.json"

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not (SHARED_PHOTOS / "labels.csv").exists(),
                       reason="../shared/imagenet-sample is not available"),
    pytest.mark.skipif(not CURRENT_CARD.exists(),
                       reason="model/artifacts/current.card.json is missing: run `make model` first"),
]

# file, ImageNet label of the card, (left, top, right, bottom) of the object in original pixels, image size
BOXES = [
    # landscape 845x563: the owl's head (facial disc and crown), not its body hidden in the branches
    ("n01622779_great_grey_owl.JPEG", "great grey owl", (300, 95, 585, 345), (845, 563)),
    # landscape 500x375: the whole fish from tail fin tip to snout, dorsal fin to pelvic fins
    ("n01440764_tench.JPEG", "tench", (35, 128, 428, 300), (500, 375)),
    # portrait 341x500: the bird from crown to the tip of its long tail, excluding the branch
    ("n01828970_bee_eater.JPEG", "bee eater", (58, 84, 240, 398), (341, 500)),
    # portrait 375x500: the yellow signal housing with its three lamps, excluding the pole and the sign
    ("n06874185_traffic_light.JPEG", "traffic light", (130, 55, 300, 440), (375, 500)),
    # portrait 333x500: only the tennis ball under the dog's paw (a small object next to a large salient dog)
    ("n04409515_tennis_ball.JPEG", "tennis ball", (155, 295, 252, 390), (333, 500)),
]


@pytest.fixture(scope="module")
def provider() -> ModelProvider:
    return ModelProvider(local_path=str(CURRENT_CARD))


@pytest.mark.parametrize(("filename", "label", "box", "size"), BOXES, ids=[b[1] for b in BOXES])
def test_the_cam_peak_lies_inside_the_object(provider: ModelProvider, filename: str, label: str,
                                             box: tuple[int, int, int, int], size: tuple[int, int]) -> None:
    card = provider.current().card
    if card.classifier_weights_file is None:
        pytest.skip(f"{CURRENT_CARD.name} has no classifier.npz (an older export)")
    explanation = explain_image(provider.current(), (SHARED_PHOTOS / filename).read_bytes(), label=label)
    assert (explanation.image_width, explanation.image_height) == size
    assert explanation.label.casefold() == label.casefold()
    left, top, right, bottom = box
    x, y = explanation.peak
    assert left <= x <= right and top <= y <= bottom, f"peak {explanation.peak} outside {box}"
    # The projected heatmap agrees with the peak: its hottest pixel is in the box too.
    heat = explanation.heatmap
    assert heat.shape == (size[1], size[0])
    hy, hx = np.unravel_index(int(np.argmax(heat)), heat.shape)
    assert left <= hx <= right and top <= hy <= bottom
