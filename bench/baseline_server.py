"""The common baseline service: FastAPI + PyTorch eager ResNet-50, the way most first versions are written.

    model/.venv/bin/python -m bench.baseline_server --port 8123 [--arch resnet50]

POST /classify takes the image as the raw body (`image/*`, like the app's raw-body mode) and answers the
top-5 as JSON. Random weights (no pretrained weights offline): the cost is what matters. Preprocessing is
the textbook PIL + torchvision transforms pipeline; no auth, no result store, so the gap between this and
the app is the price of the app's extra work plus whatever the app's serving path saves.
Runs in the model venv (torch); the app never imports it. No `from __future__ import annotations`: FastAPI
must resolve the endpoint's `Request` annotation, which is imported inside build_app.
"""

import argparse
import io
import os
from typing import Any


def build_app(arch: str = "resnet50", threads: int = 0) -> Any:
    """The FastAPI app with the model loaded (torch imported here, not at module import)."""
    import torch  # noqa: PLC0415
    import torchvision  # noqa: PLC0415
    from fastapi import FastAPI, HTTPException, Request  # noqa: PLC0415
    from fastapi.concurrency import run_in_threadpool  # noqa: PLC0415
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415
    from torchvision import transforms  # noqa: PLC0415

    torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0))))
    model = getattr(torchvision.models, arch)(weights=None).eval()
    transform = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    with torch.inference_mode():  # one warm-up pass: the first call allocates and picks kernels
        model(torch.zeros(1, 3, 224, 224))
    app = FastAPI(title="baseline")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "arch": arch, "torch": torch.__version__}

    @app.post("/classify")
    async def classify(request: Request) -> dict[str, Any]:
        result: dict[str, Any] = await run_in_threadpool(infer, await request.body())
        return result

    def infer(data: bytes) -> dict[str, Any]:
        try:
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise HTTPException(400, f"not an image: {exc}") from exc
        with torch.inference_mode():
            probabilities = torch.softmax(model(transform(image).unsqueeze(0)), dim=1)[0]
            scores, indices = torch.topk(probabilities, 5)
        return {"predictions": [{"class_index": int(i), "score": float(s)} for s, i in zip(scores, indices,
                                                                                              strict=True)]}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = available cores")
    args = parser.parse_args(argv)
    import uvicorn  # noqa: PLC0415

    uvicorn.run(build_app(args.arch, args.threads), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
