"""The HTTP API (FastAPI behind `func.AsgiFunctionApp`): request parsing, auth, and response shapes.

FastAPI gives request validation and an OpenAPI document for free, and the same ASGI app runs under the
Functions host, the project's local host, and tests (httpx ASGI transport) without change.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import Field
from starlette.datastructures import UploadFile

from functions import dependencies
from functions.api_deps import AUTH_ERRORS, charge_images, error_responses, require
from functions.body_limits import BodyLimits, RequestBodyLimits
from functions.dependencies import ImageLimiterDep, ServiceDep, SettingsDep
from functions.drift_api import drift_router
from functions.errors import MethodGuard, install_error_handlers
from functions.feedback_api import feedback_router
from functions.gallery_api import gallery_router
from functions.identity_api import router as identity_router
from functions.models_api import models_router, retraining_router
from functions.request_body import read_limited, upload_chunks
from functions.schema_base import ApiModel
from functions.web_ui import web_router
from shared_code.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared_code.identity.auth import Principal
from shared_code.results.blob_store import FILENAME_PATTERN, UploadGrant
from shared_code.results.service import UploadedFile
from shared_code.results.store import ErrorInfo, ModelRef, PredictionOut, ResultDocument, ResultStatus
from shared_code.settings import Settings, get_settings

RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
CONTINUATION_PATTERN = r"^[A-Za-z0-9_-]+$"  # what GET /api/results hands out (URL-safe base64, unpadded)
logger = logging.getLogger(__name__)


# --- schemas ------------------------------------------------------------------------------------------
class HealthPublic(ApiModel):
    status: str
    model: ModelRef


class ClassificationPublic(ApiModel):
    id: str
    status: ResultStatus
    filename: str
    predictions: list[PredictionOut]
    model: ModelRef | None
    timings_ms: dict[str, float]
    error: ErrorInfo | None = None


class ClassifyManyPublic(ApiModel):
    results: list[ClassificationPublic]


class UploadCreate(ApiModel):
    filename: str = Field(min_length=1, max_length=256, examples=["cat.jpg"],
                          json_schema_extra={"pattern": FILENAME_PATTERN},
                          description="The file's name; it must end in an accepted image extension "
                                      "(.jpg, .jpeg, .png, .bmp, .gif, .tif, .tiff, .webp, any case).")


IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"


class UploadGrantPublic(ApiModel):
    id: str
    upload_url: str
    blob_name: str
    expires_at: str
    result_url: str


class UploadBatchItem(ApiModel):
    filename: str = Field(min_length=1, max_length=256, examples=["cat.jpg"])
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=IDEMPOTENCY_KEY_PATTERN,
        description="As the Idempotency-Key header of POST /api/uploads: one unique string per file.")


class UploadBatchCreate(ApiModel):
    files: list[UploadBatchItem] = Field(min_length=1, description="At most MAX_UPLOADS_PER_REQUEST (256).")


class UploadBatchPublic(ApiModel):
    items: list[UploadGrantPublic] = Field(description="One grant per file, in the order sent.")


class ResultQuery(ApiModel):
    ids: list[str] = Field(min_length=1, description="Result ids; at most MAX_RESULT_IDS_PER_REQUEST (500).")


class ResultPublic(ClassificationPublic):
    source: str
    created_at: str
    updated_at: str
    predicted_label: str | None
    corrected_label: str | None
    features: dict[str, Any] | None


class ResultPage(ApiModel):
    items: list[ResultPublic]
    continuation: str | None


class ResultQueryPublic(ApiModel):
    items: list[ResultPublic] = Field(description="The caller's results among the ids, in the order asked.")
    missing: list[str] = Field(description="Ids that are unknown, deleted or another user's (404 one by one).")


def grant_public(grant: UploadGrant) -> UploadGrantPublic:
    return UploadGrantPublic(id=grant.result_id, upload_url=grant.upload_url, blob_name=grant.blob_name,
                             expires_at=grant.expires_at.isoformat(), result_url=f"/api/results/{grant.result_id}")


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
    responses={**AUTH_ERRORS, **error_responses(400, 409, 413, 415)},
    openapi_extra={"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}},
            "required": ["file"]}},
        "image/*": {"schema": {"type": "string", "format": "binary"}}}, "required": True}},
)
async def classify(
    request: Request, service: ServiceDep, settings: SettingsDep, images: ImageLimiterDep,
    principal: Annotated[Principal, require("classify")],
    top_k: Annotated[int, Query(ge=1, le=20, description="How many classes to return")] = 5,
) -> ClassificationPublic | ClassifyManyPublic:
    """Classify one image (or several as repeated `file` fields); every result is stored."""
    files = await read_images(request, settings)
    charge_images(images, principal, len(files))
    documents = await run_in_threadpool(service.classify_files, principal.user_id, files, top_k)
    if len(documents) == 1:
        return classification_public(documents[0])
    return ClassifyManyPublic(results=[classification_public(d) for d in documents])


@router.post("/uploads", tags=["uploads"], responses={**AUTH_ERRORS, **error_responses(400, 409)})
async def create_upload(
    body: UploadCreate, service: ServiceDep, images: ImageLimiterDep,
    principal: Annotated[Principal, require("classify")],
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=128, pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Any unique string per file (e.g. a UUID): retrying with the same key returns the same "
                    "result id and blob, so a lost answer never leaves a stray pending result.")] = None,
) -> UploadGrantPublic:
    """A short-lived URL to PUT one image straight into Blob Storage (`x-ms-blob-type: BlockBlob`)."""
    charge_images(images, principal, 1)
    grant = await run_in_threadpool(service.grant_upload, principal.user_id, body.filename, idempotency_key)
    return grant_public(grant)


GRANT_CONCURRENCY = 16  # grants of one batch in flight at once (each is a Cosmos write and a SAS signature)


@router.post("/uploads/batch", tags=["uploads"], responses={**AUTH_ERRORS, **error_responses(400, 409, 413)})
async def create_uploads(
    body: UploadBatchCreate, service: ServiceDep, settings: SettingsDep, images: ImageLimiterDep,
    principal: Annotated[Principal, require("classify")],
) -> UploadBatchPublic:
    """Many upload URLs in one request (a folder upload), each exactly as `POST /api/uploads` grants it.

    Counted as one request and one image per file. Give every file its `idempotency_key`: a retried batch
    then maps each file to the same result and blob, even when the first attempt stopped half way.
    """
    limit = min(settings.MAX_UPLOADS_PER_REQUEST, settings.RATE_LIMIT_IMAGES_BURST)
    if len(body.files) > limit:
        raise PayloadTooLarge(f"at most {limit} files per batch; send the rest in another request")
    charge_images(images, principal, len(body.files))
    grants: list[UploadGrant] = []
    for start in range(0, len(body.files), GRANT_CONCURRENCY):
        chunk = body.files[start:start + GRANT_CONCURRENCY]
        grants += await asyncio.gather(*(
            run_in_threadpool(service.grant_upload, principal.user_id, item.filename, item.idempotency_key)
            for item in chunk))
    return UploadBatchPublic(items=[grant_public(grant) for grant in grants])


@router.post("/results/query", tags=["results"],
             responses={**AUTH_ERRORS, **error_responses(400, 413)})
async def query_results(body: ResultQuery, service: ServiceDep, settings: SettingsDep,
                        principal: Annotated[Principal, require("results:read")]) -> ResultQueryPublic:
    """Many of the caller's results in one request (one request against the rate limit, whatever the count)."""
    if len(body.ids) > settings.MAX_RESULT_IDS_PER_REQUEST:
        raise PayloadTooLarge(f"at most {settings.MAX_RESULT_IDS_PER_REQUEST} ids per query")
    documents = await run_in_threadpool(service.get_results, principal.user_id, body.ids)
    found = {document.id: document for document in documents}
    ordered = list(dict.fromkeys(body.ids))
    return ResultQueryPublic(items=[result_public(found[i]) for i in ordered if i in found],
                             missing=[i for i in ordered if i not in found])


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
    continuation: Annotated[str | None, Query(
        max_length=4000, json_schema_extra={"pattern": CONTINUATION_PATTERN},  # the server's check answers 400
        description="The `continuation` of the previous page, unchanged; any other value is a 400.")] = None,
) -> ResultPage:
    """The caller's results, newest first, paged with continuation tokens."""
    if continuation == "":  # not "the first page": a client that lost its token must not start over silently
        raise BadRequest("invalid continuation token (empty)")
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


# Links let clients (and stateful testers) follow a created result to the routes that read or change it.
RESULT_ROUTES = (("GetResult", "get", "/api/results/{result_id}"),
                 ("DeleteResult", "delete", "/api/results/{result_id}"),
                 ("GetResultImage", "get", "/api/results/{result_id}/image"),
                 ("GiveFeedback", "post", "/api/results/{result_id}/feedback"))
RESULT_SOURCES = (("post", "/api/uploads", "$response.body#/id"), ("get", "/api/results", "$response.body#/items/0/id"))


def _add_links(document: dict[str, Any]) -> None:
    paths = document["paths"]
    for method, path, expression in RESULT_SOURCES:
        links = {}
        for name, target_method, target_path in RESULT_ROUTES:
            target = paths.get(target_path, {}).get(target_method)
            if target is not None:
                links[name] = {"operationId": target["operationId"], "parameters": {"result_id": expression}}
        paths[path][method]["responses"]["200"]["links"] = links


def _with_served_state(document: dict[str, Any]) -> dict[str, Any]:
    """The document with what depends on the running worker: the feedback labels and images per request."""
    served = copy.deepcopy(document)
    try:
        max_images = get_settings().MAX_IMAGES_PER_REQUEST
        labels = list(dependencies.get_service().models.current().card.labels)
    except Exception:  # the document must not depend on settings or the model being usable right now
        logger.warning("the OpenAPI document lacks the served labels and limits (settings or model unavailable)")
        return served
    multipart = served["paths"]["/api/classify"]["post"]["requestBody"]["content"]["multipart/form-data"]
    multipart["schema"]["properties"]["file"]["maxItems"] = max_images
    schema = served["components"]["schemas"]["FeedbackCreate"]["properties"]["label"]
    schema["enum"] = labels
    schema["examples"] = labels[:1]
    return served


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
                  docs_url=None, redoc_url=None)  # /api/docs is served offline by web_ui
    install_error_handlers(api)
    # gallery first: /results/classes must not be taken for /results/{result_id}
    routers = (gallery_router, router, identity_router, drift_router, feedback_router, models_router,
               retraining_router, web_router)
    own_routes = list(api.router.routes)  # the OpenAPI document's route, before the routers are included
    api.add_middleware(MethodGuard, routes=lambda: [*own_routes, *(r for each in routers for r in each.routes)])
    # Outside the routing: bodies are capped before FastAPI parses them and before any auth dependency.
    api.add_middleware(RequestBodyLimits, limits=body_limits)
    for each in routers:
        api.include_router(each)
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            generate()
            assert api.openapi_schema is not None
            _add_links(api.openapi_schema)
        return _with_served_state(api.openapi_schema)

    api.openapi = openapi  # type: ignore[method-assign]
    return api
