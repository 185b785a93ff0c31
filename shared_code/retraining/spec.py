"""What a launcher gets: one training run's spec, its manifest of corrected uploads, and the Launcher protocol.

Launchers (`local`, `azureml`) depend on this module only, never on the submission flow that calls them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

MANIFEST_PREFIX = "_retraining"  # in the models container; model names never start with "_"
MANIFEST_FILE = "manifest.csv"


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def job_name(window_key: str, attempt: int) -> str:
    """Deterministic Azure ML job name (letters, digits, '-'; starts with a letter): one per window attempt."""
    return f"imgclass-retrain-{window_key.lower()}-{attempt}"


@dataclass(frozen=True, order=True)
class TrainingExample:
    """One corrected upload: its blob (relative to the uploads container) and the label its owner gave."""

    path: str
    label: str


def manifest_csv(examples: Iterable[TrainingExample]) -> str:
    """`path,label` rows, sorted, RFC 4180 quoting (labels may hold commas, e.g. 'crane, bird')."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows([example.path, example.label] for example in sorted(examples))
    return buffer.getvalue()


def read_manifest(text: str) -> list[TrainingExample]:
    return [TrainingExample(row["path"], row["label"]) for row in csv.DictReader(io.StringIO(text))]


def manifest_blob_name(job: str) -> str:
    return f"{MANIFEST_PREFIX}/{job}/{MANIFEST_FILE}"


@dataclass(frozen=True)
class TrainingSpec:
    """One training run: everything a launcher turns into `python -m model.train` arguments."""

    job_name: str
    window_key: str
    window_id: str
    model_name: str
    version: str
    base_version: str
    base_card: str  # local path of the served card (the local launcher; Azure ML mounts the models container)
    task: str
    examples: tuple[TrainingExample, ...]
    manifest_blob: str
    extra_args: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    # the trusted guard set (RETRAIN_GUARD_DATA: a folder for the local launcher, a folder of the models
    # container for Azure ML); empty: the candidate is never promotable, and its evaluation says why
    guard_data: str = ""
    promotion: str = "approval"  # RETRAIN_PROMOTION: approval (an admin promotes) or automatic

    def train_arguments(self, *, data: str, data_root: str, base: str, out: str, metrics_dir: str,
                        publish: list[str], models_container: str, guard: str = "") -> list[str]:
        """The argument list after `python -m model.train` (the contract in docs/retraining.md).

        Corrections are unvetted labels: `--data-trust unvetted` makes the guard gate required, and `guard` is
        where the launcher put the guard set (empty: no guard, so never promotable).
        """
        return ["--data", data, "--data-root", data_root, "--task", self.task, "--base", base, "--out", out,
                "--name", self.model_name, "--version", self.version, "--models-container", models_container,
                "--metrics-dir", metrics_dir, *publish, "--data-trust", "unvetted", "--promotion", self.promotion,
                *(["--guard-data", guard] if guard else []), *self.extra_args]

    def manifest_text(self) -> str:
        return manifest_csv(self.examples)


class Launcher(Protocol):
    """Starts training somewhere; must not block for the training itself."""

    name: str

    def launch(self, spec: TrainingSpec) -> dict[str, Any]:
        """Start the run (or find the one a crashed caller already started); details for the record."""
        ...

    def refresh(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """Fields to update on an in-flight record (status, result), or None when nothing is known yet."""
        ...
