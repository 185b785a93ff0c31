"""Fine-tune the served model on labelled images (corrections, or a new set of classes), measure, promote.

    python -m model.train --data FOLDER_OR_CSV --out model/artifacts [--name NAME] [--task imagenet|custom]
        [--base CARD] [--version V] [--epochs-head 2] [--epochs-top 2] [--lr-head 1e-2 custom | 1e-3 imagenet]
        [--lr-top 1e-4] [--batch-size 16] [--val-fraction 0.25] [--seed 0] [--min-improvement 0.0] [--max-images N]
        [--publish-connection-string CS | --publish-account-url URL] [--models-container models]
        [--metrics-dir DIR] [--make-current] [--guard-data DIR --max-regression 0.02] [--data-trust curated|unvetted]
        [--promotion automatic|approval]

--data: a folder of class subfolders, or a CSV with columns path,label (paths relative to the CSV's folder
unless --data-root). --task imagenet keeps the base model's labels (the data's labels must be among them);
--task custom trains a new head whose labels are the data's classes, sorted. The new version goes to
OUT/NAME/VERSION/ (see model.promotion). The candidate is promotable only if its accuracy on the held-out split
beats the current model's on the same split by more than --min-improvement, and (when --guard-data is given,
and always with --data-trust unvetted) it loses at most --max-regression against the current model on the guard set
(model.gates). --promotion automatic (the default here) promotes a promotable candidate at once; approval
publishes it as a candidate for an admin to promote. The last line printed is one JSON object; the exit status
is 0 whether or not it promoted, 2 for unusable data, 1 for other failures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError

from model.architectures import WeightsUnavailable, with_new_head
from model.export import ExportMismatch, write_pointer_card
from model.finetune import FinetuneConfig, finetune, history_rows
from model.gates import (
    DATA_TRUST,
    GUARD_RULE,
    PROMOTION_MODES,
    SPLIT_RULE,
    decide,
    guard_gate,
    not_promoted,
    overlaps,
    split_gate,
)
from model.metrics_log import MetricsLog
from model.promotion import (
    EVALUATION_FILE,
    Publisher,
    blob_service,
    card_for_training,
    export_candidate,
    local_versions,
    majority_baseline,
    report,
    resolve_current,
    run_pipeline,
    starting_point,
    write_local_latest,
    write_reference_profile,
)
from model.training_data import (
    BadTrainingData,
    Sample,
    Split,
    check_class_sizes,
    custom_labels,
    index_samples,
    limit_samples,
    load_samples,
    stratified_split,
)
from shared_code.inference.model_card import ModelCard, load_card, save_card

DEFAULT_BASE = Path("model/artifacts/current.card.json")
DEFAULT_OUT = Path("model/artifacts")
IMAGENET_CLASSES = 1000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="class-subfolder folder, or CSV with path,label")
    parser.add_argument("--data-root", type=Path, help="CSV paths are relative to this (default: the CSV's folder)")
    parser.add_argument("--task", choices=["imagenet", "custom"], default="imagenet",
                        help="imagenet: keep the base model's labels; custom: new head with the data's classes")
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, help="card of the current model")
    parser.add_argument("--out", type=Path, required=True, help="artifacts root; the version goes to OUT/NAME/V/")
    parser.add_argument("--name", help="model name, folder and blob prefix (default for --task imagenet: the base "
                                       "card's name; required for --task custom)")
    parser.add_argument("--version", help="default: next integer after OUT/NAME and the models container")
    parser.add_argument("--epochs-head", type=int, default=2, help="phase 1: head only")
    parser.add_argument("--epochs-top", type=int, default=2, help="phase 2: top layers + head")
    parser.add_argument("--lr-head", type=float, default=None,
                        help="default 1e-2 for --task custom (a new, randomly initialised head: 1e-3 stayed at "
                             "the majority baseline in docs/training.md's run), 1e-3 for --task imagenet "
                             "(the pretrained head only needs nudging)")
    parser.add_argument("--lr-top", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-improvement", type=float, default=0.0,
                        help="promote only if candidate accuracy > current accuracy + this")
    parser.add_argument("--max-images", type=int, default=0, help="use at most N images (0: all), class-balanced")
    publish = parser.add_mutually_exclusive_group()
    publish.add_argument("--publish-connection-string", help="publish the version to this storage account")
    publish.add_argument("--publish-account-url",
                         help="publish with DefaultAzureCredential (managed identity; AZURE_CLIENT_ID)")
    parser.add_argument("--models-container", default="models")
    parser.add_argument("--metrics-dir", type=Path, help="params.json + metrics.jsonl (default: VERSION/metrics)")
    parser.add_argument("--make-current", action="store_true",
                        help="when promoted, also point OUT/current.card.json (the app's local default) at it")
    parser.add_argument("--guard-data", type=Path,
                        help="extra labelled folder (e.g. ../shared/imagenet-sample) the candidate must not "
                             "regress on by more than --max-regression")
    parser.add_argument("--max-regression", type=float, default=0.02)
    parser.add_argument("--data-trust", choices=DATA_TRUST, default="curated",
                        help="unvetted: labels nobody checked (user corrections; the retraining launchers pass it): "
                             "their held-out split cannot vouch for the candidate, so it is promotable only after a "
                             "--guard-data evaluation")
    parser.add_argument("--promotion", choices=PROMOTION_MODES, default="automatic",
                        help="automatic: promote a candidate that passes the gates; approval: publish it as a "
                             "candidate, promoted by an admin (POST /api/models/{name}/versions/{version}/promote)")
    return parser


def _prepare_data(args: argparse.Namespace, base_labels: Sequence[str]) -> tuple[list[str], list[Sample]]:
    raw = load_samples(args.data, args.data_root)
    labels = custom_labels(raw) if args.task == "custom" else list(base_labels)
    samples = limit_samples(index_samples(raw, labels), args.max_images, args.seed)
    # custom: every class must train and validate; corrections may hold single images (they only train)
    if args.task == "custom":
        check_class_sizes(samples, labels, every_class=True)
    return labels, samples


def _guard(args: argparse.Namespace, candidate: Path, current: Path | None) -> dict[str, Any]:
    """The guard gate (model.gates): top-1 of candidate and current on --guard-data, when it is given."""
    if args.guard_data is None:
        return guard_gate(None, required=args.data_trust == "unvetted", max_regression=args.max_regression)
    from model.evaluate import evaluate  # noqa: PLC0415

    measured: dict[str, Any] = {"data": str(args.guard_data)}
    measured["candidate"] = evaluate(candidate, args.guard_data, intra_op_threads=1)["top1"]
    measured["current"] = evaluate(current, args.guard_data, intra_op_threads=1)["top1"] if current else None
    independent = not overlaps(args.guard_data, args.data_root or args.data)  # --data-root: where a CSV's images are
    return guard_gate(measured, required=args.data_trust == "unvetted", max_regression=args.max_regression,
                      independent=independent)


def _split_counts(samples: Sequence[Sample], labels: Sequence[str]) -> dict[str, int]:
    counts = Counter(s.class_index for s in samples)
    return {labels[index]: count for index, count in sorted(counts.items())}


def train(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    if not args.base.exists():
        raise FileNotFoundError(f"base card {args.base} not found (`make model` writes {DEFAULT_BASE})")
    base, base_onnx = load_card(args.base)
    if not args.name:
        if args.task == "custom":
            raise BadTrainingData("--name is required for --task custom (e.g. --name plants)")
        args.name = base.name
    labels, samples = _prepare_data(args, base.labels)
    split = stratified_split(samples, args.val_fraction, args.seed)
    publisher = None
    if args.publish_connection_string or args.publish_account_url:
        publisher = Publisher(blob_service(args.publish_connection_string, args.publish_account_url),
                              args.models_container)
    name_folder = args.out / args.name
    version = args.version or str(max([*local_versions(name_folder),
                                       *(publisher.versions(args.name) if publisher else [])], default=0) + 1)
    folder = name_folder / version
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} already exists; pick another --version")
    try:
        return _train_version(args, base_card=(base, base_onnx), labels=labels, samples=samples, split=split,
                              publisher=publisher, version=version, folder=folder, started=started)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a failed run leaves no half-made version behind
        raise
    finally:
        if publisher is not None:
            publisher.close()


def _train_version(args: argparse.Namespace, *, base_card: tuple[ModelCard, Path], labels: list[str],
                   samples: list[Sample], split: Split, publisher: Publisher | None, version: str, folder: Path,
                   started: float) -> dict[str, Any]:
    base, base_onnx = base_card
    name_folder = args.out / args.name
    classes = len({s.class_index for s in samples})
    print(f"{args.task} training of {args.name}:{version} on {len(samples)} images of {classes} classes "
          f"({len(split.train)} train / {len(split.validation)} validation) from {args.data}", flush=True)

    start = starting_point(base, base_onnx, args.seed)
    built = start.built
    if start.labels != labels:
        built = with_new_head(built, len(labels), args.seed)
        print(f"new {len(labels)}-class head on {start.description}", flush=True)
    else:
        print(f"starting from {start.description}", flush=True)
    train_card = card_for_training(base, built)

    log = MetricsLog(args.metrics_dir or folder / "metrics")
    if args.lr_head is None:
        args.lr_head = 1e-2 if args.task == "custom" else 1e-3
    config = FinetuneConfig(args.epochs_head, args.epochs_top, args.lr_head, args.lr_top, args.batch_size,
                            args.seed)
    log.log_params({"task": args.task, "name": args.name, "version": version, "base": base.model_id,
                    "start": start.description, "architecture": built.architecture, "data": str(args.data),
                    "num_classes": len(labels), "train_images": len(split.train),
                    "validation_images": len(split.validation), "epochs_head": config.epochs_head,
                    "epochs_top": config.epochs_top, "lr_head": config.lr_head, "lr_top": config.lr_top,
                    "batch_size": config.batch_size, "val_fraction": args.val_fraction, "seed": config.seed,
                    "min_improvement": args.min_improvement, "max_images": args.max_images,
                    "promotion": args.promotion, "data_trust": args.data_trust})
    fit_started = time.perf_counter()
    history = finetune(built, split.train, split.validation, train_card, config, log)
    fit_seconds = time.perf_counter() - fit_started

    source = (f"fine-tuned ({args.task}) from {start.description} on {len(split.train)} images of {args.data}, "
              f"seed {args.seed}")
    card_path = export_candidate(built, labels, folder, args.name, version, source=source,
                                 check_samples=split.validation, base_id=base.model_id)
    measure_started = time.perf_counter()
    validation_run = run_pipeline(card_path, split.validation, labels)
    training_run = run_pipeline(card_path, split.train, labels)
    candidate = report(validation_run.predictions, labels)
    write_reference_profile(card_path, validation_run.rows + training_run.rows)

    current = resolve_current(labels=labels, base_card=args.base, name_folder=name_folder, version=version,
                              promoted_card=publisher.promoted_card(args.name) if publisher else None)
    if current.card_path is not None:
        current_report = report(run_pipeline(current.card_path, split.validation, labels).predictions, labels)
    else:
        current_report = majority_baseline(split.train, split.validation, labels)
    guard = _guard(args, card_path, current.card_path)
    measure_seconds = time.perf_counter() - measure_started
    decision = decide(split_gate(candidate["accuracy"], current_report["accuracy"], args.min_improvement), guard,
                      mode=args.promotion)

    card, onnx_path = load_card(card_path)
    card = card.model_copy(update={"metrics": {"validation_accuracy": candidate["accuracy"],
                                               "validation_macro_f1": candidate["macro_f1"],
                                               "validation_images": float(len(split.validation))}})
    save_card(card, onnx_path)
    evaluation = {
        "name": args.name, "version": version, "task": args.task, "data": str(args.data),
        "labels": labels if len(labels) != IMAGENET_CLASSES else None, "num_classes": len(labels),
        "split": {"seed": args.seed, "val_fraction": args.val_fraction, "train": _split_counts(split.train, labels),
                  "validation": _split_counts(split.validation, labels)},
        "candidate": {"model": card.model_id, **candidate},
        "current": {"model": current.description, **current_report},
        "guard": guard if guard["evaluated"] else None,
        "promotion": {**decision, "min_improvement": args.min_improvement,
                      "rule": SPLIT_RULE + (" and " + GUARD_RULE if guard["evaluated"] or guard["required"] else "")},
        "history": history_rows(history),
        "timings_s": {"fine_tune": round(fit_seconds, 2), "measure": round(measure_seconds, 2)},
    }
    evaluation_path = folder / EVALUATION_FILE
    evaluation_path.write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")

    if publisher is not None:
        # published first, never promoted by the upload itself: the pointer moves (automatic only) with a
        # conditional write that refuses to go back past a newer version another run promoted meanwhile
        publisher.publish(args.name, version, folder, promote=False)
        if decision["promoted"]:
            refused = publisher.promote(args.name, version, card.sha256)
            if refused is not None:
                decision = not_promoted(decision, refused)
                evaluation["promotion"].update(decision)
                evaluation_path.write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")
                publisher.upload(args.name, version, evaluation_path)
    promoted = bool(decision["promoted"])
    log.log_metrics({"candidate_accuracy": candidate["accuracy"], "candidate_macro_f1": candidate["macro_f1"],
                     "current_accuracy": current_report["accuracy"], "promoted": float(promoted),
                     "promotable": float(decision["promotable"]), "fine_tune_seconds": fit_seconds},
                    step=config.epochs_head + config.epochs_top)
    log.log_artifact(evaluation_path)
    log.log_artifact(card_path)
    if promoted:
        print(f"local pointer: {write_local_latest(name_folder, version, card.sha256)}")
        if args.make_current:
            print(f"pointer card: {write_pointer_card(card, card_path, args.out)}")
    print(f"candidate {card.model_id}: accuracy {candidate['accuracy']:.4f} (macro F1 {candidate['macro_f1']:.4f}) vs "
          f"current {current.description}: {current_report['accuracy']:.4f} -> "
          f"{_verdict(decision)} ({time.perf_counter() - started:.1f}s)", flush=True)
    result: dict[str, Any] = {"promoted": promoted, "name": args.name, "version": version,
                              "promotable": decision["promotable"], "state": decision["state"],
                              "promotion": decision["mode"], "reasons": decision["reasons"]}
    if len(labels) != IMAGENET_CLASSES:
        result["labels"] = labels
    result.update({
        "num_classes": len(labels),
        "candidate": {"accuracy": candidate["accuracy"], "macro_f1": candidate["macro_f1"]},
        "current": {"accuracy": current_report["accuracy"], "macro_f1": current_report["macro_f1"],
                    "model": current.description},
        "card": str(card_path), "evaluation": str(evaluation_path), "published": publisher is not None,
    })
    return result


def _verdict(decision: dict[str, Any]) -> str:
    if decision["promoted"]:
        return "promoted"
    if decision["promotable"] and not decision["reasons"]:
        return "candidate, awaiting an admin's approval (--promotion approval)"
    return "not promoted: " + "; ".join(decision["reasons"])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = train(args)
    except BadTrainingData as exc:
        print(f"error: bad training data: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, ExportMismatch, WeightsUnavailable, ValueError, AzureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
