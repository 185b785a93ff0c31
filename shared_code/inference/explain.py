"""Class activation maps (CAM): where in the image the evidence for one class lies.

For a network that ends in global average pooling and one linear layer, the logit of class k is
`sum_c W[k, c] * mean(F[c]) + b[k]`; the map `sum_c W[k, c] * F[c]` (Zhou et al., 2016) spreads that evidence
over the feature grid. The feature map `F` [C, h, w] is the model's `features` output; `W` comes from
`classifier.npz` beside the model (model/export.py `write_classifier_weights`). numpy and Pillow only.

Geometry: the network saw the centre crop `crop_box(...)` of the decoded image (inference.preprocess). The map
is projected back through that box into ORIGINAL image pixels (after EXIF orientation; a JPEG decoded at reduced
DCT scale is scaled back up), bilinearly, sampling at pixel centres; pixels outside the crop get 0.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shared_code.errors import BadRequest, ServiceError
from shared_code.inference.classifier import Classifier
from shared_code.inference.pipeline import ClassificationPipeline
from shared_code.inference.preprocess import Normaliser, crop_box, resize_and_crop

Box = tuple[float, float, float, float]  # left, top, right, bottom in original image pixels
HEATMAP_MAX_SIDE = 1024  # the heatmap and overlay cover the whole image, at most this many pixels per side
_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that rotate by 90 or 270 degrees


class ExplanationUnavailable(ServiceError):
    """The served model cannot produce a CAM (no feature output, or no classifier weights)."""

    status_code = 409
    code = "explanation_unavailable"


@dataclass(frozen=True)
class Explanation:
    """A CAM for one class of one image, in original image coordinates."""

    class_index: int
    label: str
    score: float
    model_name: str
    model_version: str
    image_width: int
    image_height: int
    heatmap: np.ndarray  # uint8 [height, width], covers the whole image (scaled down to HEATMAP_MAX_SIDE)
    peak: tuple[int, int]  # (x, y) in original image pixels
    crop: Box
    overlay_png: bytes


# --- the math (pure) ------------------------------------------------------------------------------------
def class_activation_map(features: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
    """`ReLU(sum_c w[c] * F[c])` normalised to [0, 1] (all zeros when no cell has positive evidence).

    `features` is one image's [C, h, w] map, `class_weights` the [C] row of the final linear layer.
    """
    if features.ndim != 3 or class_weights.shape != (features.shape[0],):
        raise ValueError(f"features {features.shape} and weights {class_weights.shape} do not fit together")
    cam = np.tensordot(class_weights.astype(np.float32), features.astype(np.float32), axes=(0, 0))
    np.maximum(cam, 0.0, out=cam)
    top = float(cam.max())
    if top > 0.0 and np.isfinite(top):
        cam /= top
    else:
        cam[:] = 0.0
    result: np.ndarray = cam.astype(np.float32)
    return result


def crop_in_original(decoded_size: tuple[int, int], original_size: tuple[int, int], resize_size: int,
                     crop_size: int) -> Box:
    """The network's centre crop as a box in original pixels.

    `decoded_size` is the image the preprocessing saw (smaller than the original when a JPEG was decoded at
    reduced DCT scale); the box is scaled from it to `original_size`.
    """
    dw, dh = decoded_size
    ow, oh = original_size
    left, top, right, bottom = crop_box(dw, dh, resize_size, crop_size)
    sx, sy = ow / dw, oh / dh
    return (left * sx, top * sy, right * sx, bottom * sy)


def heatmap_size(width: int, height: int, max_side: int = HEATMAP_MAX_SIDE) -> tuple[int, int]:
    """The heatmap grid: the image size, scaled down (aspect kept) so the longer side is at most `max_side`."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    factor = max_side / longest
    return max(1, round(width * factor)), max(1, round(height * factor))


def _axis_samples(count: int, extent: float, start: float, stop: float, cells: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For `count` output pixels spanning `extent` original pixels: cell indices, weights, inside mask."""
    centres = (np.arange(count, dtype=np.float64) + 0.5) * (extent / count)
    inside = (centres >= start) & (centres < stop)
    position = (centres - start) / (stop - start) * cells - 0.5  # feature-cell coordinates (cell centres at i)
    position = np.clip(position, 0.0, cells - 1.0)
    low = np.floor(position).astype(np.intp)
    high = np.minimum(low + 1, cells - 1)
    return low, high, (position - low).astype(np.float32), inside


def project_to_image(cam: np.ndarray, crop: Box, image_size: tuple[int, int],
                     out_size: tuple[int, int] | None = None) -> np.ndarray:
    """Bilinearly upsample a [h, w] map in [0, 1] onto the whole image as uint8 [out_h, out_w].

    Output pixel (X, Y) samples the image at its centre; positions inside `crop` interpolate between feature
    cell centres (clamped at the crop border), positions outside the crop are 0.
    """
    width, height = image_size
    out_w, out_h = out_size or image_size
    rows, cols = cam.shape
    left, top, right, bottom = crop
    x0, x1, wx, inside_x = _axis_samples(out_w, width, left, right, cols)
    y0, y1, wy, inside_y = _axis_samples(out_h, height, top, bottom, rows)
    upper = cam[y0][:, x0] * (1.0 - wx) + cam[y0][:, x1] * wx
    lower = cam[y1][:, x0] * (1.0 - wx) + cam[y1][:, x1] * wx
    values = upper * (1.0 - wy)[:, None] + lower * wy[:, None]
    values *= inside_y[:, None] & inside_x[None, :]
    heat: np.ndarray = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    return heat


def peak_in_image(cam: np.ndarray, crop: Box, image_size: tuple[int, int]) -> tuple[int, int]:
    """The centre of the hottest feature cell, in original image pixels (x, y)."""
    rows, cols = cam.shape
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    left, top, right, bottom = crop
    x = left + (col + 0.5) / cols * (right - left)
    y = top + (row + 0.5) / rows * (bottom - top)
    width, height = image_size
    return min(max(int(x), 0), width - 1), min(max(int(y), 0), height - 1)


def colormap(heat: np.ndarray) -> np.ndarray:
    """A jet-like colour map: uint8 [h, w] -> uint8 RGB [h, w, 3] (blue = cold, red = hot)."""
    t = heat.astype(np.float32) / 255.0
    channels = [np.clip(1.5 - np.abs(4.0 * t - centre), 0.0, 1.0) for centre in (3.0, 2.0, 1.0)]
    rgb: np.ndarray = np.rint(np.stack(channels, axis=-1) * 255.0).astype(np.uint8)
    return rgb


def overlay(image: Image.Image, heat: np.ndarray, max_alpha: float = 0.6) -> Image.Image:
    """The image with the heatmap blended in: opacity grows with heat, so cold regions stay untouched."""
    height, width = heat.shape
    base = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    alpha = (heat.astype(np.float32) / 255.0 * max_alpha)[..., None]
    blended = base * (1.0 - alpha) + colormap(heat).astype(np.float32) * alpha
    return Image.fromarray(np.rint(blended).astype(np.uint8), mode="RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


# --- from bytes to an explanation -----------------------------------------------------------------------
def oriented_size(data: bytes) -> tuple[int, int]:
    """The image's width and height as a viewer shows it (EXIF orientation applied), from the header only."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        orientation = image.getexif().get(_EXIF_ORIENTATION)
    return (height, width) if orientation in _SWAPS_AXES else (width, height)


_weights_cache: dict[str, np.ndarray] = {}
_weights_lock = threading.Lock()


def classifier_weights(classifier: Classifier) -> np.ndarray:
    """W [num_classes, C] from the model's classifier.npz (cached per model version)."""
    card = classifier.card
    if not classifier.has_features:
        raise ExplanationUnavailable(f"model {card.name}:{card.version} has no feature map output; "
                                     "class activation maps need one (re-export it with model.export)")
    if not card.classifier_weights_file:
        raise ExplanationUnavailable(f"model {card.name}:{card.version} has no classifier weights "
                                     "(classifier.npz); class activation maps need them")
    with _weights_lock:
        cached = _weights_cache.get(card.model_id)
        if cached is not None:
            return cached
        path = classifier.onnx_path.parent / Path(card.classifier_weights_file).name
        try:
            with np.load(path) as archive:
                weights = np.asarray(archive["W"], dtype=np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise ExplanationUnavailable(f"model {card.name}:{card.version}: classifier weights "
                                         f"{path.name} cannot be read") from exc
        if weights.ndim != 2 or weights.shape[0] != card.num_classes:
            raise ExplanationUnavailable(f"classifier weights {weights.shape} do not match the model's "
                                         f"{card.num_classes} classes")
        _weights_cache[card.model_id] = weights
        return weights


def choose_class(labels: list[str], probabilities: np.ndarray, class_index: int | None, label: str | None) -> int:
    """The requested class (by index or label), or the top-1 prediction."""
    if class_index is not None:
        if not 0 <= class_index < len(labels):
            raise BadRequest(f"class_index must be between 0 and {len(labels) - 1}")
        return class_index
    if label is not None:
        if label in labels:
            return labels.index(label)
        folded = [name.casefold() for name in labels]
        if label.casefold() in folded:
            return folded.index(label.casefold())
        raise BadRequest(f"{label[:100]!r} is not one of the model's labels")
    return int(np.argmax(probabilities))


def explain_image(pipeline: ClassificationPipeline, data: bytes, *, class_index: int | None = None,
                  label: str | None = None, max_side: int = HEATMAP_MAX_SIDE) -> Explanation:
    """Decode like the classify path, run the model once, and build the CAM of the chosen class."""
    classifier = pipeline.classifier
    card = classifier.card
    weights = classifier_weights(classifier)
    decoded = pipeline.decode(data)  # raises ImageRejected for bad input, exactly like classify
    original = oriented_size(data) if decoded.format == "JPEG" else (decoded.width, decoded.height)
    crop = np.asarray(resize_and_crop(decoded.image, card), dtype=np.uint8)
    outputs = classifier.run(Normaliser(card)([crop]))
    if outputs.features is None:  # pragma: no cover - has_features was checked above
        raise ExplanationUnavailable("the model returned no feature map")
    features = outputs.features[0]
    if card.layout == "NHWC" and features.shape[-1] == weights.shape[1]:
        features = np.moveaxis(features, -1, 0)
    if features.ndim != 3 or features.shape[0] != weights.shape[1]:
        raise ExplanationUnavailable(f"feature map {features.shape} does not match classifier weights "
                                     f"{weights.shape}")
    probabilities = classifier.probabilities(outputs.logits)[0]
    chosen = choose_class(card.labels, probabilities, class_index, label)
    cam = class_activation_map(features, weights[chosen])
    box = crop_in_original((decoded.width, decoded.height), original, card.resize_size, card.crop_size)
    out_size = heatmap_size(*original, max_side=max_side)
    heat = project_to_image(cam, box, original, out_size)
    return Explanation(
        class_index=chosen, label=card.labels[chosen], score=float(probabilities[chosen]), model_name=card.name,
        model_version=card.version, image_width=original[0], image_height=original[1], heatmap=heat,
        peak=peak_in_image(cam, box, original), crop=box, overlay_png=png_bytes(overlay(decoded.image, heat)),
    )
