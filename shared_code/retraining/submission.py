"""Retraining from traffic: the training set a window's corrections make, and one job per window, exactly once.

The training set is every uploaded image (blob results; HTTP classification keeps no image) whose owner
corrected its label, from RETRAIN_LOOKBACK_DAYS before the window's end up to it: a manifest CSV `path,label`
with paths relative to the uploads container. A launcher (`shared_code.retraining.local` runs
`python -m model.train` as a local process, `shared_code.retraining.azureml` submits an Azure ML command job) trains,
compares with the served model and publishes; a promoted version is served once ModelProvider next looks.

Exactly once: the submission is a document in the drift container (`id` = `retraining-{window key}`, same
partition as the window's drift document). `create_item` lets one caller through; the others get 409 and the
existing record. The job name is derived from the window and attempt, so Azure ML itself refuses a second
job of that name. A caller that died between the record and the launch leaves it `submitting`; after
RETRAIN_STALE_MINUTES the next sweep takes it over (ETag-checked) and launches again under the same name,
after checking that the first launch did not in fact happen.
"""

from __future__ import annotations

import logging
import shlex
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import CosmosAccessConditionFailedError, CosmosResourceExistsError
from azure.storage.blob import ContainerClient, ContentSettings

from shared_code import telemetry
from shared_code.errors import BadRequest, NotFound
from shared_code.inference.model_repository import BlobModelRepository
from shared_code.monitoring.window import DriftWindow
from shared_code.retraining.approval import EVALUATION_FILE, gates_of, read_json, version_state
from shared_code.retraining.spec import (
    Launcher,
    TrainingExample,
    TrainingSpec,
    job_name,
    manifest_blob_name,
    utc_iso,
)

logger = logging.getLogger(__name__)

RECORD_KIND = "retraining"
RetrainingStatus = Literal["requested", "submitting", "submitted", "running", "succeeded", "failed", "skipped"]
FINAL_STATUSES = frozenset({"succeeded", "failed", "skipped"})
# `requested`: recorded by the API app (RETRAIN_LAUNCH=monitor), launched by the monitor app's next sweep
_STAGE = {"requested": 0, "submitting": 1, "submitted": 2, "running": 3, "succeeded": 4, "failed": 4, "skipped": 4}
MAX_LAUNCH_ATTEMPTS = 3
_CORRECTIONS_QUERY = (
    "SELECT c.id, c.userId, c.blobName, c.correctedLabel, c.createdAt FROM c "
    "WHERE c.createdAt >= @start AND c.createdAt < @end AND c.status = 'done' AND c.source = 'blob' "
    "AND IS_STRING(c.correctedLabel) AND IS_STRING(c.blobName)"
)


def parse_iso(text: str | None) -> datetime:
    return datetime.fromisoformat((text or "1970-01-01T00:00:00Z").replace("Z", "+00:00"))


def record_id(window_key: str) -> str:
    return f"{RECORD_KIND}-{window_key}"


# --- the training set ---------------------------------------------------------------------------------


def collect_corrections(results: ContainerProxy, start: datetime, end: datetime, *,
                        per_user_cap: int = 0) -> list[TrainingExample]:
    """Corrected blob results created in [start, end), across users (cross-partition; admin and timer only).

    `per_user_cap` (> 0) keeps at most that many corrections per user, the newest: corrections are unvetted,
    so one account (or a few) flooding wrong labels cannot make up the training set.
    """
    parameters: list[dict[str, Any]] = [{"name": "@start", "value": _result_time(start)},
                                        {"name": "@end", "value": _result_time(end)}]
    by_user: dict[str, list[tuple[str, TrainingExample]]] = {}
    for item in results.query_items(_CORRECTIONS_QUERY, parameters=parameters,
                                    enable_cross_partition_query=True, max_item_count=1000):
        if item.get("blobName") and item.get("correctedLabel"):
            example = TrainingExample(str(item["blobName"]), str(item["correctedLabel"]))
            by_user.setdefault(str(item.get("userId")), []).append((str(item.get("createdAt") or ""), example))
    examples: set[TrainingExample] = set()
    capped = 0
    for user_examples in by_user.values():
        newest = sorted(user_examples, key=lambda pair: pair[0], reverse=True)
        kept = newest[:per_user_cap] if per_user_cap > 0 else newest
        capped += len(newest) - len(kept)
        examples.update(example for _, example in kept)
    if capped:
        logger.info("%d corrections left out by the per-user cap of %d", capped, per_user_cap)
    return sorted(examples)


def _result_time(moment: datetime) -> str:
    """The exact format of a result's `createdAt`, so string comparison in Cosmos is time comparison."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def existing_examples(uploads: ContainerClient, examples: Iterable[TrainingExample]) -> list[TrainingExample]:
    """The examples whose blob still exists (a user may have deleted the result and its image since).

    One listing per user prefix (5,000 names a page) rather than one request per image.
    """
    wanted = list(examples)
    present: set[str] = set()
    for prefix in sorted({example.path.split("/", 1)[0] + "/" for example in wanted}):
        present.update(blob.name for blob in uploads.list_blobs(name_starts_with=prefix))
    kept = [example for example in wanted if example.path in present]
    if len(kept) < len(wanted):
        logger.info("%d training images were deleted since their correction; left out", len(wanted) - len(kept))
    return kept


# --- what a launcher gets -----------------------------------------------------------------------------


class DeferredLauncher:
    """The launcher of an app that only records submissions (RETRAIN_LAUNCH=monitor: the API app).

    It carries the name of the launcher the monitor app runs (RETRAIN_MODE), so records read the same either
    way, and never starts anything: the API package has no azure-ai-ml, and its instances scale with traffic.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def launch(self, spec: TrainingSpec) -> dict[str, Any]:
        raise RuntimeError(f"{spec.job_name}: this app records retraining; the monitor app launches it")

    def refresh(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        return None


# --- the record ---------------------------------------------------------------------------------------
class RetrainingStore:
    """Submission records, kept in the drift container beside their window's drift document."""

    def __init__(self, container: ContainerProxy, *, stale_after: timedelta = timedelta(minutes=15)) -> None:
        self.container = container
        self.stale_after = stale_after

    def create(self, document: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(record, True) for the one caller whose create succeeded; (existing record, False) for the rest."""
        try:
            return self.container.create_item(document), True
        except CosmosResourceExistsError:
            existing = self.get(document["windowId"])
            if existing is None:  # deleted in between: very unlikely; let the caller try again later
                raise
            return existing, False

    def get(self, window_key: str) -> dict[str, Any] | None:
        try:
            item: dict[str, Any] = self.container.read_item(record_id(window_key), partition_key=window_key)
        except ResourceNotFoundError:
            return None
        return item

    def replace(self, document: dict[str, Any], body: dict[str, Any]) -> dict[str, Any] | None:
        """Replace if nobody changed the record since `document` was read; None when somebody did."""
        clean = {key: value for key, value in body.items() if not key.startswith("_")}
        clean["updatedAt"] = utc_iso(datetime.now(UTC))
        try:
            replaced: dict[str, Any] = self.container.replace_item(
                document["id"], clean, etag=document["_etag"], match_condition=MatchConditions.IfNotModified)
        except CosmosAccessConditionFailedError:
            return None
        return replaced

    def update(self, window_key: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
        """Read-modify-write with ETag retries; `change` returns the new body, or None to leave it as it is."""
        for _ in range(20):
            current = self.get(window_key)
            if current is None:
                raise NotFound(f"no retraining record for window {window_key}")
            body = change(dict(current))
            if body is None:
                return current
            replaced = self.replace(current, body)
            if replaced is not None:
                return replaced
        raise RuntimeError(f"retraining record {window_key} kept changing; update abandoned")

    def list_records(self, limit: int) -> list[dict[str, Any]]:
        """Records newest window first (a few small documents: sorted here, no ORDER BY across partitions)."""
        items = self.container.query_items("SELECT * FROM c WHERE c.kind = @kind",
                                           parameters=[{"name": "@kind", "value": RECORD_KIND}],
                                           enable_cross_partition_query=True)
        return sorted(items, key=lambda item: (str(item.get("windowStart", "")), str(item.get("createdAt", ""))),
                      reverse=True)[:limit]

    def in_flight(self) -> list[dict[str, Any]]:
        """Records not yet final (the sweep's work list)."""
        items = self.container.query_items(
            "SELECT * FROM c WHERE c.kind = @kind "
            "AND c.status IN ('requested', 'submitting', 'submitted', 'running')",
            parameters=[{"name": "@kind", "value": RECORD_KIND}], enable_cross_partition_query=True)
        return list(items)


def advance(body: dict[str, Any], status: str, **fields: Any) -> dict[str, Any] | None:
    """`body` moved to `status` with `fields`, or None when that would move it backwards (or out of final)."""
    current = str(body.get("status", "submitting"))
    if current in FINAL_STATUSES or _STAGE[status] < _STAGE[current]:
        return None
    body.update(fields, status=status)
    return body


# --- submitting ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetrainingDependencies:
    """What a submission reads and where it launches."""

    store: RetrainingStore
    results: ContainerProxy
    uploads: ContainerClient
    models: BlobModelRepository
    launcher: Launcher
    served: Callable[[], tuple[str, str, Path]]  # (model name, served version, served card path)
    task: str = "imagenet"
    extra_args: tuple[str, ...] = ()
    lookback: timedelta = timedelta(days=30)
    min_images: int = 20
    per_user_cap: int = 0  # corrections per user in one training set; 0 = no cap
    guard_data: str = ""  # RETRAIN_GUARD_DATA: the trusted guard set; empty = never promotable
    promotion: str = "approval"  # RETRAIN_PROMOTION
    # False in the API app: a submission is recorded as `requested` and the monitor's sweep launches it
    launch_inline: bool = True


@dataclass(frozen=True)
class Submission:
    """The record of a window's retraining, and whether this call created or re-launched it."""

    record: dict[str, Any]
    launched: bool


def split_args(text: str) -> tuple[str, ...]:
    """RETRAIN_TRAIN_ARGS as arguments; only `--option value` pairs of model.train, nothing that could redirect."""
    args = tuple(shlex.split(text))
    reserved = {"--data", "--data-root", "--out", "--name", "--version", "--base", "--task", "--models-container",
                "--publish-connection-string", "--publish-account-url", "--metrics-dir",
                # the promotion gates are settings (RETRAIN_GUARD_DATA, RETRAIN_PROMOTION), never extra arguments
                "--guard-data", "--data-trust", "--promotion"}
    bad = [arg for arg in args if arg.split("=", 1)[0] in reserved]
    if bad:
        raise BadRequest(f"RETRAIN_TRAIN_ARGS may not set {', '.join(bad)}: the launcher sets them")
    return args


def submit_retraining(window: DriftWindow, deps: RetrainingDependencies, *, reason: str,
                      force: bool = False) -> Submission:
    """Submit the window's retraining once; a second call returns the first call's record.

    Record times are the store's own clock, never a caller's `now` (which may be set to a window's end).
    """
    name, served_version, _ = deps.served()
    document = {
        "id": record_id(window.key), "windowId": window.key, "kind": RECORD_KIND, "window": window.id,
        "windowStart": window.start_iso, "windowEnd": window.end_iso,
        "status": "submitting" if deps.launch_inline else "requested", "launcher": deps.launcher.name,
        "attempt": 1, "launches": 1, "jobName": job_name(window.key, 1),
        "reason": reason, "modelName": name, "baseVersion": served_version,
        "createdAt": utc_iso(datetime.now(UTC)), "updatedAt": utc_iso(datetime.now(UTC)),
    }
    record, created = deps.store.create(document)
    if not created:
        taken = _take_over(record, deps, force=force, reason=reason)
        if taken is None:
            logger.info("retraining for window %s already %s (%s)", window.id, record["status"], record["jobName"])
            return Submission(record, launched=False)
        record = taken
    if not deps.launch_inline:  # recorded as `requested`: the monitor app's sweep launches it
        return Submission(record, launched=True)
    return Submission(_launch(record, deps), launched=True)


def _take_over(record: dict[str, Any], deps: RetrainingDependencies, *, force: bool,
               reason: str) -> dict[str, Any] | None:
    """The record, now ours to launch: a stale `submitting` one (same job name) or, with force, a new attempt."""
    status = record["status"]
    age = datetime.now(UTC) - parse_iso(record.get("updatedAt"))
    # only an app that launches takes a stale submission over (the API leaves it to the monitor's sweep)
    stale = deps.launch_inline and status == "submitting" and age >= deps.store.stale_after
    if stale:
        launches = int(record.get("launches", 1)) + 1
        if launches > MAX_LAUNCH_ATTEMPTS:
            body = advance(dict(record), "failed", error=f"not launched after {MAX_LAUNCH_ATTEMPTS} attempts: "
                                                         f"{record.get('error', 'unknown')}")
            if body is not None:
                deps.store.replace(record, body)
            return None
        logger.warning("retraining %s stuck in submitting since %s; launching again as %s", record["id"],
                       record.get("updatedAt"), record["jobName"])
        return deps.store.replace(record, {**record, "launches": launches})
    if force and status in FINAL_STATUSES:
        attempt = int(record.get("attempt", 1)) + 1
        name, served_version, _ = deps.served()
        body = {key: value for key, value in record.items() if key not in {"result", "error", "details", "manifest",
                                                                          "version", "finishedAt"}}
        body.update(status="submitting" if deps.launch_inline else "requested", attempt=attempt, launches=1,
                    jobName=job_name(record["windowId"], attempt),
                    reason=reason, modelName=name, baseVersion=served_version, launcher=deps.launcher.name,
                    createdAt=utc_iso(datetime.now(UTC)))
        return deps.store.replace(record, body)
    return None


def _launch(record: dict[str, Any], deps: RetrainingDependencies) -> dict[str, Any]:
    """Build the training set, publish its manifest and start the job; the record says what happened."""
    window_key = record["windowId"]
    try:
        name, served_version, card_path = deps.served()
        end = parse_iso(record["windowEnd"])
        examples = existing_examples(deps.uploads, collect_corrections(deps.results, end - deps.lookback, end,
                                                                         per_user_cap=deps.per_user_cap))
        counts = Counter(example.label for example in examples)
        manifest = {"rows": len(examples), "classes": len(counts), "blob": manifest_blob_name(record["jobName"]),
                    "from": utc_iso(end - deps.lookback), "to": record["windowEnd"]}
        if len(examples) < deps.min_images:
            return deps.store.update(window_key, lambda body: advance(
                body, "skipped", manifest=manifest, finishedAt=utc_iso(datetime.now(UTC)),
                error=f"{len(examples)} corrected uploads; RETRAIN_MIN_IMAGES is {deps.min_images}"))
        version = record.get("version") or deps.models.next_version(name, at_least=served_version)
        spec = TrainingSpec(
            job_name=record["jobName"], window_key=window_key, window_id=record["window"], model_name=name,
            version=version, base_version=served_version, base_card=str(card_path), task=deps.task,
            examples=tuple(examples), manifest_blob=manifest["blob"], extra_args=deps.extra_args,
            guard_data=deps.guard_data, promotion=deps.promotion,
            tags={"window": record["window"], "base_model": f"{name}:{served_version}", "candidate_version": version,
                  "reason": str(record.get("reason", ""))[:200]},
        )
        deps.models.container.upload_blob(spec.manifest_blob, spec.manifest_text().encode("utf-8"), overwrite=True,
                                          content_settings=ContentSettings(content_type="text/csv"))
        # the version is stored before the launch: a re-launch after a crash trains the same version
        deps.store.update(window_key, lambda body: {**body, "version": version, "manifest": manifest})
        details = deps.launcher.launch(spec)
    except Exception as exc:
        # left `submitting`: the sweep retries after RETRAIN_STALE_MINUTES (at most MAX_LAUNCH_ATTEMPTS times)
        logger.exception("retraining %s could not be launched", record["id"])
        message = f"{type(exc).__name__}: {exc}"[:1000]
        return deps.store.update(window_key, lambda body: {**body, "error": message}
                                 if body.get("status") == "submitting" else None)
    logger.info("retraining for window %s launched: %s (%s, %d images, %d classes)", record["window"],
                record["jobName"], deps.launcher.name, manifest["rows"], manifest["classes"])
    telemetry.record_retraining(event="started", window_id=str(record["window"]), model_version=version)
    return deps.store.update(window_key, lambda body: advance(
        body, "submitted", details=details, submittedAt=utc_iso(datetime.now(UTC)), error=None))


def sweep(deps: RetrainingDependencies) -> list[dict[str, Any]]:
    """Re-launch stale `submitting` records and refresh in-flight ones (the timer runs this every tick)."""
    touched = []
    for record in deps.store.in_flight():
        try:
            if record.get("status") == "requested":
                if deps.launch_inline:  # recorded by the API app: take it (ETag-checked, one sweeper wins), launch
                    taken = deps.store.replace(record, {**record, "status": "submitting",
                                                        "launcher": deps.launcher.name})
                    if taken is not None:
                        touched.append(_launch(taken, deps))
            elif record.get("status") == "submitting":
                window = DriftWindow(start=parse_iso(record["windowStart"]),
                                     hours=int((parse_iso(record["windowEnd"]) - parse_iso(record["windowStart"]))
                                               .total_seconds() // 3600))
                submission = submit_retraining(window, deps, reason=str(record.get("reason", "")))
                if submission.launched:
                    touched.append(submission.record)
            elif record.get("launcher") == deps.launcher.name:
                touched.append(refresh(record, deps))
        except Exception:  # one bad record (a job Azure ML no longer knows) must not stop the others
            logger.exception("retraining sweep could not handle %s", record.get("id"))
    return touched


def refresh(record: dict[str, Any], deps: RetrainingDependencies) -> dict[str, Any]:
    """Ask the launcher how an in-flight job is doing and record it (Azure ML: the job's status)."""
    if record.get("status") not in ("submitted", "running"):
        return record
    fields = deps.launcher.refresh(record)
    if not fields:
        return record
    status = str(fields.pop("status", record["status"]))
    if status in FINAL_STATUSES:
        fields.setdefault("result", promotion_outcome(deps.models, record))
        fields.setdefault("finishedAt", utc_iso(datetime.now(UTC)))
    updated = deps.store.update(record["windowId"], lambda body: advance(body, status, **fields))
    if status in FINAL_STATUSES and updated.get("status") == status and updated.get("_etag") != record.get("_etag"):
        note_outcome(updated)
    return updated


def note_outcome(record: Mapping[str, Any]) -> None:
    """Telemetry for a finished run: succeeded or failed, then promoted or rejected."""
    window, version = str(record.get("window", "")), record.get("version")
    status = str(record.get("status"))
    if status in ("succeeded", "failed"):
        telemetry.record_retraining(event=status, window_id=window, model_version=version)
    result = record.get("result") or {}
    promoted = result.get("promoted")
    if status == "succeeded" and isinstance(promoted, bool):
        # a candidate that passed its gates waits for an admin (RETRAIN_PROMOTION=approval): not a rejection
        event = "promoted" if promoted else "candidate" if result.get("state") == "candidate" else "rejected"
        telemetry.record_retraining(event=event, window_id=window, model_version=version)


def promotion_outcome(models: BlobModelRepository, record: Mapping[str, Any]) -> dict[str, Any]:
    """What the models container says about the record's version (an Azure ML job's result): published,
    promoted, and the gates its evaluation.json recorded (promotable, state, reasons)."""
    name, version = str(record.get("modelName", "")), str(record.get("version", ""))
    if not name or not version:
        return {"published": False, "promoted": False}
    latest = models.promoted_version(name)
    outcome: dict[str, Any] = {"name": name, "version": version, "published": version in models.list_versions(name),
                               "promoted": latest == version}
    if outcome["published"]:
        gates = gates_of(read_json(models, name, version, EVALUATION_FILE))
        state = version_state(version, latest=latest, gates=gates)
        outcome.update(promotable=gates.passed if gates else False, reasons=gates.reasons if gates else [],
                       state="promoted" if state == "current" else state)
    return outcome


# --- for the routes -----------------------------------------------------------------------------------
def public_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record without Cosmos system fields."""
    return {key: value for key, value in record.items() if not key.startswith("_")}


class _Summary(Protocol):
    retraining_reason: str | None

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any: ...


def drift_hook(deps: RetrainingDependencies) -> Callable[[DriftWindow, Any], Any]:
    """For DriftDependencies.retrain: submit the window's retraining and note the job on its drift summary."""

    def submit(window: DriftWindow, summary: _Summary) -> Any:
        submission = submit_retraining(window, deps, reason=summary.retraining_reason or "drift")
        return summary.model_copy(update={"retraining_job": submission.record.get("jobName"),
                                          "retraining_status": submission.record.get("status")})

    return submit
