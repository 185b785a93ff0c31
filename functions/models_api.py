"""Admin routes for model versions and retraining: what is served and published, approving a candidate, submit and
inspect retraining."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import ConfigDict, Field

from functions.api_deps import AUTH_ERRORS, ErrorBody, error_responses, require
from functions.dependencies import ComponentsDep, ServiceDep, SettingsDep
from functions.drift_api import WINDOW_KEY_PATTERN, WINDOW_PATTERN, WINDOW_RULES
from functions.schema_base import ApiModel
from shared_code.composition import Components
from shared_code.errors import NotFound
from shared_code.identity.auth import Principal
from shared_code.inference.model_card import CARD_SUFFIX, ModelCard
from shared_code.inference.model_repository import read_pointer
from shared_code.monitoring.window import last_complete_window, parse_window
from shared_code.results.service import ClassificationService
from shared_code.retraining.approval import (
    APPROVAL_FILE,
    VersionState,
    approval_of,
    approve,
    gates_of,
    read_json,
    version_state,
)
from shared_code.retraining.submission import (
    public_record,
    submit_retraining,
    sweep,
)

MAX_VERSIONS = 100
EVALUATION_FILE = "evaluation.json"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # model names never start with "_" (_retraining/, _guard/)


# --- schemas ------------------------------------------------------------------------------------------
class ServedModel(ApiModel):
    name: str
    version: str


class GatesPublic(ApiModel):
    """The promotion gates model.train measured (the version's evaluation.json)."""

    passed: bool = Field(description="Every gate passed: the version may be approved (while it is newer than current).")
    reasons: list[str] = Field(description="Why it is not promotable (empty when it passed).")
    mode: str | None = Field(description="RETRAIN_PROMOTION of the run: approval or automatic.")
    split: dict[str, Any] | None = Field(description="Held-out split: candidate and current accuracy, passed.")
    guard: dict[str, Any] | None = Field(description="Trusted guard set: evaluated, required, candidate and current "
                                         "accuracy, max_regression, passed.")


class ApprovalPublic(ApiModel):
    approved_by: str | None = Field(description="The admin who approved it (`automatic`: RETRAIN_PROMOTION=automatic).")
    approved_at: str | None
    previous: str | None = Field(description="The version that was promoted before.")


class ModelVersionPublic(ApiModel):
    name: str
    version: str
    promoted: bool
    num_classes: int
    created_at: str | None
    accuracy: float | None
    state: VersionState = Field(
        default="unevaluated", description="current: promoted now; candidate: passed its gates, awaiting an admin's "
        "approval; not_promotable: failed a gate; superseded: a newer version is current; unevaluated: no gate "
        "results (published by hand or by an older trainer): cannot be approved.")
    gates: GatesPublic | None = None
    approval: ApprovalPublic | None = None


class PromotionPublic(ApiModel):
    """The approval: the pointer (`latest.json`) now names this version."""

    name: str
    version: str
    sha256: str
    approved_by: str
    approved_at: str
    previous: str | None = Field(description="The version promoted before this approval.")


class ModelsPublic(ApiModel):
    served: ServedModel
    latest: str | None = Field(description="The promoted version in the models container (MODEL_SOURCE=blob).")
    versions: list[ModelVersionPublic]


class RetrainingRecordPublic(ApiModel):
    """One window's retraining submission (extra fields of the record are passed through)."""

    model_config = ConfigDict(extra="allow")

    window: str
    windowId: str  # noqa: N815 - the record's own field names
    status: str
    launcher: str
    jobName: str  # noqa: N815
    attempt: int
    reason: str | None = None
    modelName: str | None = None  # noqa: N815
    baseVersion: str | None = None  # noqa: N815
    version: str | None = None
    createdAt: str | None = None  # noqa: N815
    updatedAt: str | None = None  # noqa: N815
    result: dict[str, Any] | None = None
    error: str | None = None


class RetrainingList(ApiModel):
    items: list[RetrainingRecordPublic]


class RetrainingRunCreate(ApiModel):
    window: str | None = Field(default=None, examples=["2026-11-23T00:00Z/PT24H"],
                               json_schema_extra={"pattern": WINDOW_PATTERN},  # parse_window answers 400
                               description=WINDOW_RULES)
    force: bool = Field(default=False, strict=True,
                        description="Submit again (a new attempt) when the last one has finished.")


class RetrainingRunPublic(ApiModel):
    launched: bool = Field(description="False: this window already had a submission, returned as it is. True: this "
                           "call submitted it (status `requested`: the monitor app launches it on its next sweep).")
    record: RetrainingRecordPublic


# --- model versions -----------------------------------------------------------------------------------
def _accuracy(card: ModelCard, evaluation: dict[str, Any] | None) -> float | None:
    """Top-1 accuracy from the card's metrics or the version's evaluation.json, whichever has one."""
    candidates: list[Any] = [card.metrics.get(key) for key in ("validation_accuracy", "accuracy", "top1")]
    if evaluation:
        candidate = evaluation.get("candidate")
        candidates += [evaluation.get("accuracy"), evaluation.get("top1"),
                       candidate.get("accuracy") if isinstance(candidate, dict) else None]
    return next((float(value) for value in candidates if isinstance(value, int | float)), None)


def _version_public(card: ModelCard, name: str, version: str, *, latest: str | None,
                    evaluation: dict[str, Any] | None = None,
                    approval: dict[str, Any] | None = None) -> ModelVersionPublic:
    gates = gates_of(evaluation)
    return ModelVersionPublic(
        name=name, version=version, promoted=version == latest, num_classes=card.num_classes,
        created_at=card.created_at or None, accuracy=_accuracy(card, evaluation),
        state=version_state(version, latest=latest, gates=gates),
        gates=GatesPublic(passed=gates.passed, reasons=gates.reasons, mode=gates.mode, split=gates.split,
                          guard=gates.guard) if gates else None,
        approval=ApprovalPublic.model_validate(approval) if approval else None)


def list_models(service: ClassificationService) -> ModelsPublic:
    provider = service.models
    card = provider.current().card
    name = provider.name or card.name
    served = ServedModel(name=name, version=card.version)
    repository = provider.repository
    if repository is None:  # MODEL_SOURCE=local: the served card is all there is
        return ModelsPublic(served=served, latest=None,
                            versions=[_version_public(card, name, card.version, latest=card.version)])
    pointer = read_pointer(repository.container, name)
    latest = pointer.version
    approved = {blob.name.split("/")[1] for blob in repository.container.list_blobs(name_starts_with=f"{name}/")
                if blob.name.endswith(f"/{APPROVAL_FILE}") and blob.name.count("/") == 2}
    versions = []
    for version in repository.list_versions(name)[-MAX_VERSIONS:]:
        card_bytes = repository.read_file(name, version, f"model{CARD_SUFFIX}")
        if card_bytes is None:
            continue
        evaluation = read_json(repository, name, version, EVALUATION_FILE)
        approval = approval_of(repository, name, version, pointer=pointer.body) if (
            version in approved or version == latest) else None
        versions.append(_version_public(ModelCard.model_validate_json(card_bytes), name, version, latest=latest,
                                        evaluation=evaluation, approval=approval))
    return ModelsPublic(served=served, latest=latest, versions=versions)


models_router = APIRouter(prefix="/api", tags=["models"])


@models_router.get("/models", responses={**AUTH_ERRORS})
async def get_models(service: ServiceDep, _: Annotated[Principal, require("admin")]) -> ModelsPublic:
    """The served model, the promoted version, and every published version with its card summary, its promotion
    gates and its approval state."""
    return await run_in_threadpool(list_models, service)


ModelName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=100, description="e.g. efficientnet_lite0")]
VersionName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64, description="e.g. 2")]
PROMOTE_ERRORS: dict[int | str, dict[str, Any]] = {
    **error_responses(404),
    409: {"model": ErrorBody, "description": "The version did not pass its promotion gates (or has no gate "
          "results), or it or a newer version is already promoted"},
}


@models_router.post("/models/{name}/versions/{version}/promote", responses={**AUTH_ERRORS, **PROMOTE_ERRORS})
async def promote_version(name: ModelName, version: VersionName, components: ComponentsDep,
                          principal: Annotated[Principal, require("admin", user_token=True)]) -> PromotionPublic:
    """Approve a retrained candidate that passed its gates: `latest.json` names it (a conditional write: two
    approvals racing leave the newer version promoted), with who approved it and when."""
    record = await run_in_threadpool(approve, components.model_repository, name, version,
                                     approved_by=principal.user_id)
    return PromotionPublic.model_validate(record)


# --- retraining ---------------------------------------------------------------------------------------
WindowKey = Annotated[str, Path(pattern=WINDOW_KEY_PATTERN, description="e.g. 20261123T0000Z-PT24H")]


def _record_public(record: dict[str, Any]) -> RetrainingRecordPublic:
    return RetrainingRecordPublic.model_validate(public_record(record))


def _list(components: Components, limit: int, update: bool) -> RetrainingList:
    # the API app (RETRAIN_LAUNCH=monitor) answers with what is stored: the monitor's sweep refreshes records
    if update and components.settings.RETRAIN_MODE != "off" and components.settings.RETRAIN_LAUNCH == "inline":
        # re-launches stale submissions and refreshes the in-flight ones of this launcher
        sweep(components.retraining_dependencies())
    records = components.retraining_store.list_records(limit)
    return RetrainingList(items=[_record_public(record) for record in records])


retraining_router = APIRouter(prefix="/api/retraining", tags=["retraining"])


@retraining_router.get("", responses={**AUTH_ERRORS})
async def list_retraining(components: ComponentsDep, _: Annotated[Principal, require("admin")],
                          limit: Annotated[int, Query(ge=1, le=500)] = 50,
                          refresh: Annotated[bool, Query(description="Ask the launcher about jobs in flight, "
                                                                     "and re-launch stale submissions")] = False,
                          ) -> RetrainingList:
    """Retraining submissions, newest window first."""
    return await run_in_threadpool(_list, components, limit, refresh)


@retraining_router.get("/{window_key}", responses={**AUTH_ERRORS, **error_responses(404)})
async def get_retraining(window_key: WindowKey, components: ComponentsDep,
                         _: Annotated[Principal, require("admin")]) -> RetrainingRecordPublic:
    """One window's retraining submission."""
    record = await run_in_threadpool(components.retraining_store.get, window_key)
    if record is None:
        raise NotFound(f"no retraining for window {window_key}")
    return _record_public(record)


@retraining_router.post("/run", responses={**AUTH_ERRORS, **error_responses(400)})
async def run_retraining(body: RetrainingRunCreate, settings: SettingsDep, components: ComponentsDep,
                         principal: Annotated[Principal, require("admin")]) -> RetrainingRunPublic:
    """Submit a window's retraining now (once per window; `force` starts a new attempt after a finished one)."""
    window = parse_window(body.window) if body.window is not None else last_complete_window(  # "" is a 400
        datetime.now(UTC), settings.DRIFT_WINDOW_HOURS)

    def submit() -> RetrainingRunPublic:
        submission = submit_retraining(window, components.retraining_dependencies(),
                                       reason=f"requested by {principal.user_id}", force=body.force)
        return RetrainingRunPublic(launched=submission.launched, record=_record_public(submission.record))

    return await run_in_threadpool(submit)
