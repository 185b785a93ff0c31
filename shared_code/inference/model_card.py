"""The model card: the single source of truth for how a model is fed and how its outputs are read.

Export writes it beside the ONNX file; serving, calibration and evaluation read it. Nothing else in the
code base knows an input size, a mean/std or a label list.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CARD_SUFFIX = ".card.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelCard(BaseModel):
    """Everything needed to serve one ONNX classifier version."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    version: str
    architecture: str
    weights: str = Field(description="Where the weights came from, e.g. 'imagenet', 'random', 'finetuned'.")
    onnx_file: str = Field(description="ONNX file name, relative to the card's folder.")
    sha256: str
    input_name: str
    output_name: str = Field(description="Logits output, shape [batch, num_classes].")
    feature_output_name: str | None = Field(
        default=None, description="Last convolutional feature map [batch, C, h, w], for CAM and embeddings."
    )
    input_size: tuple[int, int] = Field(description="(height, width) of the network input.")
    resize_size: int = Field(description="Shorter side is resized to this before the centre crop.")
    crop_size: int
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = Field(default=1.0 / 255.0, description="Pixel values are multiplied by this before mean/std.")
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    outputs_are: Literal["logits", "probabilities"] = "logits"
    labels: list[str]
    precision: str = Field(default="fp32", description="fp32, or int8-qdq-static / int8-dynamic.")
    classifier_weights_file: str | None = Field(
        default=None, description="npz with W [num_classes, C] and b of the final linear layer (for CAM)."
    )
    reference_profile_file: str | None = None
    source: str = ""
    created_at: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelCard:
        if self.crop_size > self.resize_size:
            raise ValueError("crop_size must not exceed resize_size")
        if self.input_size != (self.crop_size, self.crop_size):
            raise ValueError("input_size must equal (crop_size, crop_size)")
        if not self.labels:
            raise ValueError("labels must not be empty")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def model_id(self) -> str:
        """Cache key: name, version and content hash together identify one servable artefact."""
        return f"{self.name}:{self.version}:{self.sha256[:12]}"

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path_for(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.stem + CARD_SUFFIX)


def load_card(path: Path) -> tuple[ModelCard, Path]:
    """Load a card (or find the card beside an ONNX file); return it with the ONNX path it describes."""
    if path.suffix == ".onnx":
        card_file = card_path_for(path)
        if not card_file.exists():
            raise FileNotFoundError(f"no model card beside {path} (expected {card_file.name})")
    else:
        card_file = path
    card = ModelCard.model_validate(json.loads(card_file.read_text(encoding="utf-8")))
    return card, card_file.parent / card.onnx_file


def save_card(card: ModelCard, onnx_path: Path) -> Path:
    target = card_path_for(onnx_path)
    target.write_text(card.to_json() + "\n", encoding="utf-8")
    return target
