"""The command-line entry: classify files, print a development token, and the retraining processes.

    python -m shared_code.cli classify photos/ cat.jpg --model model/artifacts/current.card.json --top-k 3
    python -m shared_code.cli token --user alice
    python -m shared_code.cli retrain-run <job folder>      # the local launcher's detached runner
    python -m shared_code.cli retrain-job-yaml [--window K]  # a window's Azure ML job as YAML (nothing submitted)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared_code.errors import ImageRejected, ServiceError
from shared_code.inference.classifier import load_classifier
from shared_code.inference.pipeline import ClassificationPipeline
from shared_code.results.blob_store import ALLOWED_EXTENSIONS
from shared_code.settings import SettingsError, apply_local_settings_file, load_settings


def image_paths(targets: list[str]) -> Iterator[Path]:
    for target in targets:
        path = Path(target)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in ALLOWED_EXTENSIONS)
        else:
            yield path


def classify_command(args: argparse.Namespace) -> int:
    pipeline = ClassificationPipeline(load_classifier(Path(args.model)))
    rows: list[dict[str, Any]] = []
    for path in image_paths(args.paths):
        try:
            result = pipeline.classify_bytes(path.read_bytes(), args.top_k)
            rows.append({"file": str(path), "status": "done",
                         "predictions": [{"label": p.label, "class_index": p.class_index, "score": round(p.score, 4)}
                                         for p in result.predictions],
                         "ms": result.timings_ms["total"]})
        except (ImageRejected, OSError) as exc:
            message = exc.message if isinstance(exc, ServiceError) else str(exc)
            rows.append({"file": str(path), "status": "rejected", "error": message})
    if args.json:
        print(json.dumps({"model": {"name": pipeline.card.name, "version": pipeline.card.version}, "results": rows}))
        return 0
    width = max((len(r["file"]) for r in rows), default=4)
    print(f"{'file':<{width}}  {'score':>6}  label   (model {pipeline.card.name}:{pipeline.card.version})")
    for row in rows:
        if row["status"] != "done":
            print(f"{row['file']:<{width}}  {'-':>6}  rejected: {row['error']}")
            continue
        for rank, prediction in enumerate(row["predictions"]):
            name = row["file"] if rank == 0 else ""
            print(f"{name:<{width}}  {prediction['score']:>6.3f}  {prediction['label']}")
    return 0


def token_command(args: argparse.Namespace) -> int:
    from shared_code.identity.auth import ALL_SCOPES, DEFAULT_USER_SCOPES, issue_token  # noqa: PLC0415

    apply_local_settings_file(args.settings)
    settings = load_settings()
    scopes = ALL_SCOPES if args.admin else DEFAULT_USER_SCOPES
    print(issue_token(settings, args.user, scopes, args.minutes))
    return 0


def retrain_run_command(args: argparse.Namespace) -> int:
    """Train one job folder written by LocalLauncher (the detached runner it starts)."""
    import logging  # noqa: PLC0415

    from shared_code.composition import Components  # noqa: PLC0415
    from shared_code.retraining.local import run  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    components = Components(settings)
    uploads = components.blobs.service.get_container_client(settings.UPLOADS_CONTAINER)
    outcome = run(args.work, settings, components.retraining_store, uploads)
    return 0 if outcome["record"]["status"] == "succeeded" else 1


def retrain_job_yaml_command(args: argparse.Namespace) -> int:
    """Print (and write to --work/job.yml) the Azure ML job one window's retraining would submit."""
    from shared_code.composition import azureml_config  # noqa: PLC0415
    from shared_code.retraining.azureml import build_job, job_yaml  # noqa: PLC0415
    from shared_code.retraining.spec import TrainingSpec, job_name, manifest_blob_name  # noqa: PLC0415

    apply_local_settings_file(args.settings)
    settings = load_settings()
    config = azureml_config(settings)
    name = args.name or settings.MODEL_NAME or "model"
    job = job_name(args.window, 1)
    spec = TrainingSpec(job_name=job, window_key=args.window, window_id=args.window, model_name=name,
                        version=args.version, base_version=args.base_version, base_card="",
                        task=settings.RETRAIN_TASK, examples=(), manifest_blob=manifest_blob_name(job),
                        tags={"window": args.window, "base_model": f"{name}:{args.base_version}"})
    text = job_yaml(build_job(spec, config, work=args.work.resolve()))
    args.work.mkdir(parents=True, exist_ok=True)  # nothing is staged there when AZUREML_CODE names an asset
    (args.work / "job.yml").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imgclass", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser("classify", help="classify image files or folders")
    classify.add_argument("paths", nargs="+")
    classify.add_argument("--model", default="model/artifacts/current.card.json", help="model card or ONNX")
    classify.add_argument("--top-k", type=int, default=5)
    classify.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    classify.set_defaults(handler=classify_command)
    token = commands.add_parser("token", help="print a development bearer token (AUTH_MODE=local)")
    token.add_argument("--user", required=True)
    token.add_argument("--admin", action="store_true", help="include the admin scope")
    token.add_argument("--minutes", type=int, default=None)
    token.add_argument("--settings", default="local.settings.json")
    token.set_defaults(handler=token_command)
    retrain_run = commands.add_parser("retrain-run", help="train one local job folder (started by LocalLauncher)")
    retrain_run.add_argument("work", type=Path)
    retrain_run.set_defaults(handler=retrain_run_command)
    job_yaml = commands.add_parser("retrain-job-yaml", help="a window's Azure ML retraining job as YAML, offline")
    job_yaml.add_argument("--window", default="20260101T0000Z-PT24H", help="window key")
    job_yaml.add_argument("--name", help="model name (default: MODEL_NAME)")
    job_yaml.add_argument("--base-version", default="1")
    job_yaml.add_argument("--version", default="2")
    job_yaml.add_argument("--settings", default="local.settings.json", help="settings file read if present")
    job_yaml.add_argument("--work", type=Path, default=Path(".run/retraining-job"),
                          help="where the staged code and conda file go (the YAML names them)")
    job_yaml.set_defaults(handler=retrain_job_yaml_command)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (ServiceError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
