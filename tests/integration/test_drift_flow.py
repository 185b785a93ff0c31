"""Drift runs end to end on Azurite and the Cosmos server: claims, the timer, reports, routes and feedback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from azure.functions.timer import TimerRequest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from functions import dependencies
from functions.drift_api import drift_router
from functions.drift_timer import drift_check, run_due_windows
from functions.errors import install_error_handlers
from functions.feedback_api import feedback_router
from shared_code.monitoring.store import DriftStore, report_blob_name
from shared_code.monitoring.window import DriftWindow, last_complete_window
from shared_code.results.service import UploadedFile
from shared_code.settings import get_settings
from tests.factories import make_profiled_tiny_model, noisy_photo
from tests.integration.app_fixtures import bearer, blob_service, fire_timer_together

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def drift_model(app_settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny model version of its own, with a reference profile of 80 normally lit photos, served by the app."""
    card_path = make_profiled_tiny_model(tmp_path_factory.mktemp("drift-profiler"),
                                         tmp_path_factory.mktemp("drift-model"), version="drift", seed=7)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_PATH", str(card_path))
        dependencies.reset()
        yield card_path
    dependencies.reset()


@pytest.fixture(scope="module")
def dark_window(drift_model: Path) -> DriftWindow:
    """40 dark photos classified for two users now; the daily window holding them."""
    window = last_complete_window(datetime.now(UTC) + timedelta(hours=24), 24)
    service = dependencies.get_service()
    rng = np.random.default_rng(8)
    for user in ("drift-user-a", "drift-user-b"):
        service.classify_files(user, [UploadedFile(f"{i}.png", noisy_photo(rng, 0.4)) for i in range(20)], top_k=1)
    return window


def _store() -> DriftStore:
    return dependencies.get_components().drift_store


def test_timer_runs_each_window_once_however_many_instances_fire(dark_window: DriftWindow) -> None:
    future = dark_window.end + timedelta(minutes=5)
    runs = fire_timer_together(future)
    statuses = sorted(run.status for run in runs)
    assert statuses == ["completed", "skipped"]
    completed = next(run for run in runs if run.status == "completed")
    assert completed.window == dark_window

    again = run_due_windows(past_due=False, last_run=None, now=future)
    assert [(run.status, run.reason) for run in again] == [("skipped", "already done")]

    document = _store().get(dark_window.key)
    assert document is not None and document["status"] == "done" and document["attempt"] == 1
    summary = document["summary"]
    assert summary["window_id"] == dark_window.id and summary["model_version"] == "drift"
    assert summary["current_rows"] == 40  # both users' partitions, other models' results excluded
    assert summary["drift"] is True and "brightness" in summary["signals"]
    assert summary["retraining_requested"] is True


def test_reports_are_written_to_blob(dark_window: DriftWindow, app_settings: dict[str, str]) -> None:
    run_due_windows(past_due=False, last_run=None, now=dark_window.end + timedelta(minutes=5))
    container = blob_service(app_settings).get_container_client(get_settings().REPORTS_CONTAINER)
    html = container.download_blob(report_blob_name(dark_window.key, "report.html")).readall().decode()
    summary = json.loads(container.download_blob(report_blob_name(dark_window.key, "summary.json")).readall())
    assert "Drift window " + dark_window.id in html and "drawDashboard" in html
    assert summary["window_key"] == dark_window.key and summary["drift"] is True


def test_timer_trigger_function_twice_runs_the_window_once(drift_model: Path) -> None:
    now = datetime.now(UTC)
    last_run = (now - timedelta(hours=48)).isoformat()
    drift_check(TimerRequest(past_due=True, schedule_status={"Last": last_run}))
    window = last_complete_window(now, get_settings().DRIFT_WINDOW_HOURS)
    first = _store().get(window.key)
    assert first is not None and first["status"] == "done" and first["attempt"] == 1
    assert first["summary"]["status"] == "insufficient_data"  # no results of this model in that window
    drift_check(TimerRequest(past_due=False))
    second = _store().get(window.key)
    assert second is not None and second["_etag"] == first["_etag"] and second["finishedAt"] == first["finishedAt"]
    earlier = _store().get(DriftWindow(window.start - timedelta(hours=window.hours), window.hours).key)
    assert earlier is not None and earlier["status"] == "done"  # the past-due firing caught up


def test_stale_claim_is_taken_over_and_the_loser_cannot_overwrite(drift_model: Path) -> None:
    store = _store()
    window = DriftWindow(start=datetime(2031, 1, 1, tzinfo=UTC), hours=24)
    now = datetime(2031, 1, 2, 0, 5, tzinfo=UTC)
    first = store.claim(window, owner="a", now=now)
    assert first.document is not None
    busy = store.claim(window, owner="b", now=now + timedelta(minutes=5))
    assert busy.document is None and "running since" in busy.reason
    takeover = store.claim(window, owner="b", now=now + store.stale_after + timedelta(minutes=1))
    assert takeover.document is not None and takeover.document["attempt"] == 2
    store.complete(first, {"late": True})  # a's ETag is stale: its result must not land
    current = store.get(window.key)
    assert current is not None and current["owner"] == "b" and current["status"] == "running"
    store.complete(takeover, {"late": False})
    done = store.get(window.key)
    assert done is not None and done["status"] == "done" and done["summary"] == {"late": False}
    assert store.claim(window, owner="c", now=now).reason == "already done"
    forced = store.claim(window, owner="c", now=now, force=True)
    assert forced.document is not None and forced.document["attempt"] == 3


def test_failed_run_can_be_retried_at_once(drift_model: Path) -> None:
    store = _store()
    window = DriftWindow(start=datetime(2031, 2, 1, tzinfo=UTC), hours=24)
    now = datetime(2031, 2, 2, 0, 5, tzinfo=UTC)
    claim = store.claim(window, owner="a", now=now)
    store.fail(claim, "RuntimeError: boom")
    failed = store.get(window.key)
    assert failed is not None and failed["status"] == "failed" and "boom" in failed["error"]
    assert store.claim(window, owner="b", now=now).document is not None


# --- routes -------------------------------------------------------------------------------------------
@pytest.fixture
def drift_api(drift_model: Path) -> Iterator[TestClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(drift_router)
    app.include_router(feedback_router)
    with TestClient(app) as client:
        yield client


def test_admin_runs_lists_and_reads_reports(drift_api: TestClient, dark_window: DriftWindow) -> None:
    admin = bearer("ops", admin=True)
    run = drift_api.post("/api/drift/run", json={"window": dark_window.id, "force": True}, headers=admin)
    assert run.status_code == 200, run.text
    body = run.json()
    assert body["status"] == "completed" and body["window_key"] == dark_window.key
    assert body["summary"]["drift"] is True and "brightness" in body["summary"]["signals"]

    listing = drift_api.get("/api/drift/reports", headers=admin)
    assert listing.status_code == 200
    items = listing.json()["items"]
    starts = [item["window_start"] for item in items]
    assert starts == sorted(starts, reverse=True)
    item = next(item for item in items if item["window_key"] == dark_window.key)
    assert item["drift"] is True and item["current_rows"] == 40

    report = drift_api.get(item["report_url"], headers=admin)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert f"Drift window {dark_window.id}" in report.text
    summary = drift_api.get(item["summary_url"], headers=admin)
    assert summary.status_code == 200 and summary.json()["window_id"] == dark_window.id


def test_drift_routes_need_admin_and_valid_keys(drift_api: TestClient) -> None:
    user, admin = bearer("someone"), bearer("ops", admin=True)
    assert drift_api.get("/api/drift/reports", headers=user).status_code == 403
    assert drift_api.post("/api/drift/run", json={}, headers=user).status_code == 403
    assert drift_api.get("/api/drift/reports").status_code == 401
    missing = drift_api.get("/api/drift/reports/20300101T0000Z-PT24H/report.html", headers=admin)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert drift_api.get("/api/drift/reports/..%2Fsecret/report.html", headers=admin).status_code in {404, 422}
    bad = drift_api.post("/api/drift/run", json={"window": "2026-11-22T05:00Z/PT24H"}, headers=admin)
    assert bad.status_code == 400


def test_feedback_sets_the_corrected_label(drift_api: TestClient, drift_model: Path) -> None:
    service = dependencies.get_service()
    rng = np.random.default_rng(9)
    [document] = service.classify_files("fb-alice", [UploadedFile("a.png", noisy_photo(rng))], top_k=1)
    url = f"/api/results/{document.id}/feedback"
    response = drift_api.post(url, json={"label": "green"}, headers=bearer("fb-alice"))
    assert response.status_code == 200, response.text
    assert response.json()["corrected_label"] == "green"
    assert service.results.get("fb-alice", document.id).corrected_label == "green"

    unknown = drift_api.post(url, json={"label": "purple"}, headers=bearer("fb-alice"))
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "bad_request"
    other = drift_api.post(url, json={"label": "red"}, headers=bearer("fb-bob"))
    assert other.status_code == 404
    assert drift_api.post(url, json={"label": "red"}).status_code == 401
    assert service.results.get("fb-alice", document.id).corrected_label == "green"
