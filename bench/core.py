"""Core benchmark: raw ONNX Runtime and OpenVINO vs the serving pipeline vs PyTorch eager, in one process.

The best backend is the one with the highest raw batch-1 rate on the served (int8) network on this CPU; the
pipeline ratios (`pipeline_over_best_raw`, `pipeline_12mp_over_raw`) compare the pipeline on that backend with
raw inference on the same backend, on the shared photos and on 12 MP JPEGs made from them (bench/photos.py).

Run through `make bench` (model venv: it needs torch for the baseline). Every figure comes from this one
run on this machine; ratios compare measurements taken minutes apart under the same thread settings.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.photos import twelve_mp_set
from shared_code.inference.backends import cpu_flags, openvino_installed
from shared_code.inference.classifier import available_cores, load_classifier
from shared_code.inference.pipeline import ClassificationPipeline

LOAD_S: dict[str, float] = {}  # first load (session build / compile) per model and backend, seconds
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


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


def raw_rate(card: Path, batch: int, seconds: float, backend: str = "onnxruntime") -> float:
    """Raw inference on a float32 network-input tensor (every output the service reads: logits and features)."""
    started = time.perf_counter()
    classifier = load_classifier(card, backend=backend)
    classifier.wait_ready(180)
    LOAD_S.setdefault(f"{classifier.card.name}:{classifier.card.version}:{backend}", time.perf_counter() - started)
    height, width = classifier.card.input_size
    tensor = np.random.default_rng(0).standard_normal((batch, 3, height, width)).astype(np.float32)

    def work() -> int:
        classifier.backend.infer(tensor)
        return batch

    return rate(work, seconds)


def pipeline_rate(card: Path, photos: list[bytes], seconds: float, backend: str = "onnxruntime",
                  profile: dict[str, float] | None = None) -> float:
    """Pipeline images/s; `profile` receives the mean per-stage timings (ms) the pipeline reports, plus `other`."""
    classifier = load_classifier(card, backend=backend)
    classifier.wait_ready(180)
    pipeline = ClassificationPipeline(classifier)
    position = [0]
    sums: dict[str, float] = {}
    wall = [0.0]

    def work() -> int:
        started = time.perf_counter()
        result = pipeline.classify_bytes(photos[position[0] % len(photos)], 5)
        wall[0] += (time.perf_counter() - started) * 1000.0
        for stage, value in result.timings_ms.items():
            sums[stage] = sums.get(stage, 0.0) + value
        position[0] += 1
        return 1

    images_s = rate(work, seconds)
    if profile is not None and position[0]:
        profile.update({stage: total / position[0] for stage, total in sums.items()})
        # features, softmax, top-k, result objects: what the stage timers do not cover
        profile["other"] = wall[0] / position[0] - profile.get("total", 0.0)
    return images_s


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


def top1(card: Path, data: Path, backend: str = "onnxruntime") -> float:
    from model.evaluate import evaluate  # noqa: PLC0415

    return float(evaluate(card, data, backend=backend)["top1"])


def chart(results: dict[str, Any], target: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = [name for name in ("raw_batch1_img_s", "raw_batch8_img_s", "pipeline_img_s", "int8_raw_batch1_img_s",
                               "int8_pipeline_img_s", "openvino_raw_batch1_img_s", "openvino_bf16_raw_batch1_img_s",
                               "openvino_int8_raw_batch1_img_s", "best_pipeline_img_s", "pipeline_12mp_img_s",
                               "torch_eager_img_s") if name in results]
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
    results["machine"]["cpu_flags"] = sorted(set(FLAGS_OF_INTEREST) & cpu_flags())
    results["machine"]["load_before"] = list(os.getloadavg())
    results["raw_batch1_img_s"] = raw_rate(args.fp32, 1, args.seconds)
    results["raw_batch8_img_s"] = raw_rate(args.fp32, 8, args.seconds)
    results["pipeline_img_s"] = pipeline_rate(args.fp32, photos, args.seconds)
    results["pipeline_over_raw"] = results["pipeline_img_s"] / results["raw_batch1_img_s"]
    results["int8_raw_batch1_img_s"] = raw_rate(args.int8, 1, args.seconds)
    results["int8_raw_batch8_img_s"] = raw_rate(args.int8, 8, args.seconds)
    results["int8_pipeline_img_s"] = pipeline_rate(args.int8, photos, args.seconds)
    results["int8_speedup"] = results["int8_raw_batch1_img_s"] / results["raw_batch1_img_s"]
    results["int8_pipeline_speedup"] = results["int8_pipeline_img_s"] / results["pipeline_img_s"]
    if openvino_installed():
        results["openvino_raw_batch1_img_s"] = raw_rate(args.fp32, 1, args.seconds, "openvino-f32")
        results["openvino_raw_batch8_img_s"] = raw_rate(args.fp32, 8, args.seconds, "openvino-f32")
        results["openvino_bf16_raw_batch1_img_s"] = raw_rate(args.fp32, 1, args.seconds, "openvino-bf16")
        results["openvino_bf16_raw_batch8_img_s"] = raw_rate(args.fp32, 8, args.seconds, "openvino-bf16")
        results["openvino_int8_raw_batch1_img_s"] = raw_rate(args.int8, 1, args.seconds, "openvino")
        results["openvino_int8_raw_batch8_img_s"] = raw_rate(args.int8, 8, args.seconds, "openvino")
    # The served network is the int8 one: the best backend is the faster one on it, raw batch 1.
    candidates = {"onnxruntime": results["int8_raw_batch1_img_s"]}
    if "openvino_int8_raw_batch1_img_s" in results:
        candidates["openvino"] = results["openvino_int8_raw_batch1_img_s"]
    best = max(candidates, key=lambda name: candidates[name])
    auto = load_classifier(args.int8, backend="auto")
    auto.wait_ready(180)
    results["auto_backend"] = auto.backend_label
    results["auto_reason"] = auto.choice.reason
    results["best_backend"] = best
    results["best_raw_batch1_img_s"] = candidates[best]
    results["best_pipeline_profile_ms"], results["pipeline_12mp_profile_ms"] = {}, {}
    results["best_pipeline_img_s"] = pipeline_rate(args.int8, photos, args.seconds, best,
                                                   results["best_pipeline_profile_ms"])
    results["pipeline_over_best_raw"] = results["best_pipeline_img_s"] / results["best_raw_batch1_img_s"]
    big = twelve_mp_set(photos)
    results["pipeline_12mp_img_s"] = pipeline_rate(args.int8, big, args.seconds, best,
                                                   results["pipeline_12mp_profile_ms"])
    results["pipeline_12mp_over_raw"] = results["pipeline_12mp_img_s"] / results["best_raw_batch1_img_s"]
    results["photos_12mp"] = f"{len(big)} JPEGs 4000x3000 q90 upscaled from the shared photos, made at run time"
    results["torch_eager_img_s"] = torch_eager_rate(args.arch, photos, args.seconds)
    # The service serves the int8 network; the fp32 ratio is reported beside it for transparency.
    results["pipeline_over_torch_eager"] = results["int8_pipeline_img_s"] / results["torch_eager_img_s"]
    results["fp32_pipeline_over_torch_eager"] = results["pipeline_img_s"] / results["torch_eager_img_s"]
    if args.real_fp32 and args.real_int8 and args.photos.exists():
        fp32_top1, int8_top1 = top1(args.real_fp32, args.photos), top1(args.real_int8, args.photos)
        results["real_model"] = load_classifier(args.real_fp32).card.model_id
        results["real_fp32_top1"], results["real_int8_top1"] = fp32_top1, int8_top1
        results["int8_top1_delta"] = int8_top1 - fp32_top1
        if openvino_installed():  # every backend within 0.5 point of ONNX Runtime fp32 (the bar)
            results["real_openvino_fp32_top1"] = top1(args.real_fp32, args.photos, "openvino-f32")
            results["real_auto_top1"] = top1(args.real_fp32, args.photos, "auto")  # bf16 only with recorded parity
            results["real_openvino_bf16_top1"] = top1(args.real_fp32, args.photos, "openvino-bf16")
            results["real_openvino_int8_top1"] = top1(args.real_int8, args.photos, "openvino")
    else:
        results["int8_top1_delta"] = None
    results["model_load_s"] = LOAD_S
    results["machine"]["load_after"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    chart(results, args.out.with_suffix(".png"))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
