"""Retraining's pure parts: the manifest, job names, argument rules, the status order, and import isolation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared_code.errors import BadRequest
from shared_code.inference.model_repository import version_key
from shared_code.retraining.local import last_json_line
from shared_code.retraining.spec import TrainingExample, TrainingSpec, job_name, manifest_csv, read_manifest
from shared_code.retraining.submission import advance, record_id, split_args

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


def spec(**changes: object) -> TrainingSpec:
    values: dict[str, object] = {
        "job_name": "imgclass-retrain-20261123t0000z-pt24h-1", "window_key": "20261123T0000Z-PT24H",
        "window_id": "2026-11-23T00:00Z/PT24H", "model_name": "efficientnet_lite0", "version": "2",
        "base_version": "1", "base_card": "/models/1/model.card.json", "task": "imagenet",
        "examples": (TrainingExample("bob/b.jpg", "tench"), TrainingExample("alice/a.png", "crane, bird")),
        "manifest_blob": "_retraining/imgclass-retrain-20261123t0000z-pt24h-1/manifest.csv",
        "extra_args": ("--epochs-head", "2"),
    }
    values.update(changes)
    return TrainingSpec(**values)  # type: ignore[arg-type]


def test_manifest_is_sorted_quoted_and_reads_back() -> None:
    examples = list(spec().examples)
    text = manifest_csv(examples)
    assert text.splitlines() == ["path,label", 'alice/a.png,"crane, bird"', "bob/b.jpg,tench"]
    assert read_manifest(text) == sorted(examples)
    assert manifest_csv([]) == "path,label\n"


def test_job_names_are_deterministic_valid_azure_ml_names() -> None:
    import re  # noqa: PLC0415

    name = job_name("20261123T0000Z-PT24H", 1)
    assert name == job_name("20261123T0000Z-PT24H", 1) != job_name("20261123T0000Z-PT24H", 2)
    assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9\-_]{2,254}", name), name
    assert record_id("20261123T0000Z-PT24H") == "retraining-20261123T0000Z-PT24H"


def test_train_arguments_follow_the_model_train_contract() -> None:
    args = spec().train_arguments(data="m.csv", data_root="/up", base="/b/model.card.json", out="/o",
                                  metrics_dir="/met", publish=["--publish-account-url", "https://a"],
                                  models_container="models")
    pairs = dict(zip(args[:-2:2], args[1:-2:2], strict=True))
    # corrections are unvetted: the guard gate is always required, and promotion waits for an admin by default
    assert pairs == {"--data": "m.csv", "--data-root": "/up", "--task": "imagenet", "--base": "/b/model.card.json",
                     "--out": "/o", "--name": "efficientnet_lite0", "--version": "2", "--models-container": "models",
                     "--metrics-dir": "/met", "--publish-account-url": "https://a", "--data-trust": "unvetted",
                     "--promotion": "approval"}
    assert args[-2:] == ["--epochs-head", "2"]


def test_train_arguments_carry_the_guard_set_and_the_promotion_mode() -> None:
    guarded = spec(guard_data="_guard/imagenet", promotion="automatic")
    args = guarded.train_arguments(data="m.csv", data_root="/up", base="/b", out="/o", metrics_dir="/met",
                                   publish=[], models_container="models", guard="/mnt/guard")
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--guard-data"] == "/mnt/guard" and pairs["--promotion"] == "automatic"
    assert pairs["--data-trust"] == "unvetted"
    unguarded = spec().train_arguments(data="m.csv", data_root="/up", base="/b", out="/o", metrics_dir="/met",
                                       publish=[], models_container="models")
    assert "--guard-data" not in unguarded  # model.train then reports that no guard set was given


def test_a_local_guard_folder_is_relative_to_the_repo_root(tmp_path: Path) -> None:
    from shared_code.retraining.local import guard_folder  # noqa: PLC0415

    assert guard_folder("", tmp_path) == ""
    assert guard_folder("../shared/imagenet-sample", tmp_path) == str(tmp_path / "../shared/imagenet-sample")
    assert guard_folder("/data/guard", tmp_path) == "/data/guard"


def test_extra_arguments_cannot_redirect_data_or_publishing() -> None:
    assert split_args("--epochs-head 3 --max-images 500") == ("--epochs-head", "3", "--max-images", "500")
    assert split_args("") == ()
    for bad in ("--out /tmp/x", "--publish-account-url=https://evil", "--name other", "--data x.csv",
                "--promotion automatic", "--guard-data /tmp/mine", "--data-trust=curated"):  # gates are settings
        with pytest.raises(BadRequest):
            split_args(bad)


def test_status_only_moves_forward_and_never_leaves_a_final_state() -> None:
    assert advance({"status": "submitting"}, "submitted", jobName="j") == {"status": "submitted", "jobName": "j"}
    assert advance({"status": "running"}, "submitted") is None  # a late "submitted" must not hide "running"
    assert advance({"status": "running"}, "succeeded", result={"promoted": True}) is not None
    for final in ("succeeded", "failed", "skipped"):
        assert advance({"status": final}, "running") is None
        assert advance({"status": final}, "failed") is None


def test_last_json_line_is_the_training_verdict() -> None:
    assert last_json_line('epoch 1\n{"promoted": true, "version": "2"}\n\n') == {"promoted": True, "version": "2"}
    assert last_json_line('{"a": 1}\nTraceback: boom\n') is None  # only the last line counts
    assert last_json_line("") is None
    assert last_json_line("[1, 2]") is None


def test_versions_sort_numerically_with_variants_after_their_base() -> None:
    versions = ["10", "2", "1-int8", "1", "candidate"]
    assert sorted(versions, key=version_key) == ["1", "1-int8", "2", "10", "candidate"]


def test_classify_path_never_imports_azure_ml_or_torch() -> None:
    code = (
        "import os, sys; os.environ.setdefault('AUTH_SIGNING_KEY', 'x' * 40)\n"
        "from pathlib import Path; import tempfile\n"
        "from tests.factories import make_tiny_model, image_bytes\n"
        "os.environ['MODEL_PATH'] = str(make_tiny_model(Path(tempfile.mkdtemp())))\n"
        "import function_app, functions.models_api, shared_code.retraining.submission, shared_code.retraining.local\n"
        "from shared_code.inference.model_repository import ModelProvider\n"
        "outcome = ModelProvider(local_path=os.environ['MODEL_PATH']).current().classify_bytes(image_bytes())\n"
        "assert outcome.predictions, outcome\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('azure.ai.ml')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_one_user_cannot_make_up_the_training_set() -> None:
    from datetime import UTC, datetime  # noqa: PLC0415
    from typing import Any, cast  # noqa: PLC0415

    from azure.cosmos import ContainerProxy  # noqa: PLC0415

    from shared_code.retraining.submission import collect_corrections  # noqa: PLC0415

    class Corrections:
        """What the corrections query answers: one flooding user and one ordinary user."""

        def query_items(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
            flood = [{"userId": "flood", "blobName": f"flood/{i:032x}.jpg", "correctedLabel": "wrong",
                      "createdAt": f"2026-11-{1 + i % 28:02d}T00:00:{i % 60:02d}.000000Z"} for i in range(500)]
            return [*flood, {"userId": "ada", "blobName": "ada/1.jpg", "correctedLabel": "cat",
                             "createdAt": "2026-11-02T00:00:00.000000Z"}]

    results = cast(ContainerProxy, Corrections())
    window = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert len(collect_corrections(results, *window)) == 501
    capped = collect_corrections(results, *window, per_user_cap=20)
    assert len(capped) == 21
    assert sum(1 for example in capped if example.path.startswith("flood/")) == 20
    assert any(example.path == "ada/1.jpg" for example in capped)
