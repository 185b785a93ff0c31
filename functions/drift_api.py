"""Admin routes for drift monitoring: list window summaries, stream stored reports, run a window on demand."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from functions.api_deps import AUTH_ERRORS, error_responses, require
from functions.dependencies import ComponentsDep, SettingsDep
from shared_code.composition import Components
from shared_code.identity.auth import Principal
from shared_code.monitoring.drift import run_drift_window
from shared_code.monitoring.store import REPORT_FILE, SUMMARY_FILE, open_report
from shared_code.monitoring.summary import DriftSummary
from shared_code.monitoring.window import last_complete_window, parse_window

WINDOW_KEY_PATTERN = r"^\d{8}T\d{4}Z-PT\d{1,4}H$"


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
        finished_at=document.get("finishedAt"), **_links(document["id"]),
    )


# --- routes -------------------------------------------------------------------------------------------
drift_router = APIRouter(prefix="/api/drift", tags=["drift"])
WindowKey = Annotated[str, Path(pattern=WINDOW_KEY_PATTERN, description="e.g. 20261123T0000Z-PT24H")]


@drift_router.get("/reports", responses={**AUTH_ERRORS})
async def list_drift_reports(components: ComponentsDep, _: Annotated[Principal, require("admin")],
                             limit: Annotated[int, Query(ge=1, le=500)] = 50) -> DriftReportList:
    """Finished drift windows, newest first, with links to their reports."""
    documents = await run_in_threadpool(lambda: components.drift_store.list_windows(limit))
    return DriftReportList(items=[report_public(document) for document in documents])


def _stream(components: Components, window_key: str, file: str) -> Iterator[bytes]:
    return open_report(components.reports, window_key, file).chunks()


@drift_router.get(f"/reports/{{window_key}}/{REPORT_FILE}", response_class=StreamingResponse,
                  responses={**AUTH_ERRORS, **error_responses(404)})
async def get_drift_report(window_key: WindowKey, components: ComponentsDep,
                           _: Annotated[Principal, require("admin")]) -> StreamingResponse:
    """The Evidently HTML report of one window, streamed from Blob Storage."""
    chunks = await run_in_threadpool(_stream, components, window_key, REPORT_FILE)
    return StreamingResponse(chunks, media_type="text/html; charset=utf-8")


@drift_router.get(f"/reports/{{window_key}}/{SUMMARY_FILE}", response_class=StreamingResponse,
                  responses={**AUTH_ERRORS, **error_responses(404)})
async def get_drift_summary(window_key: WindowKey, components: ComponentsDep,
                            _: Annotated[Principal, require("admin")]) -> StreamingResponse:
    """The JSON summary of one window, streamed from Blob Storage."""
    chunks = await run_in_threadpool(_stream, components, window_key, SUMMARY_FILE)
    return StreamingResponse(chunks, media_type="application/json")


@drift_router.post("/run", responses={**AUTH_ERRORS, **error_responses(400)})
async def run_drift(body: DriftRunCreate, settings: SettingsDep, components: ComponentsDep,
                    _: Annotated[Principal, require("admin")]) -> DriftRunPublic:
    """Run one window now, with the timer's logic (claims included: a running window is not run twice)."""
    window = parse_window(body.window) if body.window else last_complete_window(
        datetime.now(UTC), settings.DRIFT_WINDOW_HOURS)
    run = await run_in_threadpool(lambda: run_drift_window(
        window, components.drift_dependencies(), owner=f"api:{run_owner()}", force=body.force))
    return DriftRunPublic(status=run.status, reason=run.reason, window_id=window.id, window_key=window.key,
                          summary=run.summary, **_links(window.key))
