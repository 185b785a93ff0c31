"""Cold-start probe: one fresh process doing what a Functions worker does up to its first answered classify.

    python -m bench.e2e_coldstart --image photo.jpg [--spawned-at EPOCH] [--no-http] [--model CARD]

Phases (seconds, consecutive): interpreter (spawn to the first line of this module; pass --spawned-at),
imports (`import function_app`: the composition root, as the worker indexes it), settings, wiring (the
service and its store clients), model_load (card, sha256 check, ORT session), first_run (first image
through the pipeline), first_http (the first POST /api/classify through the Functions ASGI adapter:
auth, classify, the Cosmos write). Prints one JSON line. Exits 3 when a heavy library that must stay off
the classify path (torch, evidently, azure.ai.ml, ...) was imported: the probe is also that guard.
`--no-http` skips settings, wiring and the HTTP answer (no emulators needed): model and first run only.
`--import-profile` only imports: the big libraries one by one in a fixed order, then `function_app` (the app's own
modules and whatever else they pull in), and prints the seconds each step added (where the imports phase goes).
"""

from __future__ import annotations

import time

_STARTED_WALL = time.time()
_STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

# Never on the path of a classification (drift, retraining, the model tools, Azure Monitor when not configured).
FORBIDDEN_MODULES = ("torch", "torchvision", "evidently", "azure.ai.ml", "pandas", "matplotlib", "sklearn",
                     "scipy", "mlflow")
FORBIDDEN_WITHOUT_TELEMETRY = ("azure.monitor.opentelemetry", "opentelemetry.sdk")


def forbidden_loaded(modules: dict[str, Any] | None = None, *, telemetry_configured: bool = False) -> list[str]:
    """Heavy modules present in `modules` (default sys.modules) that the classify path must not import."""
    loaded = sys.modules if modules is None else modules
    names = FORBIDDEN_MODULES + (() if telemetry_configured else FORBIDDEN_WITHOUT_TELEMETRY)
    return sorted(name for name in names if name in loaded)


# The libraries the API imports, heaviest first; each step's time excludes what earlier steps already imported.
PROFILED_LIBRARIES = ("fastapi", "pydantic", "azure.functions", "azure.cosmos", "azure.storage.blob", "jwt",
                      "numpy", "PIL.Image", "onnxruntime")


def import_profile() -> dict[str, float]:
    """Seconds each library (in PROFILED_LIBRARIES order) and then `function_app` adds to the imports."""
    import importlib  # noqa: PLC0415

    steps: dict[str, float] = {}
    for name in (*PROFILED_LIBRARIES, "function_app"):
        started = time.perf_counter()
        importlib.import_module(name)
        steps[name] = time.perf_counter() - started
    return steps


def peak_rss_mb() -> float | None:
    """This process's resident-set high-water mark (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _http_request(body: bytes, token: str) -> Any:
    import azure.functions as func  # noqa: PLC0415 - already imported by function_app

    return func.HttpRequest(method="POST", url="http://127.0.0.1/api/classify?top_k=5",
                            headers={"content-type": "image/jpeg", "authorization": f"Bearer {token}",
                                     "content-length": str(len(body))},
                            params={"top_k": "5"}, route_params={"route": "api/classify"}, body=body)


def run(image: Path, *, http: bool, model: str | None) -> dict[str, Any]:
    marks: list[tuple[str, float]] = []
    import function_app  # noqa: PLC0415 - the phase being measured

    marks.append(("imports", time.perf_counter()))
    from shared_code.inference.classifier import load_classifier  # noqa: PLC0415 - already imported by function_app
    from shared_code.inference.pipeline import ClassificationPipeline  # noqa: PLC0415

    data = image.read_bytes()
    result: dict[str, Any] = {}
    if http:
        from functions.dependencies import get_service  # noqa: PLC0415
        from shared_code.identity.auth import issue_token  # noqa: PLC0415
        from shared_code.settings import get_settings  # noqa: PLC0415

        settings = get_settings()
        marks.append(("settings", time.perf_counter()))
        service = get_service()
        marks.append(("wiring", time.perf_counter()))
        pipeline = service.models.current()
        marks.append(("model_load", time.perf_counter()))
        pipeline.classify_bytes(data)
        marks.append(("first_run", time.perf_counter()))
        token = issue_token(settings, "coldstart-probe")
        handler = next(f for f in function_app.app.get_functions() if f.get_function_name() == "http_app_func")
        import asyncio  # noqa: PLC0415

        response = asyncio.run(handler.get_user_function()(req=_http_request(data, token), context=None))
        marks.append(("first_http", time.perf_counter()))
        result["first_http_status"] = response.status_code
        if response.status_code != 200:
            result["first_http_body"] = response.get_body()[:500].decode(errors="replace")
        second = time.perf_counter()
        asyncio.run(handler.get_user_function()(req=_http_request(data, token), context=None))
        result["second_http_s"] = time.perf_counter() - second
    else:
        pipeline = ClassificationPipeline(load_classifier(Path(model or os.environ["MODEL_PATH"])))
        marks.append(("model_load", time.perf_counter()))
        pipeline.classify_bytes(data)
        marks.append(("first_run", time.perf_counter()))
    result["marks"] = marks
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--spawned-at", type=float, default=None, help="time.time() just before the spawn")
    parser.add_argument("--no-http", action="store_true", help="model load and first run only (no emulators)")
    parser.add_argument("--model", default=None, help="card for --no-http (default MODEL_PATH)")
    parser.add_argument("--import-profile", action="store_true", help="only the import steps, as JSON")
    args = parser.parse_args(argv)
    if args.import_profile:
        steps = import_profile()
        print(json.dumps({"import_steps_s": steps, "total_s": sum(steps.values())}))
        return 0
    outcome = run(args.image, http=not args.no_http, model=args.model)
    phases: dict[str, float] = {}
    if args.spawned_at is not None:
        phases["interpreter"] = max(0.0, _STARTED_WALL - args.spawned_at)
    from bench.e2e_stats import phase_split  # noqa: PLC0415 - stdlib only, after the measured phases

    phases.update(phase_split(outcome.pop("marks"), _STARTED))
    telemetry = bool(os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"))
    heavy = forbidden_loaded(telemetry_configured=telemetry)
    report = {"phases_s": phases, "total_s": sum(phases.values()), "forbidden_modules_loaded": heavy,
              "modules_loaded": len(sys.modules), "peak_rss_mb": peak_rss_mb(), **outcome}
    print(json.dumps(report))
    return 3 if heavy else 0


if __name__ == "__main__":
    raise SystemExit(main())
