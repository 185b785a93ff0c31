"""Quantize an ONNX classifier to int8 with ONNX Runtime, calibrated on real images (app venv, no torch).

    python -m model.quantize CARD_OR_ONNX --calib DIR [--n 100] [--eval DIR]

Static QDQ quantization (per-channel 7-bit signed weights, unsigned activations, MinMax calibration) on
images preprocessed exactly as serving does (`shared_code.inference.preprocess`, driven by the card); dynamic
quantization when static fails. Writes a new version beside the source (or under --out) with its card.
Why these defaults: docs/model.md (measured on an AVX2 CPU without VNNI).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from model.card import ensure_card
from model.dataset import image_files, load_rgb
from shared_code.inference.model_card import ModelCard, load_card, save_card, sha256_of
from shared_code.inference.preprocess import preprocess_batch

logger = logging.getLogger(__name__)

STATIC_PRECISION = "int8-qdq-static"
DYNAMIC_PRECISION = "int8-dynamic"
_CALIBRATION = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.Entropy}


@dataclass(frozen=True)
class QuantizationOptions:
    """The knobs that matter on an AVX2 CPU without VNNI; the defaults are the measured best (docs/model.md)."""

    per_channel: bool = True
    activation_type: str = "uint8"
    weight_type: str = "int8"
    # Without VNNI, ORT's U8S8 kernels sum u8*s8 pairs in int16 (vpmaddubsw), which saturates with full
    # 8-bit weights: EfficientNet-Lite0 loses 3.2 top-1 points with 8-bit and none with 7-bit weights.
    reduce_range: bool = True
    calibration: str = "minmax"
    quant_format: str = "qdq"
    exclude_ops: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    preprocess_graph: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class ImageCalibrationReader(CalibrationDataReader):  # type: ignore[misc]  # ORT ships no type hints
    """Feeds calibration images one at a time, preprocessed from the model card."""

    def __init__(self, files: Sequence[Path], card: ModelCard) -> None:
        self._files = list(files)
        self._card = card
        self._iterator = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for path in self._files:
            yield {self._card.input_name: preprocess_batch([load_rgb(path)], self._card)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = self._batches()


def calibration_files(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """A reproducible random sample of `count` images from `folder` (recursively)."""
    files = image_files(folder)
    if not files:
        raise ValueError(f"no calibration images in {folder}")
    if len(files) <= count:
        return files
    chosen = np.random.default_rng(seed).choice(len(files), size=count, replace=False)
    return [files[i] for i in sorted(chosen)]


def _quant_type(name: str) -> QuantType:
    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


def _nodes_of_types(model_path: Path, op_types: Sequence[str]) -> list[str]:
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in op_types]


def quantize_static_int8(source: Path, target: Path, card: ModelCard, calib: Sequence[Path],
                         options: QuantizationOptions) -> None:
    """Static quantization with activation ranges calibrated on `calib`."""
    with tempfile.TemporaryDirectory() as scratch:
        model_input = source
        if options.preprocess_graph:
            # Folds constants and fuses Conv+BN/ReLU first so ranges are calibrated on the graph ORT runs.
            model_input = Path(scratch) / "prepared.onnx"
            quant_pre_process(str(source), str(model_input), skip_symbolic_shape=True)
        excluded = [*options.exclude_nodes, *_nodes_of_types(model_input, options.exclude_ops)]
        quantize_static(
            str(model_input), str(target), ImageCalibrationReader(calib, card),
            quant_format=QuantFormat.QDQ if options.quant_format == "qdq" else QuantFormat.QOperator,
            per_channel=options.per_channel, reduce_range=options.reduce_range,
            activation_type=_quant_type(options.activation_type), weight_type=_quant_type(options.weight_type),
            nodes_to_exclude=excluded or None, calibrate_method=_CALIBRATION[options.calibration],
            extra_options={"CalibMovingAverage": False, **options.extra},
        )


def quantize_dynamic_int8(source: Path, target: Path, options: QuantizationOptions) -> None:
    """Weights-only int8 with activations quantized at run time: no calibration, always applicable."""
    quantize_dynamic(str(source), str(target), per_channel=options.per_channel, reduce_range=options.reduce_range,
                     weight_type=_quant_type(options.weight_type))


def quantized_card(card: ModelCard, onnx_path: Path, version: str, precision: str,
                   options: QuantizationOptions, calib_count: int) -> ModelCard:
    settings = {k: v for k, v in asdict(options).items() if v not in ((), {}, None)}
    return card.model_copy(update={
        "version": version, "onnx_file": onnx_path.name, "sha256": sha256_of(onnx_path), "precision": precision,
        "source": f"{card.name}:{card.version} quantized ({precision}, {calib_count} calibration images, "
                  f"{json.dumps(settings, sort_keys=True)})",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "metrics": {},
    })


def default_target(card_path: Path, card: ModelCard, precision_tag: str) -> tuple[Path, str]:
    """Beside an exported version folder (<name>/<v> -> <name>/<v>-int8), else beside the card."""
    version = f"{card.version}-{precision_tag}"
    parent = card_path.parent
    if parent.name == card.version:
        return parent.parent / version, version
    return parent / f"{card.name}-{version}", version


def _write_card(card: ModelCard, card_path: Path, target: Path, version: str, precision: str,
                options: QuantizationOptions, calib_count: int) -> Path:
    """Save the int8 card; the float head weights for CAM travel along unchanged."""
    new_card = quantized_card(card, target, version, precision, options, calib_count)
    if card.classifier_weights_file and (card_path.parent / card.classifier_weights_file).is_file():
        # CAM needs W and b in float; the int8 graph only holds a quantized copy.
        name = Path(card.classifier_weights_file).name
        shutil.copy2(card_path.parent / card.classifier_weights_file, target.parent / name)
        new_card = new_card.model_copy(update={"classifier_weights_file": name})
    else:
        new_card = new_card.model_copy(update={"classifier_weights_file": None})
    return save_card(new_card, target)


def quantize(model: Path, calib_dir: Path | None, count: int = 100, out: Path | None = None,
             options: QuantizationOptions | None = None, *, dynamic: bool = False,
             allow_dynamic_fallback: bool = True) -> Path:
    """Quantize the model a card (or bare ONNX) describes; return the new card's path."""
    options = options or QuantizationOptions()
    card_path = ensure_card(model)
    card, source = load_card(card_path)
    folder, version = default_target(card_path, card, "int8dyn" if dynamic else "int8")
    folder = out or folder
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.onnx"
    calib = [] if dynamic or calib_dir is None else calibration_files(calib_dir, count)
    precision = DYNAMIC_PRECISION
    if calib:
        try:
            quantize_static_int8(source, target, card, calib, options)
            precision = STATIC_PRECISION
        except Exception as exc:  # ORT's quantizer raises bare Exceptions for graphs it cannot handle
            if not allow_dynamic_fallback:
                raise
            logger.warning("static quantization failed (%s); falling back to dynamic quantization", exc)
            print(f"static quantization failed ({exc}); falling back to dynamic quantization")
    elif not dynamic:
        raise ValueError("static quantization needs calibration images (--calib DIR)")
    if precision == DYNAMIC_PRECISION:
        quantize_dynamic_int8(source, target, options)
    used = len(calib) if precision == STATIC_PRECISION else 0
    return _write_card(card, card_path, target, version, precision, options, used)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.quantize", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="model card, or an ONNX file")
    parser.add_argument("--calib", type=Path, help="folder of calibration images (required unless --dynamic)")
    parser.add_argument("--n", type=int, default=100, help="number of calibration images")
    parser.add_argument("--out", type=Path, help="output folder (default: <name>/<version>-int8 beside the source)")
    parser.add_argument("--eval", type=Path, help="labelled folder: report top-1 of fp32 and int8")
    parser.add_argument("--calibration", choices=sorted(_CALIBRATION), default="minmax")
    parser.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weights")
    parser.add_argument("--activations", choices=["uint8", "int8"], default="uint8")
    parser.add_argument("--weights", choices=["int8", "uint8"], default="int8")
    parser.add_argument("--full-range", action="store_true", help="8-bit weights (saturates on AVX2 without VNNI)")
    parser.add_argument("--format", choices=["qdq", "qoperator"], default="qdq")
    parser.add_argument("--exclude-ops", default="", help="comma-separated op types left in float")
    parser.add_argument("--dynamic", action="store_true", help="dynamic quantization only (no calibration)")
    args = parser.parse_args(argv)
    if args.calib is None and not args.dynamic:
        parser.error("--calib DIR is required for static quantization")
    options = QuantizationOptions(
        per_channel=not args.per_tensor, activation_type=args.activations, weight_type=args.weights,
        reduce_range=not args.full_range, calibration=args.calibration, quant_format=args.format,
        exclude_ops=tuple(op for op in args.exclude_ops.split(",") if op),
    )
    new_path = quantize(args.model, args.calib, args.n, args.out, options, dynamic=args.dynamic)
    print(f"wrote {new_path}")
    summary: dict[str, Any] = {"card": str(new_path)}
    if args.eval:
        from model.evaluate import evaluate  # noqa: PLC0415 - only needed with --eval

        before = evaluate(ensure_card(args.model), args.eval)
        after = evaluate(new_path, args.eval)
        summary |= {"n": after["n"], "fp32_top1": before["top1"], "int8_top1": after["top1"],
                    "top1_change": round(after["top1"] - before["top1"], 4), "fp32_top5": before["top5"],
                    "int8_top5": after["top5"]}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
