"""RETRAIN_MODE=local: run `python -m model.train` (RETRAIN_LOCAL_PYTHON, the torch venv) on this machine.

`LocalLauncher.launch` writes the job folder (`RETRAIN_WORK_DIR/{job name}/`: job.json, manifest.csv) and
starts a detached runner, `python -m shared_code.cli retrain-run <folder>` (the app's own Python), then
returns at once: a timer must not hold the host for the minutes training takes. The runner marks the
record `running`, downloads the manifest's images from the uploads container into `data/`, runs the training
entry with the same arguments an Azure ML job gets (logs: `train.log`, stdout: `train.out`), parses its last
stdout line (JSON) and records the outcome, `succeeded` or `failed`, on the submission record and in
`outcome.json`. `wait` lets tests and `make retrain-local` block until the runner is done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared_code.retraining.spec import TrainingExample, TrainingSpec, manifest_csv, read_manifest, utc_iso
from shared_code.retraining.submission import FINAL_STATUSES, RetrainingStore, advance, note_outcome
from shared_code.settings import Settings

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB_FILE = "job.json"
OUTCOME_FILE = "outcome.json"
PID_FILE = "runner.pid"
TRAIN_TIMEOUT_S = 6 * 3600
_children: dict[str, subprocess.Popen[bytes]] = {}  # runners this process started (reaped by `wait`)


def default_work_root(settings: Settings) -> Path:
    return Path(settings.RETRAIN_WORK_DIR) if settings.RETRAIN_WORK_DIR else (
        Path(tempfile.gettempdir()) / "imgclass-retraining")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a finished child not yet reaped is a zombie: not alive
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


class LocalLauncher:
    """Starts the training entry as a detached local process per job."""

    name = "local"

    def __init__(self, *, python: str, work_root: Path, repo_root: Path = REPO_ROOT) -> None:
        self.python = python
        self.work_root = work_root
        self.repo_root = repo_root

    def folder(self, job_name: str) -> Path:
        return self.work_root / job_name

    def launch(self, spec: TrainingSpec) -> dict[str, Any]:
        work = self.folder(spec.job_name)
        details = {"workDir": str(work), "log": str(work / "train.log")}
        pid_file = work / PID_FILE
        if (work / OUTCOME_FILE).exists() or (pid_file.exists() and _alive(int(pid_file.read_text()))):
            logger.info("local training %s already started; not started again", spec.job_name)
            return {**details, "pid": int(pid_file.read_text()) if pid_file.exists() else None}
        python = Path(self.python) if Path(self.python).is_absolute() else self.repo_root / self.python
        if not python.exists():
            raise FileNotFoundError(f"RETRAIN_LOCAL_PYTHON {python} does not exist (make model-venv)")
        work.mkdir(parents=True, exist_ok=True)
        (work / "manifest.csv").write_text(spec.manifest_text(), encoding="utf-8")
        job = {"spec": {**asdict(spec), "examples": None}, "python": str(python), "repo_root": str(self.repo_root)}
        (work / JOB_FILE).write_text(json.dumps(job, indent=2), encoding="utf-8")
        with (work / "runner.log").open("ab") as log:
            runner = subprocess.Popen(
                [sys.executable, "-m", "shared_code.cli", "retrain-run", str(work)], cwd=self.repo_root,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        pid_file.write_text(str(runner.pid))
        _children[spec.job_name] = runner
        logger.info("local training %s started (runner pid %d) in %s", spec.job_name, runner.pid, work)
        return {**details, "pid": runner.pid}

    def refresh(self, record: dict[str, Any] | Any) -> dict[str, Any] | None:
        """The outcome file of a runner that could not write its record, or `failed` for a runner that died."""
        work = self.folder(str(record["jobName"]))
        outcome = work / OUTCOME_FILE
        if outcome.exists():
            return dict(json.loads(outcome.read_text(encoding="utf-8"))["record"])
        pid_file = work / PID_FILE
        if pid_file.exists() and not _alive(int(pid_file.read_text())):
            return {"status": "failed", "error": "the local training runner exited without an outcome",
                    "finishedAt": utc_iso(datetime.now(UTC))}
        return None

    def wait(self, job_name: str, timeout: float) -> dict[str, Any]:
        """Block until the job's outcome file exists (tests, make retrain-local); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        outcome = self.folder(job_name) / OUTCOME_FILE
        while time.monotonic() < deadline:
            child = _children.get(job_name)
            if child is not None and child.poll() is not None:
                _children.pop(job_name, None)
            if outcome.exists():
                return dict(json.loads(outcome.read_text(encoding="utf-8")))
            if child is not None and child.returncode is not None:
                raise RuntimeError(f"runner of {job_name} exited {child.returncode} without an outcome; see "
                                   f"{self.folder(job_name) / 'runner.log'}")
            time.sleep(0.2)
        raise TimeoutError(f"local training {job_name} did not finish in {timeout:.0f} s")


# --- the runner (a process of its own) ----------------------------------------------------------------
def download_examples(uploads: Any, examples: list[TrainingExample], root: Path) -> list[TrainingExample]:
    """Each example's blob to `root/<path>`; examples whose blob vanished are left out."""
    kept = []
    for example in examples:
        target = root / example.path
        if not target.resolve().is_relative_to(root.resolve()):
            logger.warning("training path %s leaves the data folder; left out", example.path)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with target.open("wb") as handle:
                uploads.download_blob(example.path).readinto(handle)
        except ResourceNotFoundError:
            target.unlink(missing_ok=True)
            continue
        kept.append(example)
    return kept


def last_json_line(text: str) -> dict[str, Any] | None:
    """The training entry's verdict: its last stdout line that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
        break
    return None


def publish_arguments(settings: Settings) -> list[str]:
    """Where model.train publishes: Azurite's connection string locally, the account URL with an identity."""
    if settings.STORAGE_CONNECTION_STRING:
        return ["--publish-connection-string", settings.STORAGE_CONNECTION_STRING]
    return ["--publish-account-url", settings.STORAGE_ACCOUNT_URL]


def guard_folder(guard_data: str, repo_root: Path) -> str:
    """RETRAIN_GUARD_DATA for a local job: a folder on this machine (relative: to the repo root), never the job's
    own data folder; empty stays empty (model.train then reports that no guard set was given)."""
    if not guard_data:
        return ""
    path = Path(guard_data)
    return str(path if path.is_absolute() else repo_root / path)


def run(work: Path, settings: Settings, store: RetrainingStore, uploads: Any) -> dict[str, Any]:
    """Train one job folder and record the outcome (the detached runner's body)."""
    job = json.loads((work / JOB_FILE).read_text(encoding="utf-8"))
    spec = job["spec"]
    key = spec["window_key"]

    def mark(status: str, **fields: Any) -> None:
        try:
            updated = store.update(key, lambda body: advance(body, status, **fields)
                                   if body.get("jobName") == spec["job_name"] else None)
        except Exception:  # the outcome file still tells the sweep (LocalLauncher.refresh)
            logger.exception("could not record %s on %s", status, key)
            return
        if status in FINAL_STATUSES and updated.get("status") == status:
            note_outcome(updated)

    mark("running", startedAt=utc_iso(datetime.now(UTC)))
    started = time.monotonic()
    examples = download_examples(uploads, read_manifest((work / "manifest.csv").read_text(encoding="utf-8")),
                                 work / "data")
    (work / "manifest.csv").write_text(manifest_csv(examples), encoding="utf-8")
    training = TrainingSpec(**{**spec, "examples": tuple(examples), "extra_args": tuple(spec["extra_args"])})
    command = [job["python"], "-m", "model.train", *training.train_arguments(
        data=str(work / "manifest.csv"), data_root=str(work / "data"), base=spec["base_card"],
        out=str(work / "out"), metrics_dir=str(work / "metrics"), publish=publish_arguments(settings),
        models_container=settings.MODELS_CONTAINER, guard=guard_folder(training.guard_data, Path(job["repo_root"])))]
    environment = {**os.environ, "PYTHONPATH": job["repo_root"], "PYTHONUNBUFFERED": "1"}
    with (work / "train.out").open("wb") as out, (work / "train.log").open("wb") as log:
        try:
            completed = subprocess.run(command, cwd=job["repo_root"], stdout=out, stderr=log, env=environment,
                                       timeout=TRAIN_TIMEOUT_S, check=False)
            returncode = completed.returncode
        except subprocess.TimeoutExpired:
            returncode = -1
    result = last_json_line((work / "train.out").read_text(encoding="utf-8", errors="replace"))
    seconds = round(time.monotonic() - started, 1)
    if returncode == 0 and result is not None:
        record = {"status": "succeeded", "result": result, "trainSeconds": seconds}
    else:
        tail = (work / "train.log").read_text(encoding="utf-8", errors="replace")[-800:]
        record = {"status": "failed", "result": result, "trainSeconds": seconds,
                  "error": f"model.train exited {returncode}: {tail}"}
    record["finishedAt"] = utc_iso(datetime.now(UTC))
    fields = {name: value for name, value in record.items() if name != "status"}
    mark(str(record["status"]), **fields)
    # written last: `wait` returns once it exists, and by then the record says how it ended
    outcome = {"returncode": returncode, "images": len(examples), "record": record}
    partial = work / f".{OUTCOME_FILE}.part"
    partial.write_text(json.dumps(outcome, indent=2), encoding="utf-8")
    partial.replace(work / OUTCOME_FILE)
    logger.info("local training %s: %s in %.1f s", spec["job_name"], record["status"], seconds)
    return outcome
