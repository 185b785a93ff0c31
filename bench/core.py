"""Core benchmark: raw ONNX Runtime vs the serving pipeline vs PyTorch eager, side by side in one process.

Run through `make bench` (model venv: it needs torch for the baseline). Every figure comes from this one
run on this machine; ratios compare measurements taken minutes apart under the same thread settings.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shared_code.inference.classifier import available_cores, load_classifier
from shared_code.inference.pipeline import ClassificationPipeline


def rate(work: Callable[[], int], seconds: float, warmup: int = 3) -> float:
    """Images per second of `work` (which returns how many images it processed), after a warm-up."""
    for _ in range(warmup):
        work()
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or done == 0:
        done += work()
    return done / elapsed


def photo_bytes(folder: Path | None, count: int = 64) -> list[bytes]:
    """Real JPEGs when available, otherwise synthetic 500x375 photos of similar size."""
    if folder is not None and folder.exists():
        files = sorted(folder.glob("*.JPEG"))[:count] or sorted(folder.glob("*.jpg"))[:count]
        if files:
            return [f.read_bytes() for f in files]
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(0)
    photos = []
    for _ in range(count):
        noise = rng.integers(0, 256, (375 // 8, 500 // 8, 3), dtype=np.uint8)
        image = Image.fromarray(noise).resize((500, 375), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def raw_rate(card: Path, batch: int, seconds: float) -> float:
    classifier = load_classifier(card)
    height, width = classifier.card.input_size
    tensor = np.random.default_rng(0).standard_normal((batch, 3, height, width)).astype(np.float32)

    def work() -> int:
        classifier.session.run([classifier.card.output_name], {classifier.card.input_name: tensor})
        return batch

    return rate(work, seconds)


def pipeline_rate(card: Path, photos: list[bytes], seconds: float) -> float:
    pipeline = ClassificationPipeline(load_classifier(card))
    position = [0]

    def work() -> int:
        pipeline.classify_bytes(photos[position[0] % len(photos)], 5)
        position[0] += 1
        return 1

    return rate(work, seconds)


def torch_eager_rate(arch: str, photos: list[bytes], seconds: float) -> float:
    """The common baseline: PIL + torchvision transforms + PyTorch eager, one image at a time."""
    import torch  # noqa: PLC0415
    import torchvision  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415
    from torchvision import transforms  # noqa: PLC0415

    torch.set_num_threads(available_cores())
    model = getattr(torchvision.models, arch)(weights=None).eval()
    transform = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    position = [0]

    def work() -> int:
        data = photos[position[0] % len(photos)]
        position[0] += 1
        with torch.inference_mode():
            image = Image.open(io.BytesIO(data)).convert("RGB")
            logits = model(transform(image).unsqueeze(0))
            torch.topk(torch.softmax(logits, dim=1), 5)
        return 1

    return rate(work, seconds)


def top1(card: Path, data: Path) -> float:
    from model.evaluate import evaluate  # noqa: PLC0415

    return float(evaluate(card, data)["top1"])


def chart(results: dict[str, Any], target: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = ["raw_batch1_img_s", "raw_batch8_img_s", "pipeline_img_s", "int8_raw_batch1_img_s",
             "int8_pipeline_img_s", "torch_eager_img_s"]
    values = [float(results[name]) for name in names]
    figure, axis = plt.subplots(figsize=(8, 3.6))
    bars = axis.barh([n.replace("_img_s", "") for n in names], values, color="#2b6cb0")
    axis.bar_label(bars, fmt="%.1f")
    axis.set_xlabel("images / second (higher is better)")
    axis.set_title(f"{results['model']} on {results['machine']['cores']} cores")
    figure.tight_layout()
    figure.savefig(target, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fp32", type=Path, required=True, help="card of the benchmarked network, fp32")
    parser.add_argument("--int8", type=Path, required=True, help="card of the same network, int8")
    parser.add_argument("--arch", default="resnet50", help="torchvision architecture for the eager baseline")
    parser.add_argument("--real-fp32", type=Path, help="real-weights model card (for the int8 top-1 change)")
    parser.add_argument("--real-int8", type=Path)
    parser.add_argument("--photos", type=Path, default=Path("../shared/imagenet-sample"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args(argv)

    photos = photo_bytes(args.photos)
    fp32_card = load_classifier(args.fp32).card
    results: dict[str, Any] = {
        "model": f"{fp32_card.name}:{fp32_card.version} ({fp32_card.architecture}, weights {fp32_card.weights})",
        "machine": {"cores": available_cores(), "processor": platform.processor() or platform.machine()},
        "photos": "shared imagenet-sample" if args.photos.exists() else "synthetic",
        "seconds_per_measurement": args.seconds,
    }
    results["raw_batch1_img_s"] = raw_rate(args.fp32, 1, args.seconds)
    results["raw_batch8_img_s"] = raw_rate(args.fp32, 8, args.seconds)
    results["pipeline_img_s"] = pipeline_rate(args.fp32, photos, args.seconds)
    results["pipeline_over_raw"] = results["pipeline_img_s"] / results["raw_batch1_img_s"]
    results["int8_raw_batch1_img_s"] = raw_rate(args.int8, 1, args.seconds)
    results["int8_raw_batch8_img_s"] = raw_rate(args.int8, 8, args.seconds)
    results["int8_pipeline_img_s"] = pipeline_rate(args.int8, photos, args.seconds)
    results["int8_speedup"] = results["int8_raw_batch1_img_s"] / results["raw_batch1_img_s"]
    results["int8_pipeline_speedup"] = results["int8_pipeline_img_s"] / results["pipeline_img_s"]
    results["torch_eager_img_s"] = torch_eager_rate(args.arch, photos, args.seconds)
    # The service serves the int8 network; the fp32 ratio is reported beside it for transparency.
    results["pipeline_over_torch_eager"] = results["int8_pipeline_img_s"] / results["torch_eager_img_s"]
    results["fp32_pipeline_over_torch_eager"] = results["pipeline_img_s"] / results["torch_eager_img_s"]
    if args.real_fp32 and args.real_int8 and args.photos.exists():
        fp32_top1, int8_top1 = top1(args.real_fp32, args.photos), top1(args.real_int8, args.photos)
        results["real_model"] = load_classifier(args.real_fp32).card.model_id
        results["real_fp32_top1"], results["real_int8_top1"] = fp32_top1, int8_top1
        results["int8_top1_delta"] = int8_top1 - fp32_top1
    else:
        results["int8_top1_delta"] = None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    chart(results, args.out.with_suffix(".png"))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
