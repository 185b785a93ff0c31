"""Feedback route: a user corrects the label of one of their results (ground truth for drift and retraining)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from functions.api_deps import AUTH_ERRORS, error_responses, require
from functions.dependencies import ServiceDep
from functions.schema_base import ApiModel
from shared_code.identity.auth import Principal
from shared_code.results.feedback import record_feedback
from shared_code.results.service import ClassificationService


class FeedbackCreate(ApiModel):
    label: str = Field(min_length=1, max_length=200, examples=["tabby cat"])


class FeedbackPublic(ApiModel):
    id: str
    predicted_label: str | None
    corrected_label: str | None
    updated_at: str


def _record(service: ClassificationService, user_id: str, result_id: str, label: str) -> FeedbackPublic:
    labels = service.models.current().card.labels
    document = record_feedback(service.results, frozenset(labels), user_id=user_id, result_id=result_id,
                               label=label)
    return FeedbackPublic(id=document.id, predicted_label=document.predicted_label,
                          corrected_label=document.corrected_label, updated_at=document.updated_at)


feedback_router = APIRouter(prefix="/api", tags=["results"])


@feedback_router.post("/results/{result_id}/feedback", responses={**AUTH_ERRORS, **error_responses(400, 404)})
async def give_feedback(result_id: str, body: FeedbackCreate, service: ServiceDep,
                        principal: Annotated[Principal, require("results:write")]) -> FeedbackPublic:
    """Set the correct label of one of the caller's results; it must be one of the served model's labels."""
    return await run_in_threadpool(_record, service, principal.user_id, result_id, body.label)
