"""End to end, local retraining with the real training entry: traffic -> drift -> one job -> candidate -> an admin
approves it -> served.

Real photos (../shared/imagenet-sample) of four classes that the served EfficientNet-Lite0 recognises in
daylight but not as dark grayscale shots: 36 such shots are uploaded through the real flow (SAS grant, PUT to
Azurite, the blob trigger function) and corrected by their owners through the feedback route. The drift timer
fires twice for the window: it sees the brightness drift and submits one local retraining
(`model/.venv/bin/python -m model.train`). The candidate is measured against the served model on the same
held-out shots and on a trusted guard set (RETRAIN_GUARD_DATA: daylight photos of other classes, none of them a
correction) and published as a candidate (RETRAIN_PROMOTION=approval); an admin approves it through the models
route, and the app (MODEL_SOURCE=blob) then serves it and gets the shots right.

About 1.5-3 minutes on 2 cores (training ~40 s of CPU). Skips without model/.venv, model/train.py, the
exported EfficientNet-Lite0 artefact or ../shared.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageEnhance, ImageOps

from functions import dependencies
from functions.drift_timer import run_due_windows
from functions.http_api import create_api
from shared_code.cosmos import cosmos_client, ensure_container
from shared_code.inference.classifier import load_classifier
from shared_code.inference.model_card import load_card
from shared_code.inference.model_repository import BlobModelRepository
from shared_code.inference.pipeline import ClassificationPipeline
from shared_code.monitoring.drift import build_reference_profile, drift_row
from shared_code.monitoring.summary import PROFILE_FILE
from shared_code.monitoring.window import DriftWindow, last_complete_window
from shared_code.retraining.local import LocalLauncher
from tests.factories import SHARED_PHOTOS
from tests.integration.app_fixtures import bearer, blob_service, fire_timer_together, upload_and_classify

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]

MODEL_PYTHON = ROOT / "model" / ".venv" / "bin" / "python"
BASE = ROOT / "model" / "artifacts" / "efficientnet_lite0" / "1"
DATABASE = "imgclass-retraining-e2e"
MODEL_NAME = "effnet-e2e"
# Recognised in daylight, missed as dark grayscale shots by the served model (checked below, not assumed).
CLASSES = ("n01749939_green_mamba.JPEG", "n02086646_Blenheim_spaniel.JPEG", "n02090379_redbone.JPEG",
           "n02093991_Irish_terrier.JPEG")
SHOTS_PER_CLASS = 9
PROFILE_PHOTOS = 60
# The guard set: every sample photo that is not one of the corrected classes. A fine-tune on 36 night shots of
# four classes costs the daylight photos a point or two (measured 0.880 and 0.870 against 0.890 on 100 of them),
# so the default --max-regression 0.02 would fail this test on a single photo: it allows 0.04.
GUARD_MAX_REGRESSION = "0.04"


def _missing() -> str | None:
    if not MODEL_PYTHON.exists():
        return "model/.venv is missing (make model-venv)"
    if not (ROOT / "model" / "train.py").exists():
        return "model/train.py (the training entry) is missing"
    if not (BASE / "model.card.json").exists():
        return f"{BASE} is missing (make model)"
    if not (SHARED_PHOTOS / "labels.csv").exists():
        return f"{SHARED_PHOTOS} is missing (real photos)"
    return None


def dark_shot(path: Path, seed: int) -> bytes:
    """A dim grayscale crop of a photo (a night camera); seeds vary the crop and mirror it."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.7, 1.0)
    crop_w, crop_h = int(width * scale), int(height * scale)
    left, top = int(rng.uniform(0, width - crop_w)), int(rng.uniform(0, height - crop_h))
    image = image.crop((left, top, left + crop_w, top + crop_h))
    if seed % 2:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Brightness(ImageOps.grayscale(image).convert("RGB")).enhance(0.35)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@dataclass(frozen=True)
class Setup:
    window: DriftWindow
    labels: dict[str, str]  # photo file -> its ImageNet label
    work_root: Path


@pytest.fixture(scope="module")
def setup(app_settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("retraining-e2e")
    rows = list(csv.DictReader((SHARED_PHOTOS / "labels.csv").open(encoding="utf-8")))
    # version 1 = the exported model plus a reference profile of daylight photos, published and promoted
    version_one = root / "v1"
    shutil.copytree(BASE, version_one)
    card, _ = load_card(version_one / "model.card.json")
    pipeline = ClassificationPipeline(load_classifier(version_one / "model.card.json"))
    outcomes = pipeline.classify_many([(SHARED_PHOTOS / row["filename"]).read_bytes()
                                       for row in rows[:PROFILE_PHOTOS]], top_k=1)
    profile_rows = [drift_row(o.features.to_dict(), o.predictions[0].label) for o in outcomes
                    if not isinstance(o, Exception)]
    (version_one / PROFILE_FILE).write_text(json.dumps(build_reference_profile(profile_rows, model=card)))
    (version_one / "model.card.json").write_text(
        card.model_copy(update={"reference_profile_file": PROFILE_FILE}).to_json())
    BlobModelRepository(blob_service(app_settings), "models", root / "publish-cache").publish(
        MODEL_NAME, "1", version_one, promote=True)
    labels = {row["filename"]: card.labels[int(row["class_index"])] for row in rows if row["filename"] in CLASSES}
    assert len(labels) == len(CLASSES)
    # the trusted guard set: curated daylight photos (a labels.csv folder, as model.evaluate reads it), none of
    # them an image the users corrected
    guard = root / "guard"
    guard.mkdir()
    kept = [row for row in rows if row["filename"] not in CLASSES]
    for row in kept:
        shutil.copy2(SHARED_PHOTOS / row["filename"], guard / row["filename"])
    with (guard / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    settings = {
        "COSMOS_DATABASE": DATABASE, "MODEL_SOURCE": "blob", "MODEL_NAME": MODEL_NAME,
        "MODEL_CACHE_DIR": str(root / "served"), "MODEL_REFRESH_SECONDS": "5", "MAX_UPLOAD_BYTES": "5000000",
        "RETRAIN_MODE": "local", "RETRAIN_LOCAL_PYTHON": str(MODEL_PYTHON), "RETRAIN_WORK_DIR": str(root / "work"),
        "RETRAIN_MIN_IMAGES": "20",
        "RETRAIN_TRAIN_ARGS": f"--epochs-head 1 --epochs-top 1 --batch-size 8 --seed 0 --max-regression "
                              f"{GUARD_MAX_REGRESSION}",
        "RETRAIN_GUARD_DATA": str(guard), "RETRAIN_PROMOTION": "approval",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.items():
            patch.setenv(name, value)
        dependencies.reset()
        ensure_container(cosmos_client(app_settings["COSMOS_ENDPOINT"], app_settings["COSMOS_KEY"],
                                       verify_tls=False), DATABASE, "results")
        yield Setup(last_complete_window(datetime.now(UTC) + timedelta(hours=24), 24), labels, root / "work")
    dependencies.reset()


def _upload_and_correct(api: TestClient, app_settings: dict[str, str], user: str, data: bytes, label: str
                        ) -> dict[str, Any]:
    """The user's path: upload grant, PUT to storage, the blob trigger, then the feedback route."""
    body = upload_and_classify(api, app_settings, user, data, "night.jpg")
    result = api.get(f"/api/results/{body['id']}", headers=bearer(user)).json()
    assert result["status"] == "done", result
    feedback = api.post(f"/api/results/{body['id']}/feedback", json={"label": label}, headers=bearer(user))
    assert feedback.status_code == 200, feedback.text
    return dict(result)


def test_corrections_retrain_promote_and_serve_a_better_model(setup: Setup, app_settings: dict[str, str]) -> None:
    started = time.monotonic()
    with TestClient(create_api()) as api:
        served = api.get("/api/health").json()["model"]
        assert served["version"] == "1"
        results = []
        for index, (photo, label) in enumerate(sorted(setup.labels.items())):
            for shot in range(SHOTS_PER_CLASS):
                user = f"night-{(index + shot) % 3}"
                result = _upload_and_correct(api, app_settings, user, dark_shot(SHARED_PHOTOS / photo, shot), label)
                results.append((result, label))
        served_right = sum(result["predictions"][0]["label"] == label for result, label in results)
        assert served_right <= len(results) // 4, "the served model already handles these shots: no genuine test"

        # the timer fires twice (two instances) for the window, and once more later
        future = setup.window.end + timedelta(minutes=5)
        runs = fire_timer_together(future)
        run_due_windows(past_due=False, last_run=None, now=future)
        completed = [run for run in runs if run.status == "completed"]
        assert len(completed) == 1 and completed[0].summary is not None, runs
        summary = completed[0].summary
        assert summary.drift and summary.retraining_requested and summary.retraining_job, summary

        deps = dependencies.get_components().retraining_dependencies()
        assert isinstance(deps.launcher, LocalLauncher)
        outcome = deps.launcher.wait(summary.retraining_job, timeout=420)
        record = deps.store.get(setup.window.key)
        assert record is not None, "no retraining record"
        assert record["status"] == "succeeded", (record.get("error"), outcome)
        assert record["launches"] == 1 and record["manifest"]["rows"] == len(results)
        assert [path.name for path in setup.work_root.iterdir()] == [summary.retraining_job]  # one job ran
        verdict = record["result"]
        assert verdict["published"] is True and verdict["promotable"] is True, verdict
        assert verdict["promoted"] is False and verdict["state"] == "candidate", verdict  # waits for an admin
        assert verdict["version"] == "2" and verdict["num_classes"] == 1000
        assert verdict["candidate"]["accuracy"] > verdict["current"]["accuracy"], verdict

        models = BlobModelRepository(blob_service(app_settings), "models", setup.work_root / "check")
        assert models.promoted_version(MODEL_NAME) == "1"
        admin = bearer("ops", admin=True)
        pending = api.get("/api/models", headers=admin).json()
        assert [(v["version"], v["state"]) for v in pending["versions"]] == [("1", "current"), ("2", "candidate")]
        guard = pending["versions"][1]["gates"]["guard"]
        assert guard["evaluated"] is True and guard["passed"] is True, guard
        approved = api.post(f"/api/models/{MODEL_NAME}/versions/2/promote", headers=admin)
        assert approved.status_code == 200, approved.text
        assert approved.json()["approved_by"] == "ops" and approved.json()["previous"] == "1"
        assert models.promoted_version(MODEL_NAME) == "2"

        # the running app picks the promoted version up within MODEL_REFRESH_SECONDS, without a restart
        deadline = time.monotonic() + 30
        while api.get("/api/health").json()["model"]["version"] != "2" and time.monotonic() < deadline:
            time.sleep(1)
        check = dark_shot(SHARED_PHOTOS / CLASSES[0], 100)  # a shot neither trained nor validated on
        response = api.post("/api/classify?top_k=1", content=check, headers={**bearer("night-0"),
                                                                             "content-type": "image/jpeg"})
        assert response.status_code == 200, response.text
        assert response.json()["model"]["version"] == "2"

        listing = api.get("/api/models", headers=bearer("ops", admin=True)).json()
        assert listing["served"] == {"name": MODEL_NAME, "version": "2"} and listing["latest"] == "2"
        assert [(v["version"], v["promoted"]) for v in listing["versions"]] == [("1", False), ("2", True)]
        assert listing["versions"][1]["accuracy"] == verdict["candidate"]["accuracy"]
    print(f"retraining e2e: {len(results)} corrected uploads, served right before {served_right}, candidate "
          f"{verdict['candidate']['accuracy']:.3f} vs current {verdict['current']['accuracy']:.3f}, guard "
          f"{guard['candidate']:.3f} vs {guard['current']:.3f}, "
          f"train {record.get('trainSeconds')} s, total {time.monotonic() - started:.0f} s")
