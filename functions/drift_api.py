"""Admin routes for drift monitoring: list window summaries, stream stored reports, run a window on demand."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from azure.cosmos import ContainerProxy
from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from functions.api_deps import AUTH_ERRORS, ServiceDep, SettingsDep, error_responses, require
from shared_code.auth import Principal
from shared_code.drift import DriftDependencies, DriftSummary, DriftThresholds, run_drift_window
from shared_code.drift_store import (
    DRIFT_CONTAINER,
    REPORT_FILE,
    SUMMARY_FILE,
    DriftStore,
    ensure_drift_container,
    ensure_reports_container,
    open_report,
)
from shared_code.drift_window import last_complete_window, parse_window
from shared_code.monitoring.baseline import BaselinePolicy, BaselineStore
from shared_code.results_store import cosmos_client
from shared_code.service import ClassificationService
from shared_code.settings import Settings

WINDOW_KEY_PATTERN = r"^\d{8}T\d{4}Z-PT\d{1,4}H$"


# --- wiring -------------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _drift_container(endpoint: str, key: str, verify_tls: bool, client_id: str, database: str) -> ContainerProxy:
    """One client per worker and connection (keyed by its settings, so tests with new settings get a new one)."""
    client = cosmos_client(endpoint, key, verify_tls=verify_tls, client_id=client_id)
    if key:  # a key means the local emulator, where nothing provisions containers; Bicep does in Azure
        return ensure_drift_container(client, database)
    return client.get_database_client(database).get_container_client(DRIFT_CONTAINER)


_container_lock = threading.Lock()  # lru_cache does not stop two threads from building (and creating) at once


def drift_store_for(settings: Settings) -> DriftStore:
    with _container_lock:
        container = _drift_container(settings.COSMOS_ENDPOINT, settings.COSMOS_KEY, settings.COSMOS_VERIFY_TLS,
                                     settings.AZURE_CLIENT_ID, settings.COSMOS_DATABASE)
    return DriftStore(container)


def drift_dependencies(settings: Settings, service: ClassificationService) -> DriftDependencies:
    """Everything `run_drift_window` needs, from the worker's service and settings."""
    reports = service.blobs.service.get_container_client(settings.REPORTS_CONTAINER)
    if settings.STORAGE_CONNECTION_STRING:  # Azurite: nothing provisions containers locally
        ensure_reports_container(reports)
    store = drift_store_for(settings)
    return DriftDependencies(
        results=service.results.container, store=store, reports=reports,
        pipeline=service.models.current, thresholds=DriftThresholds.from_settings(settings),
        min_corrections=settings.RETRAIN_MIN_CORRECTIONS,
        baselines=BaselineStore(store.container, reports),
        baseline_policy=BaselinePolicy(min_images=settings.DRIFT_BASELINE_MIN_IMAGES,
                                       min_days=settings.DRIFT_BASELINE_DAYS, sample=settings.DRIFT_BASELINE_SAMPLE),
    )


def run_owner() -> str:
    """Who holds a claim, for the logs and the claim document."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --- schemas ------------------------------------------------------------------------------------------
class DriftReportPublic(BaseModel):
    window_id: str
    window_key: str
    window_start: str
    window_end: str
    status: str
    drift: bool
    drift_share: float
    signals: list[str]
    current_rows: int
    retraining_requested: bool
    reference_source: str | None = Field(default=None, description="explicit (a shipped profile) or baseline "
                                         "(the version's own first traffic); none before either exists.")
    finished_at: str | None
    report_url: str
    summary_url: str


class DriftReportList(BaseModel):
    items: list[DriftReportPublic]


class DriftRunCreate(BaseModel):
    window: str | None = Field(default=None, examples=["2026-11-23T00:00Z/PT24H"],
                               description="Window id or key; default: the last complete window.")
    force: bool = Field(default=False, description="Re-run a window that is already done.")


class DriftRunPublic(BaseModel):
    status: Literal["completed", "skipped"]
    reason: str
    window_id: str
    window_key: str
    summary: DriftSummary | None
    report_url: str
    summary_url: str


def _links(window_key: str) -> dict[str, str]:
    return {"report_url": f"/api/drift/reports/{window_key}/{REPORT_FILE}",
            "summary_url": f"/api/drift/reports/{window_key}/{SUMMARY_FILE}"}


def report_public(document: dict[str, Any]) -> DriftReportPublic:
    summary = document.get("summary") or {}
    return DriftReportPublic(
        window_id=document["window"], window_key=document["id"], window_start=document["windowStart"],
        window_end=document["windowEnd"], status=str(summary.get("status", "unknown")),
        drift=bool(summary.get("drift", False)), drift_share=float(summary.get("drift_share", 0.0)),
        signals=list(summary.get("signals", [])), current_rows=int(summary.get("current_rows", 0)),
        retraining_requested=bool(summary.get("retraining_requested", False)),
        reference_source=(summary.get("reference") or {}).get("source"),
        finished_at=document.get("finishedAt"), **_links(document["id"]),
    )


# --- routes -------------------------------------------------------------------------------------------
drift_router = APIRouter(prefix="/api/drift", tags=["drift"])
WindowKey = Annotated[str, Path(pattern=WINDOW_KEY_PATTERN, description="e.g. 20261123T0000Z-PT24H")]


@drift_router.get("/reports", responses={**AUTH_ERRORS})
async def list_drift_reports(settings: SettingsDep, _: Annotated[Principal, require("admin")],
                             limit: Annotated[int, Query(ge=1, le=500)] = 50) -> DriftReportList:
    """Finished drift windows, newest first, with links to their reports."""
    documents = await run_in_threadpool(lambda: drift_store_for(settings).list_windows(limit))
    return DriftReportList(items=[report_public(document) for document in documents])


def _stream(settings: Settings, service: ClassificationService, window_key: str, file: str) -> Iterator[bytes]:
    reports = service.blobs.service.get_container_client(settings.REPORTS_CONTAINER)
    return open_report(reports, window_key, file).chunks()


@drift_router.get(f"/reports/{{window_key}}/{REPORT_FILE}", response_class=StreamingResponse,
                  responses={**AUTH_ERRORS, **error_responses(404)})
async def get_drift_report(window_key: WindowKey, settings: SettingsDep, service: ServiceDep,
                           _: Annotated[Principal, require("admin")]) -> StreamingResponse:
    """The Evidently HTML report of one window, streamed from Blob Storage."""
    chunks = await run_in_threadpool(_stream, settings, service, window_key, REPORT_FILE)
    return StreamingResponse(chunks, media_type="text/html; charset=utf-8")


@drift_router.get(f"/reports/{{window_key}}/{SUMMARY_FILE}", response_class=StreamingResponse,
                  responses={**AUTH_ERRORS, **error_responses(404)})
async def get_drift_summary(window_key: WindowKey, settings: SettingsDep, service: ServiceDep,
                            _: Annotated[Principal, require("admin")]) -> StreamingResponse:
    """The JSON summary of one window, streamed from Blob Storage."""
    chunks = await run_in_threadpool(_stream, settings, service, window_key, SUMMARY_FILE)
    return StreamingResponse(chunks, media_type="application/json")


@drift_router.post("/run", responses={**AUTH_ERRORS, **error_responses(400)})
async def run_drift(body: DriftRunCreate, settings: SettingsDep, service: ServiceDep,
                    _: Annotated[Principal, require("admin")]) -> DriftRunPublic:
    """Run one window now, with the timer's logic (claims included: a running window is not run twice)."""
    window = parse_window(body.window) if body.window else last_complete_window(
        datetime.now(UTC), settings.DRIFT_WINDOW_HOURS)
    run = await run_in_threadpool(lambda: run_drift_window(
        window, drift_dependencies(settings, service), owner=f"api:{run_owner()}", force=body.force))
    return DriftRunPublic(status=run.status, reason=run.reason, window_id=window.id, window_key=window.key,
                          summary=run.summary, **_links(window.key))
