"""Drift on a fresh running stack with no `make drift-profile`: the first window of traffic becomes the baseline.

`devstack.stack up` on free ports serving a model without a reference profile; a first window of real photos
(../shared/imagenet-sample) becomes the version's baseline, and a second window of the same photos darkened
(an underexposed camera) gets a drift report that names brightness. Everything goes through the HTTP API.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from PIL import Image, ImageEnhance

from devstack.emulators import connection_string
from devstack.processes import free_port
from shared_code.monitoring.window import last_complete_window
from tests.e2e.test_running_stack import PROJECT_ROOT, SIGNING_KEY, stack, stop_and_check_nothing_is_left
from tests.factories import SHARED_PHOTOS, make_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BASELINE_IMAGES = 48
BATCH = 16  # MAX_IMAGES_PER_REQUEST


def token(user: str, scope: str) -> str:
    now = int(time.time())
    claims = {"iss": "imgclass-local", "aud": "imgclass-api", "sub": user, "iat": now, "nbf": now, "exp": now + 900,
              "scope": scope}
    return jwt.encode(claims, SIGNING_KEY, algorithm="HS256")


def photos(start: int, count: int, *, dim: float = 1.0) -> list[tuple[str, bytes]]:
    paths = sorted(SHARED_PHOTOS.glob("*.JPEG"))[start:start + count]
    encoded = []
    for path in paths:
        with Image.open(path) as image:
            picture = image.convert("RGB")
            picture.thumbnail((256, 256))
            if dim != 1.0:
                picture = ImageEnhance.Brightness(picture).enhance(dim)
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=90)
            encoded.append((path.name, buffer.getvalue()))
    return encoded


def send(api: str, headers: dict[str, str], batch: list[tuple[str, bytes]]) -> None:
    for i in range(0, len(batch), BATCH):
        files = [("file", (name, data, "image/jpeg")) for name, data in batch[i:i + BATCH]]
        for _ in range(5):  # a loaded machine may answer 503 (a dependency busy) or 429: retry as a client does
            response = httpx.post(f"{api}/classify?top_k=1", headers=headers, files=files, timeout=120)
            if response.status_code not in (429, 503):
                break
            time.sleep(float(response.headers.get("Retry-After", "1")))
        assert response.status_code == 200, (response.status_code, response.text)


def run_window(api: str, admin: dict[str, str], window: str) -> dict[str, object]:
    response = httpx.post(f"{api}/drift/run", headers=admin, json={"window": window}, timeout=180)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    assert body["status"] == "completed", body
    return body


def test_first_window_becomes_the_baseline_and_a_dark_second_window_reports_drift(tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: the stack's emulators need it")
    if len(list(SHARED_PHOTOS.glob("*.JPEG"))) < 2 * BASELINE_IMAGES:
        pytest.skip(f"{SHARED_PHOTOS} is not available (needs {2 * BASELINE_IMAGES} photos)")
    ports = {name: free_port() for name in ("blob", "queue", "table", "cosmos", "api")}
    storage = connection_string(ports["blob"], ports["queue"], ports["table"])
    sample = json.loads((PROJECT_ROOT / "local.settings.sample.json").read_text())
    sample["Values"].update({
        "AzureWebJobsStorage": storage, "STORAGE_CONNECTION_STRING": storage,
        "COSMOS_ENDPOINT": f"https://127.0.0.1:{ports['cosmos']}", "AUTH_SIGNING_KEY": SIGNING_KEY,
        "MODEL_PATH": str(make_tiny_model(tmp_path / "model", version="fresh")),  # no reference profile
        "DRIFT_BASELINE_MIN_IMAGES": str(BASELINE_IMAGES), "DRIFT_BASELINE_DAYS": "0",
    })
    (tmp_path / "local.settings.sample.json").write_text(json.dumps(sample))
    started = stack(tmp_path, ports, "up", "--timeout", "120")
    api = f"http://127.0.0.1:{ports['api']}/api"
    user = {"Authorization": f"Bearer {token('oscar', 'classify results:read')}"}
    admin = {"Authorization": f"Bearer {token('ops', 'admin')}"}
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        # window 1: the day's traffic so far (the stack is fresh: it is all this version has seen)
        send(api, user, photos(0, BASELINE_IMAGES))
        day = last_complete_window(datetime.now(UTC) + timedelta(hours=24), 24)
        first = run_window(api, admin, day.id)
        summary = first["summary"]
        assert isinstance(summary, dict)
        assert summary["status"] == "baseline" and summary["drift"] is False
        assert summary["reference"]["source"] == "baseline" and summary["reference"]["state"] == "complete"
        assert summary["reference"]["rows"] == BASELINE_IMAGES

        # window 2: the current hour, now with dark photos; only rows after the baseline are compared
        before = last_complete_window(datetime.now(UTC) + timedelta(hours=1), 1)
        send(api, user, photos(BASELINE_IMAGES, BASELINE_IMAGES, dim=0.35))
        hour = last_complete_window(datetime.now(UTC) + timedelta(hours=1), 1)
        second_window = hour.id if hour == before else day.id  # crossed an hour: the day holds both
        second = run_window(api, admin, second_window)["summary"]
        assert isinstance(second, dict)
        assert second["status"] == "ok" and second["reference"]["source"] == "baseline"
        assert second["current_rows"] == BASELINE_IMAGES and second["reference_rows"] == BASELINE_IMAGES
        assert second["drift"] is True and "brightness" in second["signals"], second

        listing = httpx.get(f"{api}/drift/reports", headers=admin, timeout=30).json()["items"]
        by_key = {item["window_key"]: item for item in listing}
        assert by_key[second["window_key"]]["drift"] is True
        assert by_key[second["window_key"]]["reference_source"] == "baseline"
        report = httpx.get(f"{api}{by_key[second['window_key']]['report_url'].removeprefix('/api')}",
                           headers=admin, timeout=30)
        assert report.status_code == 200 and "DRIFT" in report.text
    finally:
        stop_and_check_nothing_is_left(tmp_path, ports)
