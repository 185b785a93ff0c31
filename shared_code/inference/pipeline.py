"""The classification pipeline: bytes -> decode -> preprocess -> ONNX -> top-k + drift features."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from shared_code.errors import ImageRejected, PayloadTooLarge
from shared_code.inference.classifier import Classifier, Prediction
from shared_code.inference.features import ImageFeatures, confidence_and_margin, embeddings, image_statistics
from shared_code.inference.imaging import DecodedImage, ImageLimits, decode_image
from shared_code.inference.preprocess import resize_and_crop


@dataclass(frozen=True)
class ImageClassification:
    """The outcome for one image."""

    predictions: list[Prediction]
    features: ImageFeatures
    model_name: str
    model_version: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    backend: str = ""  # e.g. openvino-int8: the engine and arithmetic that produced the predictions


@dataclass(frozen=True)
class _Facts:
    """What a result needs of the original image once its pixels are gone."""

    width: int
    height: int
    format: str
    decode_ms: float


class ClassificationPipeline:
    """Classifies untrusted image bytes with one model; safe to share between threads."""

    def __init__(self, classifier: Classifier, limits: ImageLimits | None = None) -> None:
        self.classifier = classifier
        self.card = classifier.card
        self.limits = limits or ImageLimits()
        # JPEGs are DCT-decoded at the smallest scale (1/2, 1/4, 1/8) that keeps the short side at or above the
        # resize target: the resize then only ever shrinks, with Pillow's antialiasing filter, as it would from
        # the full-size decode, at a fraction of the decode cost (a 12 MP photo decodes at 1/8 in ~1/20 the time).
        self._min_side_hint = self.card.resize_size

    def warm_up(self) -> None:
        """Pay the first image's one-off costs now: the engine's first run (a zero crop straight to the engine, not
        through the batcher, so a quick start's switch still waits for a real request), the embedding projection
        (it imports numpy.random, ~50 ms) and Pillow's plugins for the common formats. The worker's prewarm thread
        calls this."""
        Image.preinit()
        height, width = self.card.input_size
        outputs = self.classifier.warm_up(np.zeros((1, height, width, 3), dtype=np.uint8))
        embeddings(outputs.features, self.classifier.probabilities(outputs.logits))

    def decode(self, data: bytes) -> DecodedImage:
        return decode_image(data, self.limits, min_side_hint=self._min_side_hint)

    def classify_bytes(self, data: bytes, top_k: int = 5) -> ImageClassification:
        """Classify one image; raises an `ImageRejected` subclass for bad input."""
        outcome = self.classify_many([data], top_k)[0]
        if isinstance(outcome, ImageRejected):
            raise outcome
        return outcome

    def classify_many(self, images: Sequence[bytes], top_k: int = 5, *, max_total_pixels: int = 0
                      ) -> list[ImageClassification | ImageRejected]:
        """Classify several images in one batch; bad ones come back as their rejection, in order.

        Only each image's crop and facts are kept across the batch: the full-resolution decode is dropped as
        soon as it is cropped, so a batch holds one large image at a time, not all of them. With
        `max_total_pixels`, the decoded pixels of the whole batch are capped: `PayloadTooLarge` (413).
        """
        outcomes: list[ImageClassification | ImageRejected | None] = [None] * len(images)
        decoded: list[tuple[int, _Facts, np.ndarray, float]] = []
        total_pixels = 0
        for index, data in enumerate(images):
            try:
                image = self.decode(data)
            except ImageRejected as rejection:
                outcomes[index] = rejection
                continue
            total_pixels += image.width * image.height
            if max_total_pixels and total_pixels > max_total_pixels:
                raise PayloadTooLarge(f"the images of this request have more than {max_total_pixels} pixels "
                                      "together; send fewer or smaller images per request")
            started = time.perf_counter()
            crop = np.asarray(resize_and_crop(image.image, self.card), dtype=np.uint8)
            facts = _Facts(image.width, image.height, image.format, image.decode_ms)
            del image  # the full-resolution pixels go now, not at the end of the batch
            decoded.append((index, facts, crop, (time.perf_counter() - started) * 1000.0))
        if decoded:
            # One uint8 batch: a view for a single image, one copy per crop otherwise; the float input is made
            # by the backend (in place into its input buffer, or inside the compiled graph).
            crops = decoded[0][2][None] if len(decoded) == 1 else np.stack([crop for _, _, crop, _ in decoded])
            outputs = self.classifier.run_crops(crops)
            probabilities = self.classifier.probabilities(outputs.logits)
            vectors = embeddings(outputs.features, probabilities)
            per_image_inference = outputs.inference_ms / len(decoded)
            for row, (index, facts, crop, resize_ms) in enumerate(decoded):
                outcomes[index] = self._result(
                    facts, crop, probabilities[row], vectors[row], top_k,
                    {"decode": facts.decode_ms, "preprocess": resize_ms, "inference": per_image_inference},
                    outputs.backend,
                )
        return [outcome for outcome in outcomes if outcome is not None]

    def _result(self, image: _Facts, crop: np.ndarray, probabilities: np.ndarray, vector: np.ndarray,
                top_k: int, timings: dict[str, float], backend: str) -> ImageClassification:
        confidence, margin = confidence_and_margin(probabilities)
        features = ImageFeatures(
            width=image.width, height=image.height, format=image.format, **image_statistics(crop),
            confidence=confidence, margin=margin, embedding=[round(float(v), 5) for v in vector],
        )
        timings = {name: round(value, 3) for name, value in timings.items()}
        timings["total"] = round(sum(timings.values()), 3)
        return ImageClassification(
            predictions=self.classifier.top_k(probabilities, top_k), features=features,
            model_name=self.card.name, model_version=self.card.version, timings_ms=timings,
            backend=backend,
        )
