"""Write a model card for an existing ImageNet-style ONNX classifier (runs in the app venv, no torch).

    python -m model.card path/to/model.onnx [--labels FILE] [--resize 256 --crop 224 --mean .. --std ..]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from model.imagenet import (
    IMAGENET_CLASSES,
    STANDARD_CROP,
    STANDARD_MEAN,
    STANDARD_STD,
    imagenet_labels,
    resize_for_crop,
)
from shared_code.inference.model_card import CARD_SUFFIX, ModelCard, card_path_for, load_card, save_card, sha256_of

# Ops that only appear in quantized graphs; their presence marks the card's precision as int8.
_QUANTIZED_OPS = {"QLinearConv", "QLinearMatMul", "QuantizeLinear", "DequantizeLinear", "MatMulInteger",
                  "ConvInteger", "DynamicQuantizeLinear"}


@dataclass(frozen=True)
class OnnxSignature:
    """What the ONNX graph itself says about how to call it."""

    input_name: str
    layout: str
    input_hw: tuple[int, int] | None
    output_name: str
    num_classes: int | None
    feature_output_name: str | None


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def inspect_onnx(onnx_path: Path) -> OnnxSignature:
    """Read input/output names and shapes with onnxruntime; pick the logits and feature-map outputs."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ValueError(f"{onnx_path.name}: expected one 4-D image input, got {[(i.name, i.shape) for i in inputs]}")
    shape = inputs[0].shape
    if _static(shape[3]) == 3 and _static(shape[1]) != 3:
        layout, input_hw = "NHWC", (_static(shape[1]), _static(shape[2]))
    else:
        layout, input_hw = "NCHW", (_static(shape[2]), _static(shape[3]))
    outputs = session.get_outputs()
    two_d = [o for o in outputs if len(o.shape) == 2]
    if not two_d:
        raise ValueError(f"{onnx_path.name}: no [batch, classes] output among {[(o.name, o.shape) for o in outputs]}")
    logits = next((o for o in two_d if _static(o.shape[1]) == IMAGENET_CLASSES), two_d[0])
    features = next((o for o in outputs if len(o.shape) == 4), None)
    return OnnxSignature(
        input_name=inputs[0].name,
        layout=layout,
        input_hw=(input_hw[0], input_hw[1]) if input_hw[0] and input_hw[1] else None,
        output_name=logits.name,
        num_classes=_static(logits.shape[1]),
        feature_output_name=features.name if features is not None else None,
    )


def detect_precision(onnx_path: Path) -> str:
    """'int8' when the graph holds quantized operators, else 'fp32' (needs the dev dependency onnx)."""
    try:
        import onnx  # noqa: PLC0415 - optional: the deployed app has no onnx, only the tools do
    except ImportError:
        return "fp32"
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return "int8" if any(node.op_type in _QUANTIZED_OPS for node in graph.node) else "fp32"


def build_card(
    onnx_path: Path,
    *,
    labels: Sequence[str] | None = None,
    name: str | None = None,
    version: str = "1",
    architecture: str | None = None,
    weights: str = "external",
    resize: int | None = None,
    crop: int | None = None,
    mean: Sequence[float] = STANDARD_MEAN,
    std: Sequence[float] = STANDARD_STD,
    interpolation: str = "bilinear",
    outputs_are: str = "logits",
    onnx_file: str | None = None,
) -> ModelCard:
    """A card for `onnx_path`: ImageNet labels and preprocessing unless told otherwise."""
    signature = inspect_onnx(onnx_path)
    if labels is None:
        if signature.num_classes != IMAGENET_CLASSES:
            raise ValueError(
                f"{onnx_path.name} has {signature.num_classes} outputs, not {IMAGENET_CLASSES}: pass --labels FILE"
            )
        labels = imagenet_labels()
    if signature.num_classes is not None and signature.num_classes != len(labels):
        raise ValueError(f"{onnx_path.name} has {signature.num_classes} outputs but {len(labels)} labels were given")
    crop_size = crop or (signature.input_hw[0] if signature.input_hw else STANDARD_CROP)
    if signature.input_hw and signature.input_hw != (crop_size, crop_size):
        raise ValueError(f"{onnx_path.name} takes {signature.input_hw} inputs; a {crop_size} crop does not fit")
    return ModelCard.model_validate({
        "name": name or onnx_path.stem,
        "version": version,
        "architecture": architecture or onnx_path.stem,
        "weights": weights,
        "onnx_file": onnx_file or onnx_path.name,
        "sha256": sha256_of(onnx_path),
        "input_name": signature.input_name,
        "output_name": signature.output_name,
        "feature_output_name": signature.feature_output_name,
        "input_size": (crop_size, crop_size),
        "resize_size": resize or resize_for_crop(crop_size),
        "crop_size": crop_size,
        "interpolation": interpolation,
        "mean": tuple(mean),
        "std": tuple(std),
        "layout": signature.layout,
        "outputs_are": outputs_are,
        "labels": list(labels),
        "precision": detect_precision(onnx_path),
        "source": f"model.card from {onnx_path.name}",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    })


def card_cache_dir() -> Path:
    """Where cards for read-only model folders go (MODEL_CARD_CACHE, else the user cache)."""
    configured = os.environ.get("MODEL_CARD_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imgclass" / "cards"


def folder_is_writable(folder: Path) -> bool:
    """Whether cards may be written into `folder`."""
    # Root ignores permission bits, so a folder without any write bit (../shared) counts as read-only by
    # policy; a real write then settles read-only mounts.
    try:
        if not folder.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(folder, os.W_OK):
            return False
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def ensure_card(path: Path) -> Path:
    """The card for `path`; for a bare .onnx, write the standard ImageNet card (beside it, or in a cache)."""
    path = Path(path)
    if path.name.endswith(CARD_SUFFIX) or path.suffix == ".json":
        return path
    beside = card_path_for(path)
    if beside.exists():
        return beside
    if folder_is_writable(path.parent):
        return save_card(build_card(path), path)
    # A read-only folder (../shared): the cached card points at the model by absolute path, keyed by that path.
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    cached_onnx = card_cache_dir() / digest / path.name
    cached_card = card_path_for(cached_onnx)
    if cached_card.exists():
        try:
            cached, _ = load_card(cached_card)
        except (OSError, ValueError):
            cached = None
        if cached is not None and cached.sha256 == sha256_of(path):
            return cached_card
    card = build_card(path, onnx_file=str(path.resolve()))
    cached_card.parent.mkdir(parents=True, exist_ok=True)
    return save_card(card, cached_onnx)


def _floats(text: str) -> tuple[float, float, float]:
    values = tuple(float(part) for part in text.replace(",", " ").split())
    if len(values) != 3:
        raise argparse.ArgumentTypeError("give three numbers, e.g. 0.485,0.456,0.406")
    return values[0], values[1], values[2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.card", description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path, help="the ONNX classifier")
    parser.add_argument("--labels", type=Path, help="class names, one a line (default: ImageNet-1k for 1000 outputs)")
    parser.add_argument("--resize", type=int, help="shorter-side resize (default: crop * 256 / 224)")
    parser.add_argument("--crop", type=int, help="centre crop = input size (default: from the ONNX input shape)")
    parser.add_argument("--mean", type=_floats, default=STANDARD_MEAN, help="per-channel mean, RGB")
    parser.add_argument("--std", type=_floats, default=STANDARD_STD, help="per-channel std, RGB")
    parser.add_argument("--interpolation", choices=["bilinear", "bicubic", "nearest"], default="bilinear")
    parser.add_argument("--outputs-are", choices=["logits", "probabilities"], default="logits")
    parser.add_argument("--name", help="model name (default: file stem)")
    parser.add_argument("--version", default="1")
    parser.add_argument("--architecture", help="architecture (default: file stem)")
    parser.add_argument("--weights", default="external", help="where the weights came from")
    parser.add_argument("--out", type=Path, help="card path (default: <onnx stem>.card.json beside the model)")
    args = parser.parse_args(argv)
    labels = None
    if args.labels:
        labels = [line.strip() for line in args.labels.read_text(encoding="utf-8").splitlines() if line.strip()]
    target = args.out or card_path_for(args.onnx)
    if args.out is None and not folder_is_writable(args.onnx.parent):
        print(f"error: {args.onnx.parent} is read-only; pass --out somewhere writable", file=sys.stderr)
        return 2
    relative = os.path.relpath(args.onnx.resolve(), target.resolve().parent)
    try:
        card = build_card(
            args.onnx, labels=labels, name=args.name, version=args.version, architecture=args.architecture,
            weights=args.weights, resize=args.resize, crop=args.crop, mean=args.mean, std=args.std,
            interpolation=args.interpolation, outputs_are=args.outputs_are, onnx_file=relative,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(card.to_json() + "\n", encoding="utf-8")
    print(f"wrote {target} ({card.num_classes} classes, input {card.input_name} {card.input_size}, "
          f"output {card.output_name}, precision {card.precision})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
