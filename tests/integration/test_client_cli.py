"""The command-line client against the real local Functions host (devstack.host) on free ports.

The host serves the real function_app (HTTP API through AsgiMiddleware, and the blob trigger polling Azurite),
so the client's whole path runs for real: API key -> token, upload grants, PUT to the SAS URL, the trigger
classifying the blob, polling, the CSV, and the exit status. The host gets its own Azurite (so its blob trigger
sees only this test's uploads) and its own database on the session's Cosmos server.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from devstack.emulators import start_azurite
from devstack.processes import ManagedProcess, free_port, start_background
from shared_code.cosmos import cosmos_client, ensure_container
from shared_code.identity.auth import DEFAULT_USER_SCOPES, issue_token
from shared_code.settings import get_settings
from tests.factories import image_bytes, make_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATABASE = "imgclass-cli"


@pytest.fixture(scope="module")
def host(app_settings: dict[str, str], cosmos: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m devstack.host function_app:app` on a free port; yields the API base URL."""
    workdir = tmp_path_factory.mktemp("cli-host")
    azurite = start_azurite(workdir)
    process: ManagedProcess | None = None
    try:
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
        for container in ("uploads", "models", "reports"):
            blobs.create_container(container)
        ensure_container(cosmos_client(cosmos.endpoint, cosmos.key, verify_tls=False), DATABASE, "results")
        port = free_port()
        env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string,
               "STORAGE_CONNECTION_STRING": azurite.connection_string, "COSMOS_DATABASE": DATABASE,
               "MODEL_PATH": str(make_tiny_model(workdir / "model")), "PYTHONPATH": str(PROJECT_ROOT)}
        command = [sys.executable, "-m", "devstack.host", "function_app:app", "--port", str(port),
                   "--settings", str(workdir / "no-local-settings.json"), "--blob-poll-seconds", "0.25"]
        process = start_background("host", command, log_path=workdir / "host.log", cwd=PROJECT_ROOT, env=env)
        api = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the local host did not start:\n{process.log_tail(60)}")
            time.sleep(0.25)
        yield api
    finally:
        if process is not None:
            process.stop()
        azurite.stop()


@pytest.fixture(scope="module")
def api_key(host: str) -> str:
    token = issue_token(get_settings(), "cli-user", DEFAULT_USER_SCOPES)
    response = httpx.post(f"{host}/keys", json={"name": "cli test"}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    return str(response.json()["api_key"])


def run_client(*arguments: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("IMGCLASS_API_KEY", None)
    if key is not None:
        env["IMGCLASS_API_KEY"] = key  # the environment keeps the key out of the process list
    return subprocess.run([sys.executable, "-m", "imgclass_client", *arguments], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0]) == ["file", "id", "status", "label", "score", "model_version", "error"]
    return {Path(row["file"]).name: row for row in rows}


def test_upload_a_folder_waits_for_every_result_and_writes_the_csv(host: str, api_key: str, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    (photos / "red.jpg").write_bytes(image_bytes("JPEG", color=(230, 20, 20)))
    (photos / "green.png").write_bytes(image_bytes("PNG", color=(20, 230, 20)))
    (photos / "more" / "blue.webp").write_bytes(image_bytes("WEBP", color=(20, 20, 230)))
    (photos / "notes.txt").write_text("not an image, not uploaded")
    out = tmp_path / "results.csv"
    finished = run_client("upload", str(photos), "--api", host, "--out", str(out), "--concurrency", "2",
                          "--timeout", "60", "--poll-interval", "0.25", "--progress", key=api_key)
    assert finished.returncode == 0, finished.stderr
    rows = read_rows(out)
    assert set(rows) == {"red.jpg", "green.png", "blue.webp"}
    assert {name: row["label"] for name, row in rows.items()} == {"red.jpg": "red", "green.png": "green",
                                                                  "blue.webp": "blue"}
    assert all(row["status"] == "done" and row["model_version"] == "1" and float(row["score"]) > 0.5
               and len(row["id"]) == 32 and not row["error"] for row in rows.values())
    assert "upload: 100%" in finished.stderr and "results: 100%" in finished.stderr  # both progress bars ran
    assert "3 done" in finished.stderr
    # The results are the caller's, through the API, with the token the key gives.
    token = httpx.post(f"{host}/token", json={"api_key": api_key}).json()["access_token"]
    stored = httpx.get(f"{host}/results/{rows['red.jpg']['id']}", headers={"Authorization": f"Bearer {token}"})
    assert stored.json()["status"] == "done" and stored.json()["source"] == "blob"


def test_a_rejected_image_makes_the_exit_status_non_zero(host: str, api_key: str, tmp_path: Path) -> None:
    photos = tmp_path / "mixed"
    photos.mkdir()
    (photos / "ok.png").write_bytes(image_bytes("PNG", color=(230, 20, 20)))
    (photos / "broken.jpg").write_bytes(b"this is not a JPEG")
    out = tmp_path / "mixed.csv"
    finished = run_client("upload", str(photos), "--api", host, "--out", str(out), "--timeout", "60",
                          "--poll-interval", "0.25", "--no-progress", key=api_key)
    assert finished.returncode == 1, finished.stderr
    rows = read_rows(out)
    assert rows["ok.png"]["status"] == "done"
    assert rows["broken.jpg"]["status"] == "rejected" and "invalid_image" in rows["broken.jpg"]["error"]
    assert "%|" not in finished.stderr  # --no-progress: no bars


def test_classify_sends_small_batches_over_http(host: str, api_key: str, tmp_path: Path) -> None:
    files = []
    for index, color in enumerate([(230, 20, 20), (20, 230, 20), (20, 20, 230), (5, 5, 5), (230, 20, 20)]):
        path = tmp_path / f"image{index}.png"
        path.write_bytes(image_bytes("PNG", color=color))
        files.append(str(path))
    out = tmp_path / "classified.csv"
    finished = run_client("classify", *files, "--api", host, "--out", str(out), "--batch-size", "2", key=api_key)
    assert finished.returncode == 0, finished.stderr
    rows = read_rows(out)
    assert [rows[f"image{i}.png"]["label"] for i in range(5)] == ["red", "green", "blue", "dark", "red"]
    assert all(row["status"] == "done" for row in rows.values())


def test_a_bad_key_or_missing_folder_exits_2_with_a_message(host: str, tmp_path: Path) -> None:
    (tmp_path / "one.png").write_bytes(image_bytes("PNG"))
    refused = run_client("upload", str(tmp_path), "--api", host, "--out", str(tmp_path / "x.csv"),
                         key="ick_notakey")
    assert refused.returncode == 2 and "API key was refused" in refused.stderr
    missing = run_client("upload", str(tmp_path / "nope"), "--api", host, key="ick_whatever")
    assert missing.returncode == 2 and "is not a folder" in missing.stderr
    assert not (tmp_path / "x.csv").exists()


def test_a_folder_costs_a_few_requests_not_several_per_image(host: str, api_key: str, tmp_path: Path) -> None:
    from imgclass_client.client import ApiClient, upload_folder  # noqa: PLC0415 - in-process to count requests

    photos = tmp_path / "many"
    photos.mkdir()
    colors = [(230, 20, 20), (20, 230, 20), (20, 20, 230)]
    for index in range(150):  # over the default request burst (60) if each image cost a request or more
        (photos / f"{index:03d}.png").write_bytes(image_bytes("PNG", size=(24 + index % 7, 24),
                                                              color=colors[index % 3]))
    calls: list[str] = []
    with ApiClient(host, api_key=api_key) as client:
        original = client.request

        def counted(method: str, path: str, **kwargs: Any) -> httpx.Response:
            calls.append(f"{method} {path}")
            return original(method, path, **kwargs)

        client.request = counted  # type: ignore[method-assign]
        started = time.monotonic()
        results = upload_folder(client, sorted(photos.iterdir()), timeout=60, poll_interval=0.25, progress=False)
        elapsed = time.monotonic() - started
    assert [r.status for r in results] == ["done"] * 150, {r.error for r in results}
    assert [r.label for r in results[:3]] == ["red", "green", "blue"]
    assert calls.count("POST uploads/batch") == 3 and "POST uploads" not in calls  # 16, then 100 and 34
    assert set(calls) <= {"POST uploads/batch", "POST results/query"}
    # One query per poll interval (up to QUERY_BATCH ids each), however long the server takes; the count used
    # to be a fixed bound (40), which a loaded machine broke. Never a request per image.
    rounds = elapsed / 0.25 + 1
    assert calls.count("POST results/query") <= rounds, (len(calls), elapsed)
