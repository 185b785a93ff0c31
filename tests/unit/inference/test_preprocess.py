"""Preprocessing follows the model card exactly, and the fast path equals the textbook one."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shared_code.inference.model_card import ModelCard
from shared_code.inference.preprocess import crop_box, preprocess, preprocess_batch, resize_and_crop

pytestmark = pytest.mark.unit


def card(**overrides: object) -> ModelCard:
    fields: dict[str, object] = {
        "name": "m", "version": "1", "architecture": "x", "weights": "random", "onnx_file": "m.onnx",
        "sha256": "0" * 64, "input_name": "input", "output_name": "logits", "input_size": (224, 224),
        "resize_size": 256, "crop_size": 224, "labels": ["a", "b"],
    }
    fields.update(overrides)
    return ModelCard.model_validate(fields)


def textbook(image: Image.Image, resize: int, crop: int) -> Image.Image:
    width, height = image.size
    if width <= height:
        new_w, new_h = resize, round(resize * height / width)
    else:
        new_w, new_h = round(resize * width / height), resize
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = round((new_w - crop) / 2.0), round((new_h - crop) / 2.0)
    return resized.crop((left, top, left + crop, top + crop))


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (224, 224), (1024, 257), (300, 3000), (256, 256)])
def test_box_resize_equals_resize_then_crop(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    fast = np.asarray(resize_and_crop(image, card()), dtype=np.int16)
    slow = np.asarray(textbook(image, 256, 224), dtype=np.int16)
    assert fast.shape == (224, 224, 3)
    assert np.abs(fast - slow).max() <= 1  # identical filter taps; at most a rounding step apart


def test_normalisation_uses_card_mean_std_and_layout() -> None:
    image = Image.new("RGB", (300, 300), (255, 0, 128))
    tensor = preprocess(image, card())
    assert tensor.shape == (3, 224, 224) and tensor.dtype == np.float32
    expected = (np.array([1.0, 0.0, 128 / 255]) - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert np.allclose(tensor[:, 100, 100], expected, atol=1e-5)


def test_bgr_and_nhwc_cards_are_honoured() -> None:
    image = Image.new("RGB", (64, 64), (255, 0, 0))
    custom = card(resize_size=40, crop_size=32, input_size=(32, 32), channel_order="BGR", layout="NHWC",
                  mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    batch = preprocess_batch([image, image], custom)
    assert batch.shape == (2, 32, 32, 3)
    assert np.allclose(batch[0, 5, 5], [0.0, 0.0, 1.0])


def test_crop_box_is_centred() -> None:
    left, top, right, bottom = crop_box(512, 256, 256, 224)
    assert (right - left) == pytest.approx(224.0) and (bottom - top) == pytest.approx(224.0)
    assert left == pytest.approx((512 - 224) / 2)
