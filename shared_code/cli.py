"""Command line for humans: classify files or folders, and print a development token.

    python -m shared_code.cli classify photos/ cat.jpg --model model/artifacts/current.card.json --top-k 3
    python -m shared_code.cli token --user alice
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared_code.blob_store import ALLOWED_EXTENSIONS
from shared_code.classifier import load_classifier
from shared_code.errors import ImageRejected, ServiceError
from shared_code.pipeline import ClassificationPipeline
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
    from shared_code.auth import ALL_SCOPES, DEFAULT_USER_SCOPES, issue_token  # noqa: PLC0415

    apply_local_settings_file(args.settings)
    settings = load_settings()
    scopes = ALL_SCOPES if args.admin else DEFAULT_USER_SCOPES
    print(issue_token(settings, args.user, scopes, args.minutes))
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
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (ServiceError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
