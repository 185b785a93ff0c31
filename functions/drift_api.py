"""Admin routes for drift monitoring: window summaries, stored reports, the page's chart data, runs on demand."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import Field

from functions.api_deps import AUTH_ERRORS, error_responses, require
from functions.dependencies import ComponentsDep, SettingsDep
from functions.schema_base import ApiModel
from shared_code.composition import Components
from shared_code.errors import NotFound
from shared_code.identity.auth import Principal
from shared_code.monitoring.charts import CHART_GROUPS, ChartGroup, Histogram, chart_group
from shared_code.monitoring.drift import run_drift_window
from shared_code.monitoring.store import REPORT_FILE, SUMMARY_FILE, open_report
from shared_code.monitoring.summary import DriftSummary
from shared_code.monitoring.window import last_complete_window, parse_window

WINDOW_KEY_PATTERN = r"^\d{8}T\d{4}Z-PT\d{1,4}H$"
# A window id or key in a body; the start must also be aligned to the window length. Only the document carries
# the pattern: the server's own parse answers 400 for any bad window, as it always has.
WINDOW_PATTERN = (r"^(?:[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}Z/PT[0-9]{1,4}H"
                  r"|[0-9]{8}T[0-9]{4}Z-PT[0-9]{1,4}H)$")
WINDOW_RULES = ("Window id (`2026-11-23T00:00Z/PT24H`) or key (`20261123T0000Z-PT24H`) of an existing calendar "
                "time whose start is aligned to its length (400 otherwise); default: the last complete window.")


def run_owner() -> str:
    """Who holds a claim, for the logs and the claim document."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --- schemas ------------------------------------------------------------------------------------------
class DriftReportPublic(ApiModel):
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


class DriftReportList(ApiModel):
    items: list[DriftReportPublic]


class DriftRunCreate(ApiModel):
    window: str | None = Field(default=None, examples=["2026-11-23T00:00Z/PT24H"],
                               json_schema_extra={"pattern": WINDOW_PATTERN},  # parse_window answers 400
                               description=WINDOW_RULES)
    force: bool = Field(default=False, strict=True, description="Re-run a window that is already done.")


class DriftRunPublic(ApiModel):
    status: Literal["completed", "skipped"]
    reason: str
    window_id: str
    window_key: str
    summary: DriftSummary | None
    report_url: str
    summary_url: str


class GroupPoint(ApiModel):
    """The strongest evidence of one signal group in one window."""

    p_value: float = Field(description="Smallest p-value of the group's signals.")
    evidence: float = Field(description="-log10(p_value), capped at 10: the height of the point in the chart.")
    effect: float = Field(description="Largest effect size among the group's signals.")
    drifted: bool = Field(description="One of the group's signals is among the window's drifting signals.")
    signals: list[str]


class TimelineWindow(ApiModel):
    window_id: str
    window_key: str
    window_start: str
    window_end: str
    status: str
    drift: bool
    signals: list[str]
    current_rows: int
    alpha: float | None = Field(description="Per-signal level after Bonferroni (the alarm line: -log10(alpha)).")
    groups: dict[ChartGroup, GroupPoint]
    class_counts: dict[str, int] = Field(description="Predictions per class in the window (top classes + other).")
    has_histograms: bool


class DriftTimeline(ApiModel):
    groups: list[ChartGroup]
    items: list[TimelineWindow] = Field(description="Finished windows, oldest first.")


class DriftHistograms(ApiModel):
    window_id: str
    window_key: str
    status: str
    drift: bool
    histograms: list[Histogram]


MAX_EVIDENCE = 10.0


def _group_points(details: list[dict[str, Any]], signals: list[str]) -> dict[ChartGroup, GroupPoint]:
    points: dict[ChartGroup, GroupPoint] = {}
    for name in CHART_GROUPS:
        members = [d for d in details if chart_group(str(d.get("name")), str(d.get("group"))) == name]
        if not members:
            continue
        p_value = min(float(d.get("p_value", 1.0)) for d in members)
        points[name] = GroupPoint(
            p_value=p_value, evidence=round(min(MAX_EVIDENCE, -math.log10(max(p_value, 1e-300))), 4),
            effect=max(float(d.get("effect", 0.0)) for d in members),
            drifted=any(d.get("name") in signals for d in members), signals=[str(d.get("name")) for d in members])
    return points


def timeline_window(document: dict[str, Any]) -> TimelineWindow:
    summary = document.get("summary") or {}
    details = list(summary.get("details") or [])
    signals = list(summary.get("signals") or [])
    charts = summary.get("charts") or {}
    return TimelineWindow(
        window_id=document["window"], window_key=document["id"], window_start=document["windowStart"],
        window_end=document["windowEnd"], status=str(summary.get("status", "unknown")),
        drift=bool(summary.get("drift", False)), signals=signals, current_rows=int(summary.get("current_rows", 0)),
        alpha=float(details[0]["alpha"]) if details else None, groups=_group_points(details, signals),
        class_counts={str(k): int(v) for k, v in (charts.get("class_counts") or {}).items()},
        has_histograms=bool(charts.get("histograms")),
    )


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
async def list_drift_reports(components: ComponentsDep, _: Annotated[Principal, require("admin")],
                             limit: Annotated[int, Query(ge=1, le=500)] = 50) -> DriftReportList:
    """Finished drift windows, newest first, with links to their reports."""
    documents = await run_in_threadpool(lambda: components.drift_store.list_windows(limit))
    return DriftReportList(items=[report_public(document) for document in documents])


@drift_router.get("/timeline", responses={**AUTH_ERRORS})
async def drift_timeline(components: ComponentsDep, _: Annotated[Principal, require("admin")],
                         limit: Annotated[int, Query(ge=1, le=500)] = 50) -> DriftTimeline:
    """The newest `limit` finished windows, oldest first: per signal group the strongest evidence of drift, the
    window's alarm, and its predictions per class (the page's drift-over-time and class-share charts)."""
    documents = await run_in_threadpool(lambda: components.drift_store.list_windows(limit))
    return DriftTimeline(groups=list(CHART_GROUPS), items=[timeline_window(d) for d in reversed(documents)])


@drift_router.get("/windows/{window_key}/histograms", responses={**AUTH_ERRORS, **error_responses(404)})
async def drift_histograms(window_key: WindowKey, components: ComponentsDep,
                           _: Annotated[Principal, require("admin")]) -> DriftHistograms:
    """Confidence and brightness histograms of one finished window against its reference (fixed bins on [0, 1])."""
    document = await run_in_threadpool(lambda: components.drift_store.get(window_key))
    summary = (document or {}).get("summary") or {}
    histograms = (summary.get("charts") or {}).get("histograms")
    if document is None or document.get("status") != "done" or not histograms:
        raise NotFound(f"no histograms for drift window {window_key}")
    return DriftHistograms(window_id=document["window"], window_key=document["id"],
                           status=str(summary.get("status", "unknown")), drift=bool(summary.get("drift", False)),
                           histograms=[Histogram.model_validate(h) for h in histograms])


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
    window = parse_window(body.window) if body.window is not None else last_complete_window(  # "" is a 400
        datetime.now(UTC), settings.DRIFT_WINDOW_HOURS)
    run = await run_in_threadpool(lambda: run_drift_window(
        window, components.drift_dependencies(), owner=f"api:{run_owner()}", force=body.force))
    return DriftRunPublic(status=run.status, reason=run.reason, window_id=window.id, window_key=window.key,
                          summary=run.summary, **_links(window.key))
