"""People-facing routes: explain a prediction (CAM), gallery images and class counts, and a zip export.

- `POST /api/explain`: class activation map for an uploaded image (multipart `file` or a raw `image/*` body) or
  for one of the caller's uploaded results (JSON `{"result_id": ...}`); JSON, or the overlay PNG (`format=png`);
- `GET /api/results/classes`: the caller's `done` results counted per effective (corrected) class;
- `GET /api/results/{id}/image`: the caller's uploaded image, streamed (HTTP-classified images are not kept);
- `GET /api/export.zip[?label=]`: the caller's uploaded images in class folders with manifests, streamed.

Everything is scoped to the caller's partition; another user's result is indistinguishable from a missing one.
This router must be included before the one with `GET /api/results/{result_id}` so that `classes` is not
taken for a result id.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import chain
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import Field, ValidationError
from starlette.datastructures import UploadFile

from functions.api_deps import AUTH_ERRORS, ErrorBody, error_responses, require
from functions.dependencies import ServiceDep, SettingsDep
from functions.request_body import read_limited, upload_chunks
from functions.schema_base import ApiModel
from shared_code.errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from shared_code.identity.auth import Principal
from shared_code.inference.explain import Explanation, explain_image
from shared_code.inference.imaging import sniff_format
from shared_code.results.blob_store import BlobStream, safe_user_id
from shared_code.results.export_zip import attachment_name, export_zip
from shared_code.results.gallery import class_counts, done_results
from shared_code.results.service import ClassificationService
from shared_code.results.store import ModelRef, ResultDocument
from shared_code.settings import Settings

_RESULT_ID = re.compile(r"^[0-9a-f]{32}$")
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "BMP": "image/bmp",
               "TIFF": "image/tiff", "WEBP": "image/webp"}
# Served user content never runs as a page: no sniffing, no scripts, sandboxed if opened directly.
IMAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox",
                 "Cache-Control": "private, max-age=300"}
EXPORT_CHUNK_BYTES = 256 * 1024
CONFLICT: dict[int | str, dict[str, Any]] = {409: {
    "model": ErrorBody,
    "description": "The served model cannot explain (no feature map output or no classifier weights)"}}


# --- schemas ------------------------------------------------------------------------------------------
class ExplainRequest(ApiModel):
    result_id: str = Field(min_length=1, max_length=64, description="One of the caller's uploaded results")
    class_index: int | None = Field(default=None, ge=0, le=100_000)
    label: str | None = Field(default=None, min_length=1, max_length=200)


class HeatmapPublic(ApiModel):
    width: int
    height: int
    data: str = Field(description="base64 of width*height uint8 values (0-255), row-major, top row first")


class PointPublic(ApiModel):
    x: int
    y: int


class SizePublic(ApiModel):
    width: int
    height: int


class ExplanationPublic(ApiModel):
    class_index: int
    label: str
    score: float = Field(description="Probability of this class")
    model: ModelRef
    image: SizePublic = Field(description="The image as viewers show it (EXIF orientation applied)")
    heatmap: HeatmapPublic = Field(description="Covers the whole image; equals its size up to 1024 px per side, "
                                               "else scaled down with the aspect kept. 0 outside the model's crop")
    peak: PointPublic = Field(description="Strongest evidence, in original image pixels")
    overlay_png: str = Field(description="base64 PNG: the image with the heatmap blended in (heatmap size)")


class ClassCount(ApiModel):
    label: str
    count: int


class ClassCounts(ApiModel):
    classes: list[ClassCount]
    total: int


# --- helpers ------------------------------------------------------------------------------------------
def explanation_public(explanation: Explanation) -> ExplanationPublic:
    height, width = explanation.heatmap.shape
    return ExplanationPublic(
        class_index=explanation.class_index, label=explanation.label, score=round(explanation.score, 6),
        model=ModelRef(name=explanation.model_name, version=explanation.model_version,
                       backend=explanation.backend or None),
        image=SizePublic(width=explanation.image_width, height=explanation.image_height),
        heatmap=HeatmapPublic(width=width, height=height,
                              data=base64.b64encode(explanation.heatmap.tobytes()).decode("ascii")),
        peak=PointPublic(x=explanation.peak[0], y=explanation.peak[1]),
        overlay_png=base64.b64encode(explanation.overlay_png).decode("ascii"),
    )


def uploaded_result(service: ClassificationService, user_id: str, result_id: str) -> ResultDocument:
    """One of the caller's results that has an image the service keeps (a direct upload)."""
    if not _RESULT_ID.fullmatch(result_id):
        raise NotFound(f"no result {result_id[:64]!r}")
    document = service.results.get(safe_user_id(user_id), result_id)
    if document.source != "blob" or not document.blob_name:
        raise NotFound(f"result {result_id!r} was classified over HTTP; the service does not keep those images "
                       "(only direct uploads have one)")
    return document


def read_result_image(service: ClassificationService, settings: Settings, user_id: str, result_id: str) -> bytes:
    document = uploaded_result(service, user_id, result_id)
    data, _ = service.blobs.read(service.blobs.uploads_container, document.blob_name or "", settings.MAX_UPLOAD_BYTES)
    return data


async def read_explain_input(request: Request, settings: Settings) -> tuple[bytes | None, ExplainRequest | None]:
    """(image bytes, None) for multipart or raw image bodies; (None, request) for JSON."""
    content_type = request.headers.get("content-type", "").lower()
    limit = settings.MAX_UPLOAD_BYTES
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:  # multipart framing allowance
        raise PayloadTooLarge(f"the request has {declared} bytes; an image may have at most {limit}")
    if content_type.startswith("application/json"):
        body = await read_limited(request.stream(), 16 * 1024, "a JSON body")
        try:
            return None, ExplainRequest.model_validate_json(body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
            raise BadRequest(f"invalid JSON body: {problems}"[:1000]) from exc
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=2, max_fields=8)
        uploads = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
        if len(uploads) != 1:
            raise BadRequest("send exactly one image in the multipart field 'file'")
        return await read_limited(upload_chunks(uploads[0]), limit), None
    if content_type.startswith(("image/", "application/octet-stream")):
        return await read_limited(request.stream(), limit), None
    raise UnsupportedMediaType(f"content type {content_type or '(none)'!r} is not accepted; send multipart/form-data "
                               "with a 'file' field, an image/* body, or JSON {\"result_id\": ...}")


def _stream_with_first(stream: BlobStream) -> tuple[str, Iterator[bytes]]:
    """Read the first chunk now (errors become a JSON error, not a broken response) and sniff the type."""
    first = next(stream.chunks, b"")
    fmt = sniff_format(first)
    if fmt is None:
        raise NotFound("the uploaded blob is not an image the service accepts")
    return IMAGE_TYPES[fmt], chain([first], stream.chunks)


def export_archive(service: ClassificationService, user_id: str, label: str | None) -> Iterator[bytes]:
    """The export's zip stream; the first page of results is read now, so an unavailable store is a JSON 503
    rather than a cut-off zip. Blobs are read in EXPORT_CHUNK_BYTES ranges (memory is a few chunks, flat)."""
    documents = done_results(service.results, user_id, label=label, blobs_only=True)
    first = next(documents, None)
    blobs = service.blobs

    def open_blob(blob_name: str) -> BlobStream:
        return blobs.stream(blobs.uploads_container, blob_name, chunk_size=EXPORT_CHUNK_BYTES)

    return export_zip(chain([first] if first else [], documents), open_blob, user_id=user_id, label=label)


# --- routes -------------------------------------------------------------------------------------------
gallery_router = APIRouter(prefix="/api")


@gallery_router.post(
    "/explain", tags=["explain"], response_model=ExplanationPublic,
    responses={**AUTH_ERRORS, **error_responses(400, 404, 413, 415), **CONFLICT,
               200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                     "description": "The explanation (JSON), or with format=png the overlay image"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}}, "required": ["file"]}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": ExplainRequest.model_json_schema()}}}},
)
async def explain(
    request: Request, service: ServiceDep, settings: SettingsDep,
    principal: Annotated[Principal, require(None)],
    class_index: Annotated[int | None, Query(ge=0, le=100_000, description="Class to explain; default top-1")] = None,
    label: Annotated[str | None, Query(min_length=1, max_length=200, description="Class by label")] = None,
    format: Annotated[Literal["json", "png"], Query(description="json, or the overlay as image/png")] = "json",
) -> Any:
    """Where in the image the model saw the evidence for a class (class activation map of the served model)."""
    data, body = await read_explain_input(request, settings)
    if body is not None:
        principal.require("results:read")
        class_index = class_index if class_index is not None else body.class_index
        label = label if label is not None else body.label
        data = await run_in_threadpool(read_result_image, service, settings, principal.user_id, body.result_id)
    else:
        principal.require("classify")
    pipeline = await run_in_threadpool(service.models.current)
    result = await run_in_threadpool(
        lambda: explain_image(pipeline, data or b"", class_index=class_index, label=label))
    if format == "png":
        return Response(content=result.overlay_png, media_type="image/png")
    return explanation_public(result)


@gallery_router.get("/results/classes", tags=["results"], responses=AUTH_ERRORS)
async def result_classes(service: ServiceDep, principal: Annotated[Principal, require("results:read")]) -> ClassCounts:
    """How many of the caller's finished results fall in each effective class (the correction if any)."""
    user_id = safe_user_id(principal.user_id)
    counts = await run_in_threadpool(lambda: class_counts(done_results(service.results, user_id)))
    return ClassCounts(classes=[ClassCount(label=label, count=count) for label, count in counts],
                       total=sum(count for _, count in counts))


@gallery_router.get(
    "/results/{result_id}/image", tags=["results"], response_class=StreamingResponse,
    responses={**AUTH_ERRORS, **error_responses(404),
               200: {"content": {media: {"schema": {"type": "string", "format": "binary"}}
                                 for media in IMAGE_TYPES.values()}, "description": "The uploaded image"}},
)
async def result_image(result_id: str, service: ServiceDep, settings: SettingsDep,
                       principal: Annotated[Principal, require("results:read")]) -> StreamingResponse:
    """The caller's uploaded image of one result, streamed with its content type (sniffed from its bytes)."""

    def open_image() -> tuple[BlobStream, str, Iterator[bytes]]:
        document = uploaded_result(service, principal.user_id, result_id)
        stream = service.blobs.stream(service.blobs.uploads_container, document.blob_name or "",
                                      chunk_size=256 * 1024, max_bytes=settings.MAX_UPLOAD_BYTES)
        media_type, chunks = _stream_with_first(stream)
        return stream, media_type, chunks

    stream, media_type, chunks = await run_in_threadpool(open_image)
    headers = {**IMAGE_HEADERS, "Content-Length": str(stream.size), "ETag": stream.etag}
    return StreamingResponse(chunks, media_type=media_type, headers=headers)


@gallery_router.get(
    "/export.zip", tags=["results"], response_class=StreamingResponse,
    responses={**AUTH_ERRORS, **error_responses(400),
               200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
                     "description": "Images in folders by class, manifest.csv and manifest.json",
                     "headers": {"Content-Disposition": {"schema": {"type": "string"}}}}},
)
async def export_images(
    service: ServiceDep, principal: Annotated[Principal, require("results:read")],
    label: Annotated[str | None, Query(min_length=1, max_length=200, description="Only this effective class")] = None,
) -> StreamingResponse:
    """The caller's uploaded images (finished results) as a zip, streamed blob by blob."""
    user_id = safe_user_id(principal.user_id)
    archive = await run_in_threadpool(export_archive, service, user_id, label)
    today = datetime.now(UTC).strftime("%Y%m%d")
    disposition = f'attachment; filename="{attachment_name(user_id, label, today)}"'
    return StreamingResponse(archive, media_type="application/zip", headers={"Content-Disposition": disposition})
