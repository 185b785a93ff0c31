"""The competent hand-written peer: FastAPI + onnxruntime, what a careful engineer writes in an afternoon.

    .venv/bin/python -m bench.peer_ort_server --port 8124 --model model.onnx [--resize 256 --crop 224]

POST /classify takes the image as the raw body and answers the top-5 as JSON. It is deliberately written
without the project's code (no shared_code import): Pillow decode with `draft()` (reduced DCT scale for big
JPEGs), one `resize(box=...)` for resize + centre crop, numpy normalisation, an ONNX Runtime session with
tuned threads, inference in FastAPI's thread pool. No auth, no result store, no drift features: the gap
between this and the app is the price of the app's extra work.
No `from __future__ import annotations`: FastAPI must resolve the endpoint's `Request` annotation.
"""

import argparse
import io
import os
from typing import Any

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def build_app(model: str, resize: int = 256, crop: int = 224, threads: int = 0) -> Any:
    """The FastAPI app with the ONNX session loaded."""
    import numpy as np  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415
    from fastapi import FastAPI, HTTPException, Request  # noqa: PLC0415
    from fastapi.concurrency import run_in_threadpool  # noqa: PLC0415
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or max(1, len(os.sched_getaffinity(0)))
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    gain = (1.0 / (255.0 * np.asarray(STD, dtype=np.float32))).reshape(3, 1, 1)
    offset = (-np.asarray(MEAN, dtype=np.float32) / np.asarray(STD, dtype=np.float32)).reshape(3, 1, 1)
    session.run([output_name], {input_name: np.zeros((1, 3, crop, crop), dtype=np.float32)})
    app = FastAPI(title="peer-ort")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "onnxruntime": ort.__version__}

    @app.post("/classify")
    async def classify(request: Request) -> dict[str, Any]:
        result: dict[str, Any] = await run_in_threadpool(infer, await request.body())
        return result

    def infer(data: bytes) -> dict[str, Any]:
        try:
            source = Image.open(io.BytesIO(data))
            source.draft("RGB", (resize, resize))
            image = source.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise HTTPException(400, f"not an image: {exc}") from exc
        width, height = image.size
        scale = resize / min(width, height)
        new_w, new_h = round(width * scale), round(height * scale)
        left, top = (new_w - crop) // 2, (new_h - crop) // 2
        box = (left / scale, top / scale, (left + crop) / scale, (top + crop) / scale)
        pixels = np.asarray(image.resize((crop, crop), Image.Resampling.BILINEAR, box=box), dtype=np.float32)
        tensor = (pixels.transpose(2, 0, 1) * gain + offset)[None]
        logits = session.run([output_name], {input_name: tensor})[0][0]
        exp = np.exp(logits - logits.max())
        probabilities = exp / exp.sum()
        best = np.argsort(-probabilities)[:5]
        return {"predictions": [{"class_index": int(i), "score": float(probabilities[i])} for i in best]}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True, help="ONNX file")
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    import uvicorn  # noqa: PLC0415

    uvicorn.run(build_app(args.model, args.resize, args.crop, args.threads), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
