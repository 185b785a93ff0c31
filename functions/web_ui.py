"""The web page: static files from `web/` at `/api/ui/`, the API docs at `/api/docs`, and the served labels.

Azure Functions serves HTTP only under the route prefix (`/api`), so the page lives at `/api/ui/` on the
same origin as the API (no CORS for API calls). Files are served from a fixed allow-list (the files in
`web/` with a known suffix), with explicit content types and a strict Content-Security-Policy: scripts and
styles only from this origin (no inline code), images from this origin or `blob:` URLs the page creates,
and network access to this origin plus the Blob Storage endpoint the page uploads to with SAS URLs.

`/api/docs` is Swagger UI, whose two assets come from the pinned `fastapi-offline` package (a PyPI
dependency, so nothing is vendored in git and the deployment builds it like any other) and are served at
`/api/ui/vendor/`; the page and its start-up script are ours (`web/docs.html`, `web/docs.js`), so the same
strict policy holds: no CDN, no inline script.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from fastapi_offline import core as _swagger_assets

from functions.api_deps import AUTH_ERRORS, require
from functions.dependencies import ServiceDep, SettingsDep
from functions.schema_base import ApiModel
from shared_code.errors import NotFound
from shared_code.identity.auth import Principal
from shared_code.results.store import ModelRef
from shared_code.settings import Settings

WEB_ROOT = Path(__file__).resolve().parents[1] / "web"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
SWAGGER_UI_ROOT = Path(_swagger_assets.__file__).resolve().parent / "static"
VENDOR_FILES = {"swagger-ui-bundle.js": SWAGGER_UI_ROOT / "swagger-ui-bundle.js",
                "swagger-ui.css": SWAGGER_UI_ROOT / "swagger-ui.css"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.[a-z]{2,4}$")


def blob_origin(settings: Settings) -> str | None:
    """`scheme://host[:port]` of the Blob endpoint that upload URLs point at (None when not configured)."""
    endpoint = settings.STORAGE_ACCOUNT_URL
    if settings.STORAGE_CONNECTION_STRING:
        parts = dict(part.split("=", 1) for part in settings.STORAGE_CONNECTION_STRING.split(";") if "=" in part)
        endpoint = parts.get("BlobEndpoint") or (
            f"{parts.get('DefaultEndpointsProtocol', 'https')}://{parts.get('AccountName', '')}.blob."
            f"{parts.get('EndpointSuffix', 'core.windows.net')}" if parts.get("AccountName") else "")
    split = urlsplit(endpoint)
    if split.scheme not in ("http", "https") or not split.netloc:
        return None
    return f"{split.scheme}://{split.netloc}"


@lru_cache(maxsize=8)
def content_security_policy(upload_origin: str | None) -> str:
    connect = "'self'" + (f" {upload_origin}" if upload_origin else "")
    return "; ".join((
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' blob: data:",
        f"connect-src {connect}", "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
        "object-src 'none'",
    ))


@lru_cache(maxsize=64)
def _read_file(path: Path) -> bytes:
    return path.read_bytes()  # the files never change while the worker runs; Swagger UI's bundle is 1.5 MB


def _read(name: str, *, vendor: bool = False) -> tuple[bytes, str] | None:
    """The file `web/<name>` (or a vendored asset) and its media type, if `name` is one of the served files."""
    path = VENDOR_FILES.get(name) if vendor else WEB_ROOT / name
    if path is None:
        return None
    media_type = MEDIA_TYPES.get(path.suffix)
    if not _NAME.fullmatch(name) or media_type is None or not path.is_file():
        return None
    return _read_file(path), media_type


def static_response(request: Request, name: str, settings: Settings, *, vendor: bool = False) -> Response:
    found = _read(name, vendor=vendor)
    if found is None:
        raise NotFound(f"no page file {name!r}")
    body, media_type = found
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer", "Content-Security-Policy": content_security_policy(blob_origin(settings)),
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


class LabelsPublic(ApiModel):
    model: ModelRef
    labels: list[str]


web_router = APIRouter(prefix="/api", include_in_schema=True)


@web_router.get("/", tags=["web"], include_in_schema=False)
async def api_root() -> RedirectResponse:
    """`/api/` is where a visitor lands first: send them to the page."""
    return RedirectResponse("/api/ui/", status_code=308)


@web_router.get("/docs", tags=["web"], response_class=Response, include_in_schema=False)
async def api_docs(request: Request, settings: SettingsDep) -> Response:
    return await run_in_threadpool(static_response, request, "docs.html", settings)


@web_router.get("/ui/vendor/{name}", tags=["web"], response_class=Response, include_in_schema=False)
async def ui_vendor_file(name: str, request: Request, settings: SettingsDep) -> Response:
    return await run_in_threadpool(lambda: static_response(request, name, settings, vendor=True))


@web_router.get("/ui", tags=["web"], include_in_schema=False)
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/api/ui/", status_code=308)


@web_router.get("/ui/", tags=["web"], response_class=Response, include_in_schema=False)
async def ui_index(request: Request, settings: SettingsDep) -> Response:
    return await run_in_threadpool(static_response, request, "index.html", settings)


@web_router.get("/ui/{name}", tags=["web"], response_class=Response, include_in_schema=False)
async def ui_file(name: str, request: Request, settings: SettingsDep) -> Response:
    return await run_in_threadpool(static_response, request, name, settings)


@web_router.get("/labels", tags=["results"], responses=AUTH_ERRORS)
async def model_labels(_: Annotated[Principal, require("results:read")], service: ServiceDep) -> LabelsPublic:
    """The served model's class labels (what `POST /api/results/{id}/feedback` accepts), in class-index order."""
    pipeline = await run_in_threadpool(service.models.current)
    return LabelsPublic(model=await run_in_threadpool(service.health), labels=list(pipeline.card.labels))
