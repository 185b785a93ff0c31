"""The core benchmark's bound on the pipeline ratio and its decode floor."""

from __future__ import annotations

import pytest

from bench.core import decode_floor_ms, pipeline_bound
from tests.factories import image_bytes

pytestmark = pytest.mark.unit


def test_the_bound_adds_only_decode_and_resize_to_raw_inference() -> None:
    assert pipeline_bound(100.0, 0.0, 0.0) == pytest.approx(1.0)  # nothing but inference: no tax
    assert pipeline_bound(100.0, 2.0, 0.5) == pytest.approx(10.0 / 12.5)  # 10 ms raw + 2.5 ms of library work
    assert pipeline_bound(100.0, 12.0, 0.5) < 0.75  # a 12 MP decode alone can rule a target out


def test_the_decode_floor_is_a_positive_per_image_time() -> None:
    photos = [image_bytes("JPEG", size=(320, 240)), image_bytes("JPEG", size=(240, 320))]
    floor = decode_floor_ms(photos, 224, 0.2)
    assert 0.0 < floor < 1000.0
