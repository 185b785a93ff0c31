"""Model input preparation, driven only by the model card. The one implementation of preprocessing.

Geometry follows the ImageNet convention the cards describe: resize the shorter side to `resize_size`
(longer side `round(resize * long / short)`, as the reference evaluation does), then centre-crop `crop_size` at
`int(round((side - crop) / 2))`. Pillow's `resize(box=...)` resamples only the cropped region with the
filter taps of the full resize (its kernels are clipped to the whole image, not the box), so the result
equals resize-then-crop while touching ~half the pixels and skipping one intermediate image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from shared_code.inference.model_card import ModelCard

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def crop_box(width: int, height: int, resize_size: int, crop_size: int) -> tuple[float, float, float, float]:
    """Source-pixel box that maps onto the centre crop of the resized image."""
    if width <= height:
        new_w, new_h = resize_size, round(resize_size * height / width)
    else:
        new_w, new_h = round(resize_size * width / height), resize_size
    left = round((new_w - crop_size) / 2.0)
    top = round((new_h - crop_size) / 2.0)
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + crop_size) * sx, (top + crop_size) * sy)


def resize_and_crop(image: Image.Image, card: ModelCard) -> Image.Image:
    """The centre crop at network resolution, as an 8-bit RGB image."""
    box = crop_box(image.width, image.height, card.resize_size, card.crop_size)
    return image.resize((card.crop_size, card.crop_size), _RESAMPLE[card.interpolation], box=box)


class Normaliser:
    """Turns HWC uint8 crops into the network's float32 layout with one fused multiply-add."""

    def __init__(self, card: ModelCard) -> None:
        mean = np.asarray(card.mean, dtype=np.float32)
        std = np.asarray(card.std, dtype=np.float32)
        order = [2, 1, 0] if card.channel_order == "BGR" else [0, 1, 2]
        self._order = order
        self._gain = (card.scale / std)[order].astype(np.float32)
        self._offset = (-mean / std)[order].astype(np.float32)
        self._nchw = card.layout == "NCHW"

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Stack HWC uint8 arrays into one NCHW (or NHWC) float32 batch."""
        height, width = crops[0].shape[:2]
        if self._nchw:
            batch = np.empty((len(crops), 3, height, width), dtype=np.float32)
            for i, crop in enumerate(crops):
                chw = crop.transpose(2, 0, 1)
                for c in range(3):
                    out = batch[i, c]
                    np.multiply(chw[self._order[c]], self._gain[c], out=out, dtype=np.float32)
                    out += self._offset[c]
            return batch
        batch = np.empty((len(crops), height, width, 3), dtype=np.float32)
        for i, crop in enumerate(crops):
            np.multiply(crop[..., self._order], self._gain, out=batch[i], dtype=np.float32)
            batch[i] += self._offset
        return batch


def preprocess_batch(images: Sequence[Image.Image], card: ModelCard) -> np.ndarray:
    """Resize, crop and normalise RGB images into one network input batch."""
    crops = [np.asarray(resize_and_crop(image, card), dtype=np.uint8) for image in images]
    return Normaliser(card)(crops)


def preprocess(image: Image.Image, card: ModelCard) -> np.ndarray:
    """One image as a network input without the batch axis (CHW for NCHW models)."""
    single: np.ndarray = preprocess_batch([image], card)[0]
    return single
