"""Export a torch classifier to ONNX (logits + last feature map) with its model card, and validate it.

    python -m model.export --arch resnet50 [--weights auto|imagenet|random] --out model/artifacts [--version V]

Writes model/artifacts/<name>/<version>/{model.onnx, model.card.json, classifier.npz} and, unless the
weights are random, the pointer card model/artifacts/current.card.json that the app serves by default.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from PIL import Image
from torchvision.models import ResNet50_Weights

from model.architectures import ARCHITECTURES, BuiltModel, WeightsChoice, build_model
from model.dataset import image_files, load_rgb
from model.imagenet import IMAGENET_LABELS_FILE
from shared_code.inference.classifier import load_classifier
from shared_code.inference.model_card import ModelCard, save_card, sha256_of
from shared_code.inference.preprocess import preprocess_batch

OPSET = 17
INPUT_NAME, LOGITS_NAME, FEATURES_NAME = "input", "logits", "features"
ONNX_FILE, CLASSIFIER_FILE = "model.onnx", "classifier.npz"
POINTER_CARD = "current.card.json"
SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "imagenet-sample"
# fp32 ONNX Runtime vs torch differ by accumulation order only; 1e-3 absolute on logits of O(10) is generous
# for that and far below anything a wrong graph produces.
MAX_LOGIT_DIFF = 1e-3


class ExportMismatch(RuntimeError):
    """The ONNX graph does not reproduce the torch model."""


@dataclass(frozen=True)
class Agreement:
    """How closely ONNX Runtime reproduces torch on the same preprocessed batch."""

    images: int
    max_logit_diff: float
    max_feature_diff: float
    same_top1: bool


def imagenet_categories() -> list[str]:
    """The 1000 class names bundled with torchvision (no download)."""
    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def write_imagenet_labels(path: Path = IMAGENET_LABELS_FILE) -> Path:
    path.write_text("\n".join(imagenet_categories()) + "\n", encoding="utf-8")
    return path


def next_version(folder: Path) -> str:
    """One more than the highest numeric version already exported under `folder`."""
    existing = [int(p.name) for p in folder.glob("*") if p.is_dir() and p.name.isdigit()] if folder.exists() else []
    return str(max(existing, default=0) + 1)


def export_onnx(built: BuiltModel, onnx_path: Path) -> None:
    """Trace to ONNX with a dynamic batch axis on the input and both outputs."""
    size = built.preprocessing.crop
    dummy = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript; it still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            built.module, (dummy,), str(onnx_path), dynamo=False, opset_version=OPSET, do_constant_folding=True,
            input_names=[INPUT_NAME], output_names=[LOGITS_NAME, FEATURES_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, LOGITS_NAME: {0: "batch"}, FEATURES_NAME: {0: "batch"}},
        )
    onnx.checker.check_model(str(onnx_path), full_check=True)


def write_classifier_weights(built: BuiltModel, path: Path) -> None:
    """W [classes, C] and b of the final linear layer, for class activation maps in the app."""
    linear = built.module.linear
    np.savez(path, W=linear.weight.detach().numpy().astype(np.float32),
             b=linear.bias.detach().numpy().astype(np.float32))


def check_images(folder: Path | None, count: int) -> list[Image.Image]:
    """Real photos for validation when available, else reproducible noise images."""
    if folder is not None and folder.is_dir():
        files = image_files(folder)[:count]
        if files:
            return [load_rgb(path) for path in files]
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)) for _ in range(count)]


def check_agreement(built: BuiltModel, card_path: Path, images: Sequence[Image.Image]) -> Agreement:
    """Run the same card-preprocessed batch through torch and the serving classifier; compare."""
    classifier = load_classifier(card_path, intra_op_threads=1)
    batch = preprocess_batch(images, classifier.card)
    with torch.no_grad():
        torch_logits, torch_features = (t.numpy() for t in built.module(torch.from_numpy(batch)))
    single, whole = classifier.run(batch[:1]), classifier.run(batch)
    if whole.features is None or single.logits.shape != (1, classifier.card.num_classes):
        raise ExportMismatch("the ONNX model lost its features output or its dynamic batch axis")
    logit_diff = float(np.abs(whole.logits - torch_logits).max())
    logit_diff = max(logit_diff, float(np.abs(single.logits[0] - torch_logits[0]).max()))
    feature_diff = float(np.abs(whole.features - torch_features).max())
    # Top-1 may only differ where torch's own top-2 gap is within the numeric noise.
    ordered = np.sort(torch_logits, axis=1)
    ambiguous = (ordered[:, -1] - ordered[:, -2]) <= 2 * logit_diff
    agree = (np.argmax(whole.logits, axis=1) == np.argmax(torch_logits, axis=1)) | ambiguous
    return Agreement(len(images), logit_diff, feature_diff, bool(agree.all()))


def build_card(built: BuiltModel, onnx_path: Path, name: str, version: str) -> ModelCard:
    prep = built.preprocessing
    return ModelCard(
        name=name, version=version, architecture=built.architecture, weights=built.weights,
        onnx_file=onnx_path.name, sha256=sha256_of(onnx_path), input_name=INPUT_NAME, output_name=LOGITS_NAME,
        feature_output_name=FEATURES_NAME, input_size=(prep.crop, prep.crop), resize_size=prep.resize,
        crop_size=prep.crop, interpolation=prep.interpolation, mean=prep.mean, std=prep.std,
        channel_order="RGB", layout="NCHW", outputs_are="logits", labels=imagenet_categories(), precision="fp32",
        classifier_weights_file=CLASSIFIER_FILE, source=built.source,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def write_pointer_card(card: ModelCard, card_path: Path, artifacts: Path) -> Path:
    """artifacts/current.card.json: the same card with paths relative to the artifacts folder."""
    relative = Path(os.path.relpath(card_path.parent, artifacts))
    pointer = card.model_copy(update={
        "onnx_file": (relative / card.onnx_file).as_posix(),
        "classifier_weights_file": (relative / card.classifier_weights_file).as_posix()
        if card.classifier_weights_file else None,
        # a profile named relative to the version folder must be found from the artifacts folder too
        "reference_profile_file": (relative / card.reference_profile_file).as_posix()
        if card.reference_profile_file and not Path(card.reference_profile_file).is_absolute()
        else card.reference_profile_file,
    })
    target = artifacts / POINTER_CARD
    target.write_text(pointer.to_json() + "\n", encoding="utf-8")
    return target


def export(architecture: str, weights: WeightsChoice, out: Path, version: str | None = None,
           check_dir: Path | None = SHARED_PHOTOS, eval_dir: Path | None = SHARED_PHOTOS,
           set_current: bool | None = None) -> Path:
    """Export, validate and card one model; return the card path."""
    built = build_model(architecture, weights)
    name = built.architecture
    version = version or next_version(out / name)
    folder = out / name / version
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / ONNX_FILE
    export_onnx(built, onnx_path)
    write_classifier_weights(built, folder / CLASSIFIER_FILE)
    card = build_card(built, onnx_path, name, version)
    card_path = save_card(card, onnx_path)
    agreement = check_agreement(built, card_path, check_images(check_dir, 4))
    print(f"onnx vs torch on {agreement.images} images: max |logit diff| {agreement.max_logit_diff:.2e}, "
          f"max |feature diff| {agreement.max_feature_diff:.2e}, same top-1: {agreement.same_top1}")
    if agreement.max_logit_diff > MAX_LOGIT_DIFF or not agreement.same_top1:
        raise ExportMismatch(f"ONNX export of {name} disagrees with torch: {agreement}")
    if eval_dir is not None and eval_dir.is_dir() and built.weights != "random":
        from model.evaluate import evaluate  # noqa: PLC0415 - only when a labelled folder is at hand

        report = evaluate(card_path, eval_dir, intra_op_threads=1)
        card = card.model_copy(update={"metrics": {"imagenet_sample_top1": report["top1"],
                                                   "imagenet_sample_top5": report["top5"]}})
        save_card(card, onnx_path)
        print(f"top-1 {report['top1']:.3f}, top-5 {report['top5']:.3f} on {report['n']} photos in {eval_dir}")
    if set_current if set_current is not None else built.weights != "random":
        print(f"pointer card: {write_pointer_card(card, card_path, out)}")
    print(f"exported {card.model_id} ({card.weights} weights) to {card_path}")
    return card_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.export", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHITECTURES, default="resnet50")
    parser.add_argument("--weights", choices=["auto", "imagenet", "random"], default="auto",
                        help="auto: ImageNet weights, else pretrained EfficientNet-Lite0 when they are unavailable")
    parser.add_argument("--out", type=Path, default=Path("model/artifacts"))
    parser.add_argument("--version", help="version folder (default: next integer)")
    parser.add_argument("--check-images", type=Path, default=SHARED_PHOTOS,
                        help="photos for the torch-vs-onnx check (default: ../shared/imagenet-sample, else noise)")
    parser.add_argument("--eval", type=Path, default=SHARED_PHOTOS, help="labelled folder for the card's metrics")
    current = parser.add_mutually_exclusive_group()
    current.add_argument("--set-current", dest="set_current", action="store_true", default=None,
                         help="write the pointer card current.card.json (default: unless weights are random)")
    current.add_argument("--no-set-current", dest="set_current", action="store_false")
    parser.add_argument("--write-labels", action="store_true",
                        help=f"only (re)write {IMAGENET_LABELS_FILE.name} from torchvision's metadata and exit")
    args = parser.parse_args(argv)
    if args.write_labels:
        print(f"wrote {write_imagenet_labels()}")
        return 0
    try:
        card_path = export(args.arch, args.weights, args.out, args.version, args.check_images, args.eval,
                           args.set_current)
    except ExportMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"card": str(card_path), "onnx": str(card_path.parent / ONNX_FILE)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
