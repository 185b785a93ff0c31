"""The HTTP API (FastAPI behind `func.AsgiFunctionApp`): request parsing, auth, and response shapes.

FastAPI gives request validation and an OpenAPI document for free, and the same ASGI app runs under the
Functions host, the project's local host, and tests (httpx ASGI transport) without change.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from functions.api_deps import AUTH_ERRORS, error_responses, require
from functions.body_limits import BodyLimits, RequestBodyLimits
from functions.dependencies import ServiceDep, SettingsDep
from functions.drift_api import drift_router
from functions.errors import install_error_handlers
from functions.feedback_api import feedback_router
from functions.gallery_api import gallery_router
from functions.identity_api import router as identity_router
from functions.models_api import models_router, retraining_router
from functions.request_body import read_limited, upload_chunks
from functions.web_ui import web_router
from shared_code.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared_code.identity.auth import Principal
from shared_code.results.service import UploadedFile
from shared_code.results.store import ErrorInfo, ModelRef, PredictionOut, ResultDocument, ResultStatus
from shared_code.settings import Settings, get_settings

RAW_IMAGE_TYPES = ("image/", "application/octet-stream")


# --- schemas ------------------------------------------------------------------------------------------
class HealthPublic(BaseModel):
    status: str
    model: ModelRef


class ClassificationPublic(BaseModel):
    id: str
    status: ResultStatus
    filename: str
    predictions: list[PredictionOut]
    model: ModelRef | None
    timings_ms: dict[str, float]
    error: ErrorInfo | None = None


class ClassifyManyPublic(BaseModel):
    results: list[ClassificationPublic]


class UploadCreate(BaseModel):
    filename: str = Field(min_length=1, max_length=256, examples=["cat.jpg"])


class UploadGrantPublic(BaseModel):
    id: str
    upload_url: str
    blob_name: str
    expires_at: str
    result_url: str


class ResultPublic(ClassificationPublic):
    source: str
    created_at: str
    updated_at: str
    predicted_label: str | None
    corrected_label: str | None
    features: dict[str, Any] | None


class ResultPage(BaseModel):
    items: list[ResultPublic]
    continuation: str | None


def classification_public(document: ResultDocument) -> ClassificationPublic:
    return ClassificationPublic(id=document.id, status=document.status, filename=document.filename,
                                predictions=document.predictions, model=document.model,
                                timings_ms=document.timings_ms, error=document.error)


def result_public(document: ResultDocument) -> ResultPublic:
    return ResultPublic(
        **classification_public(document).model_dump(), source=document.source, created_at=document.created_at,
        updated_at=document.updated_at, predicted_label=document.predicted_label,
        corrected_label=document.corrected_label, features=document.features,
    )


async def read_images(request: Request, settings: Settings) -> list[UploadedFile]:
    """Images from a multipart body (one or more `file` fields) or a raw `image/*` body."""
    content_type = request.headers.get("content-type", "").lower()
    per_image = settings.MAX_UPLOAD_BYTES
    request_limit = per_image * settings.MAX_IMAGES_PER_REQUEST
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > request_limit:
        raise PayloadTooLarge(f"the request has {declared} bytes; the limit is {request_limit}")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=settings.MAX_IMAGES_PER_REQUEST + 1, max_fields=32)
        uploads = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
        if not uploads:
            raise BadRequest("the multipart body has no 'file' field with an image")
        if len(uploads) > settings.MAX_IMAGES_PER_REQUEST:
            raise PayloadTooLarge(f"at most {settings.MAX_IMAGES_PER_REQUEST} images per request")
        return [UploadedFile(upload.filename or f"file-{i}", await read_limited(upload_chunks(upload), per_image))
                for i, upload in enumerate(uploads)]
    if content_type.startswith(RAW_IMAGE_TYPES):
        return [UploadedFile("body", await read_limited(request.stream(), per_image))]
    raise UnsupportedMediaType(
        f"content type {content_type or '(none)'!r} is not accepted; send multipart/form-data with a 'file' "
        "field, or the image itself as image/*"
    )


# --- routes -------------------------------------------------------------------------------------------
router = APIRouter(prefix="/api")


@router.get("/health", tags=["service"], responses=error_responses(503))
async def health(service: ServiceDep) -> HealthPublic:
    """Liveness, and the model being served."""
    return HealthPublic(status="ok", model=await run_in_threadpool(service.health))


@router.post(
    "/classify", tags=["classify"], response_model=ClassificationPublic | ClassifyManyPublic,
    responses={**AUTH_ERRORS, **error_responses(400, 413, 415)},
    openapi_extra={"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}, "required": ["file"]}},
        "image/*": {"schema": {"type": "string", "format": "binary"}}}, "required": True}},
)
async def classify(
    request: Request, service: ServiceDep, settings: SettingsDep,
    principal: Annotated[Principal, require("classify")],
    top_k: Annotated[int, Query(ge=1, le=20, description="How many classes to return")] = 5,
) -> ClassificationPublic | ClassifyManyPublic:
    """Classify one image (or several as repeated `file` fields); every result is stored."""
    files = await read_images(request, settings)
    documents = await run_in_threadpool(service.classify_files, principal.user_id, files, top_k)
    if len(documents) == 1:
        return classification_public(documents[0])
    return ClassifyManyPublic(results=[classification_public(d) for d in documents])


@router.post("/uploads", tags=["uploads"], responses={**AUTH_ERRORS, **error_responses(400)})
async def create_upload(
    body: UploadCreate, service: ServiceDep, principal: Annotated[Principal, require("classify")],
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
        description="Any unique string per file (e.g. a UUID): retrying with the same key returns the same "
                    "result id and blob, so a lost answer never leaves a stray pending result.")] = None,
) -> UploadGrantPublic:
    """A short-lived URL to PUT one image straight into Blob Storage (`x-ms-blob-type: BlockBlob`)."""
    grant = await run_in_threadpool(service.grant_upload, principal.user_id, body.filename, idempotency_key)
    return UploadGrantPublic(id=grant.result_id, upload_url=grant.upload_url, blob_name=grant.blob_name,
                             expires_at=grant.expires_at.isoformat(), result_url=f"/api/results/{grant.result_id}")


@router.get("/results/{result_id}", tags=["results"], responses={**AUTH_ERRORS, **error_responses(404)})
async def get_result(result_id: str, service: ServiceDep,
                     principal: Annotated[Principal, require("results:read")]) -> ResultPublic:
    """One of the caller's results (`pending`, `done`, `rejected` or `failed`)."""
    return result_public(await run_in_threadpool(service.get_result, principal.user_id, result_id))


@router.get("/results", tags=["results"], responses={**AUTH_ERRORS, **error_responses(400)})
async def list_results(
    service: ServiceDep, principal: Annotated[Principal, require("results:read")],
    label: Annotated[str | None, Query(max_length=200, description="Predicted or corrected label")] = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    continuation: Annotated[str | None, Query(max_length=4000)] = None,
) -> ResultPage:
    """The caller's results, newest first, paged with continuation tokens."""
    documents, token = await run_in_threadpool(
        lambda: service.list_results(principal.user_id, label=label, page_size=page_size, continuation=continuation)
    )
    return ResultPage(items=[result_public(d) for d in documents], continuation=token)


@router.delete("/results/{result_id}", tags=["results"], status_code=204,
               responses={**AUTH_ERRORS, **error_responses(404)})
async def delete_result(result_id: str, service: ServiceDep,
                        principal: Annotated[Principal, require("results:write")]) -> None:
    """Delete a result and its uploaded blob."""
    await run_in_threadpool(service.delete_result, principal.user_id, result_id)


def body_limits() -> BodyLimits:
    """The caps of the current settings; the defaults while settings are invalid (the route reports that)."""
    try:
        settings = get_settings()
    except Exception:  # a settings error is reported by the request itself, not here
        settings = Settings.model_construct()
    return BodyLimits(json_bytes=settings.MAX_JSON_BODY_BYTES, image_bytes=settings.MAX_UPLOAD_BYTES,
                      images_per_request=settings.MAX_IMAGES_PER_REQUEST)


def create_api() -> FastAPI:
    """The ASGI application."""
    api = FastAPI(title="Image classification API", version="1.0.0", openapi_url="/api/openapi.json",
                  docs_url="/api/docs", redoc_url=None)
    install_error_handlers(api)
    # Outside the routing: bodies are capped before FastAPI parses them and before any auth dependency.
    api.add_middleware(RequestBodyLimits, limits=body_limits)
    api.include_router(gallery_router)  # first: /results/classes must not be taken for /results/{result_id}
    api.include_router(router)
    api.include_router(identity_router)
    api.include_router(drift_router)
    api.include_router(feedback_router)
    api.include_router(models_router)
    api.include_router(retraining_router)
    api.include_router(web_router)
    return api
