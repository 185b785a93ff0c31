"""Retraining submissions on Azurite and the Cosmos server: once per window, crash recovery, routes.

The launcher is the real LocalLauncher; RETRAIN_LOCAL_PYTHON is a tiny script that stands in for the torch
venv: it logs each invocation, checks the images it was given exist, and prints model.train's JSON verdict.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from functions import dependencies
from functions.drift_timer import run_due_windows
from functions.http_api import create_api
from shared_code.cosmos import cosmos_client, ensure_container
from shared_code.inference.model_card import load_card
from shared_code.inference.model_repository import BlobModelRepository
from shared_code.monitoring.window import DriftWindow, last_complete_window
from shared_code.results.feedback import record_feedback
from shared_code.results.service import BlobEvent
from shared_code.retraining.local import LocalLauncher
from shared_code.retraining.spec import utc_iso
from shared_code.retraining.submission import (
    RetrainingDependencies,
    RetrainingStore,
    record_id,
    submit_retraining,
    sweep,
)
from shared_code.settings import get_settings
from tests.factories import make_profiled_tiny_model, make_tiny_model, noisy_photo
from tests.integration.app_fixtures import bearer, blob_service, fire_timer_together

pytestmark = pytest.mark.integration
DATABASE = "imgclass-retraining-it"  # its own database: the drift tests claim the same windows in theirs
FAKE_TRAINER = '''#!{python}
import json, os, pathlib, sys
args = sys.argv[3:]  # after "-m model.train"
with open(os.environ["FAKE_TRAIN_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
options = dict(zip(args[::2], args[1::2]))
rows = pathlib.Path(options["--data"]).read_text().splitlines()[1:]
root = pathlib.Path(options["--data-root"])
present = sum((root / row.split(",")[0]).is_file() for row in rows)
print("training on", len(rows), "images")
print(json.dumps({{"promoted": False, "name": options["--name"], "version": options["--version"],
                  "num_classes": 4, "candidate": {{"accuracy": 0.5, "macro_f1": 0.4}}, "current": {{"accuracy": 0.6}},
                  "card": "", "evaluation": "", "published": False, "rows": len(rows), "present": present}}))
'''


@dataclass(frozen=True)
class Flow:
    window: DriftWindow
    trainer_log: Path
    work_root: Path


def invocations(flow: Flow) -> list[list[str]]:
    if not flow.trainer_log.exists():
        return []
    return [json.loads(line) for line in flow.trainer_log.read_text().splitlines()]


@pytest.fixture(scope="module")
def flow(app_settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    """RETRAIN_MODE=local with the stand-in trainer; a tiny model with a reference profile of 80 normal photos;
    40 dark uploads through the blob flow, each corrected by its owner, in the window holding now."""
    root = tmp_path_factory.mktemp("retraining")
    card_path = make_profiled_tiny_model(root / "profiler", root / "model", version="retrain", seed=11)
    card, _ = load_card(card_path)
    rng = np.random.default_rng(12)  # the dark uploads of the window
    trainer = root / "fake-python"
    trainer.write_text(FAKE_TRAINER.format(python=sys.executable))
    trainer.chmod(0o755)
    flow = Flow(last_complete_window(datetime.now(UTC) + timedelta(hours=24), 24), root / "trainer.log",
                root / "work")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"COSMOS_DATABASE": DATABASE, "MODEL_PATH": str(card_path), "RETRAIN_MODE": "local",
                            "RETRAIN_LOCAL_PYTHON": str(trainer), "RETRAIN_WORK_DIR": str(flow.work_root),
                            "RETRAIN_MIN_IMAGES": "10", "FAKE_TRAIN_LOG": str(flow.trainer_log)}.items():
            patch.setenv(name, value)
        dependencies.reset()
        ensure_container(cosmos_client(app_settings["COSMOS_ENDPOINT"], app_settings["COSMOS_KEY"],
                                       verify_tls=False), DATABASE, "results")
        service = dependencies.get_service()
        uploads = blob_service(app_settings).get_container_client("uploads")
        for i in range(40):
            user = f"retrain-user-{i % 2}"
            blob_name = f"{user}/{i:032x}.png"
            data = noisy_photo(rng, 0.4)
            etag = uploads.get_blob_client(blob_name).upload_blob(data, overwrite=True)["etag"]
            result = service.process_blob(BlobEvent(blob_name, data, str(etag)))
            assert result is not None and result.status == "done", result
            record_feedback(service.results, card.labels, user_id=user, result_id=result.id,
                            label="dark" if i % 4 else "blue")
        yield flow
    dependencies.reset()


def _deps() -> RetrainingDependencies:
    return dependencies.get_components().retraining_dependencies()


def test_timer_firing_twice_submits_the_window_once(flow: Flow) -> None:
    future = flow.window.end + timedelta(minutes=5)
    runs = fire_timer_together(future)
    run_due_windows(past_due=False, last_run=None, now=future)  # a third, later firing
    completed = [run for run in runs if run.status == "completed"]
    assert len(completed) == 1 and completed[0].summary is not None
    summary = completed[0].summary
    assert summary.drift and summary.retraining_requested
    assert summary.retraining_job == f"imgclass-retrain-{flow.window.key.lower()}-1"

    deps = _deps()
    launcher = deps.launcher
    assert isinstance(launcher, LocalLauncher)
    outcome = launcher.wait(summary.retraining_job, timeout=60)
    assert outcome["record"]["status"] == "succeeded", outcome
    record = deps.store.get(flow.window.key)
    assert record is not None and record["status"] == "succeeded" and record["launches"] == 1
    assert record["manifest"]["rows"] == 40 and record["manifest"]["classes"] == 2
    assert record["result"]["rows"] == 40 and record["result"]["present"] == 40  # images downloaded for it
    assert record["version"].isdigit() and record["result"]["version"] == record["version"]
    calls = [call for call in invocations(flow) if record["jobName"] in " ".join(call)]
    assert len(calls) == 1, calls
    arguments = calls[0][2:]
    assert calls[0][:2] == ["-m", "model.train"]
    assert arguments[arguments.index("--name") + 1] == "tiny"
    assert arguments[arguments.index("--publish-connection-string") + 1] == get_settings().STORAGE_CONNECTION_STRING
    # corrections are unvetted: the guard gate is required, and without RETRAIN_GUARD_DATA there is no guard set
    assert arguments[arguments.index("--data-trust") + 1] == "unvetted"
    assert arguments[arguments.index("--promotion") + 1] == "approval" and "--guard-data" not in arguments
    manifest = deps.models.container.download_blob(record["manifest"]["blob"]).readall().decode()
    assert manifest.splitlines()[0] == "path,label" and len(manifest.splitlines()) == 41

    drift_document = dependencies.get_components().drift_store.get(flow.window.key)
    assert drift_document is not None and drift_document["summary"]["retraining_job"] == record["jobName"]


def test_a_submission_lost_before_its_launch_is_launched_again_under_its_name(flow: Flow) -> None:
    window = DriftWindow(start=flow.window.start + timedelta(days=1), hours=24)  # its lookback covers the uploads
    deps = _deps()
    stale = replace(deps, store=RetrainingStore(deps.store.container, stale_after=timedelta(0)))
    # what a worker that died right after creating the record leaves behind
    _, created = deps.store.create({
        "id": record_id(window.key), "windowId": window.key, "kind": "retraining", "window": window.id,
        "windowStart": window.start_iso, "windowEnd": window.end_iso, "status": "submitting",
        "launcher": "local", "attempt": 1, "launches": 1, "jobName": "imgclass-retrain-lost-1", "reason": "drift",
        "createdAt": utc_iso(datetime.now(UTC)), "updatedAt": utc_iso(datetime.now(UTC))})
    assert created
    assert submit_retraining(window, deps, reason="drift").launched is False  # not stale for the normal store
    launched = sweep(stale)
    again = next(item for item in launched if item["windowId"] == window.key)
    assert again["jobName"] == "imgclass-retrain-lost-1" and again["launches"] == 2
    launcher = deps.launcher
    assert isinstance(launcher, LocalLauncher)
    launcher.wait("imgclass-retrain-lost-1", timeout=60)
    # a second re-launch (the record is stale again for this store) finds the job folder: no second process
    stale.store.update(window.key, lambda body: {**body, "status": "submitting"})
    sweep(stale)
    calls = [call for call in invocations(flow) if "imgclass-retrain-lost-1" in " ".join(call)]
    assert len(calls) == 1


def test_too_few_corrected_uploads_skip_the_job(flow: Flow) -> None:
    window = DriftWindow(start=flow.window.start - timedelta(days=400), hours=24)  # nothing corrected back then
    deps = replace(_deps(), lookback=timedelta(days=1))
    submission = submit_retraining(window, deps, reason="test")
    assert submission.record["status"] == "skipped" and submission.record["manifest"]["rows"] == 0
    assert "RETRAIN_MIN_IMAGES" in submission.record["error"]


def test_deleted_uploads_are_left_out_of_the_training_set(flow: Flow, app_settings: dict[str, str]) -> None:
    window = DriftWindow(start=flow.window.start + timedelta(days=2), hours=24)  # its lookback covers the uploads
    deps = _deps()
    service = dependencies.get_service()
    uploads = blob_service(app_settings).get_container_client("uploads")
    data = noisy_photo(np.random.default_rng(3), 0.4)
    blob_name = f"retrain-user-0/{'f' * 32}.png"
    etag = uploads.get_blob_client(blob_name).upload_blob(data, overwrite=True)["etag"]
    result = service.process_blob(BlobEvent(blob_name, data, str(etag)))
    assert result is not None
    record_feedback(service.results, ["dark"], user_id="retrain-user-0", result_id=result.id, label="dark")
    uploads.delete_blob(blob_name)  # the owner deleted the image after correcting it
    submission = submit_retraining(window, deps, reason="test")
    assert submission.launched and submission.record["manifest"]["rows"] == 40
    launcher = deps.launcher
    assert isinstance(launcher, LocalLauncher)
    assert launcher.wait(submission.record["jobName"], timeout=60)["images"] == 40


def test_the_api_app_records_a_request_and_the_monitor_sweep_launches_it(flow: Flow,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """RETRAIN_LAUNCH=monitor (the API app, no azure-ai-ml there): the route records `requested`, starts nothing;
    the monitor's sweep (RETRAIN_LAUNCH=inline) takes the record over and launches it under the record's name."""
    window = DriftWindow(start=flow.window.start + timedelta(days=3), hours=24)  # its lookback covers the uploads
    calls_before = len(invocations(flow))
    monkeypatch.setenv("RETRAIN_LAUNCH", "monitor")
    dependencies.reset()
    try:
        with TestClient(create_api()) as client:
            response = client.post("/api/retraining/run", json={"window": window.id},
                                   headers=bearer("ops", admin=True))
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["launched"] is True and body["record"]["status"] == "requested"
            assert body["record"]["launcher"] == "local"  # the launcher the monitor runs
            listing = client.get("/api/retraining?refresh=true", headers=bearer("ops", admin=True))
            assert listing.status_code == 200  # answers with what is stored: no launcher in this app
            mine = next(item for item in listing.json()["items"] if item["windowId"] == window.key)
            assert mine["status"] == "requested"
    finally:
        monkeypatch.delenv("RETRAIN_LAUNCH")
        dependencies.reset()
    assert len(invocations(flow)) == calls_before, "the API app must not launch anything"

    deps = _deps()  # the monitor app
    assert deps.launch_inline
    launched = next(item for item in sweep(deps) if item["windowId"] == window.key)
    assert launched["status"] == "submitted" and launched["jobName"] == body["record"]["jobName"]
    launcher = deps.launcher
    assert isinstance(launcher, LocalLauncher)
    assert launcher.wait(launched["jobName"], timeout=60)["images"] == 40
    assert all(item["windowId"] != window.key for item in sweep(deps) if item.get("status") == "submitted"
               and item.get("launches", 1) > 1), "launched once"


# --- routes -------------------------------------------------------------------------------------------
@pytest.fixture
def api(flow: Flow) -> Iterator[TestClient]:
    with TestClient(create_api()) as client:
        yield client


def test_admin_runs_and_lists_retraining(api: TestClient, flow: Flow) -> None:
    admin = bearer("ops", admin=True)
    assert api.get("/api/retraining", headers=bearer("someone")).status_code == 403
    first = api.post("/api/retraining/run", json={"window": flow.window.id}, headers=admin)
    assert first.status_code == 200, first.text
    assert first.json()["launched"] is False  # the timer already submitted this window
    assert first.json()["record"]["jobName"] == f"imgclass-retrain-{flow.window.key.lower()}-1"

    forced = api.post("/api/retraining/run", json={"window": flow.window.key, "force": True}, headers=admin)
    assert forced.status_code == 200, forced.text
    body = forced.json()
    assert body["launched"] is True and body["record"]["attempt"] == 2
    assert body["record"]["jobName"].endswith("-2") and body["record"]["reason"] == "requested by ops"
    launcher = _deps().launcher
    assert isinstance(launcher, LocalLauncher)
    launcher.wait(body["record"]["jobName"], timeout=60)

    listing = api.get("/api/retraining", params={"refresh": "true"}, headers=admin)
    assert listing.status_code == 200, listing.text
    items = listing.json()["items"]
    starts = [item["windowStart"] for item in items]
    assert starts == sorted(starts, reverse=True)
    mine = next(item for item in items if item["windowId"] == flow.window.key)
    assert mine["status"] == "succeeded" and mine["attempt"] == 2

    one = api.get(f"/api/retraining/{flow.window.key}", headers=admin)
    assert one.status_code == 200 and one.json()["jobName"] == mine["jobName"]
    assert api.get("/api/retraining/20000101T0000Z-PT24H", headers=admin).status_code == 404
    assert api.post("/api/retraining/run", json={"window": "yesterday"}, headers=admin).status_code == 400


def test_retraining_off_refuses_to_submit(api: TestClient, flow: Flow) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RETRAIN_MODE", "off")
        dependencies.reset()
        response = api.post("/api/retraining/run", json={}, headers=bearer("ops", admin=True))
    dependencies.reset()
    assert response.status_code == 400 and "RETRAIN_MODE=off" in response.json()["error"]["message"]


def test_models_route_lists_the_served_card_and_published_versions(api: TestClient, flow: Flow,
                                                                   app_settings: dict[str, str],
                                                                   tmp_path: Path) -> None:
    admin = bearer("ops", admin=True)
    local = api.get("/api/models", headers=admin)
    assert local.status_code == 200, local.text
    assert local.json() == {"served": {"name": "tiny", "version": "retrain"}, "latest": None, "versions": [
        {"name": "tiny", "version": "retrain", "promoted": True, "num_classes": 4, "created_at": None,
         "accuracy": None, "state": "current", "gates": None, "approval": None}]}
    assert api.get("/api/models", headers=bearer("someone")).status_code == 403

    repository = BlobModelRepository(blob_service(app_settings), "models", tmp_path / "cache")
    for version in ("1", "2", "10"):
        card_path = make_tiny_model(tmp_path / version, version=version)
        card, _ = load_card(card_path)
        if version == "2":
            card_path.write_text(card.model_copy(update={"metrics": {"validation_accuracy": 0.75}}).to_json())
            (card_path.parent / "evaluation.json").write_text(json.dumps({"candidate": {"accuracy": 0.8}}))
        repository.publish("tinyblob", version, card_path.parent, promote=version == "2")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_SOURCE", "blob")
        patch.setenv("MODEL_NAME", "tinyblob")
        patch.setenv("MODEL_CACHE_DIR", str(tmp_path / "served"))
        dependencies.reset()
        blob = api.get("/api/models", headers=admin)
    dependencies.reset()
    assert blob.status_code == 200, blob.text
    body = blob.json()
    assert body["served"] == {"name": "tinyblob", "version": "2"} and body["latest"] == "2"
    assert [(v["version"], v["promoted"], v["accuracy"]) for v in body["versions"]] == [
        ("1", False, None), ("2", True, 0.75), ("10", False, None)]
    # published by hand: no gate results, so nothing here can be approved (tests/integration/test_model_promotion.py)
    assert [v["state"] for v in body["versions"]] == ["unevaluated", "current", "unevaluated"]
    assert repository.next_version("tinyblob") == "11" and repository.next_version("nothing", at_least="3") == "4"

