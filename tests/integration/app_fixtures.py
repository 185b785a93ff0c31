"""Fixtures that wire the real function app to Azurite and the Cosmos server started by the tests."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobClient, BlobServiceClient
from fastapi.testclient import TestClient

from devstack.sdk_bindings import blob_sdk_object
from functions import dependencies
from functions.blob_trigger import classify_uploaded_blob
from functions.drift_timer import run_due_windows
from functions.http_api import create_api
from shared_code.cosmos import cosmos_client, ensure_container
from shared_code.identity.auth import ALL_SCOPES, DEFAULT_USER_SCOPES, issue_token
from shared_code.monitoring.drift import DriftRun
from shared_code.settings import get_settings
from tests.factories import make_tiny_model

SIGNING_KEY = "integration-test-signing-key-0123456789abcdef"


@pytest.fixture(scope="session")
def app_settings(azurite: Any, cosmos: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment for the app: emulator endpoints, a tiny real model, local auth."""
    model_card = make_tiny_model(tmp_path_factory.mktemp("model"))
    values = {
        "AzureWebJobsStorage": azurite.connection_string,
        "STORAGE_CONNECTION_STRING": azurite.connection_string,
        "COSMOS_ENDPOINT": cosmos.endpoint, "COSMOS_KEY": cosmos.key, "COSMOS_VERIFY_TLS": "false",
        "COSMOS_DATABASE": "imgclass-test", "COSMOS_RESULTS_CONTAINER": "results",
        "MODEL_SOURCE": "local", "MODEL_PATH": str(model_card), "AUTH_MODE": "local",
        "AUTH_SIGNING_KEY": SIGNING_KEY, "MAX_UPLOAD_BYTES": "200000", "MAX_IMAGES_PER_REQUEST": "4",
        "BLOB_MAX_ATTEMPTS": "3", "APPLICATIONINSIGHTS_CONNECTION_STRING": "",
        "TOKEN_RATE_LIMIT_PER_MINUTE": "1000",  # many tests exchange keys from the one test client address
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    dependencies.reset()
    client = cosmos_client(cosmos.endpoint, cosmos.key, verify_tls=False)
    ensure_container(client, "imgclass-test", "results")
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    for container in ("uploads", "models", "reports"):
        if not blobs.get_container_client(container).exists():
            blobs.create_container(container)
    yield values
    restore_environment(saved)


def restore_environment(saved: dict[str, str | None]) -> None:
    """Put back environment variables saved before a test changed them, and forget cached settings."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    dependencies.reset()


@pytest.fixture
def api(app_settings: dict[str, str]) -> Iterator[TestClient]:
    dependencies.reset()
    with TestClient(create_api()) as client:
        yield client
    dependencies.reset()


def bearer(user: str, *, admin: bool = False) -> dict[str, str]:
    token = issue_token(get_settings(), user, ALL_SCOPES if admin else DEFAULT_USER_SCOPES)
    return {"Authorization": f"Bearer {token}"}


def blob_service(app_settings: dict[str, str]) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(app_settings["STORAGE_CONNECTION_STRING"])


def model_dir(app_settings: dict[str, str]) -> Path:
    return Path(app_settings["MODEL_PATH"]).parent


@pytest.fixture(scope="session")
def app_functions(app_settings: dict[str, str]) -> dict[str, Any]:
    """The real function_app's functions by name (`get_functions()` may run only once per process)."""
    import function_app  # noqa: PLC0415 - imported after the settings are in the environment

    return {str(fn.get_function_name()): fn for fn in function_app.app.get_functions()}


def upload(api: TestClient, user: str, data: bytes, filename: str = "photo.jpg") -> dict[str, str]:
    """A client's direct upload: an upload grant from the API, then a PUT to Azurite through its SAS URL."""
    grant = api.post("/api/uploads", json={"filename": filename}, headers=bearer(user))
    assert grant.status_code == 200, grant.text
    body: dict[str, str] = grant.json()
    put = httpx.put(body["upload_url"], content=data, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201, put.text
    return body


def deliver(app_settings: dict[str, str], blob_name: str) -> BlobClient:
    """What the Functions host hands the blob trigger: the blob extension's client for the blob, built from the
    `AzureWebJobsStorage` setting (SDK-type binding; the host reads no content)."""
    assert app_settings["AzureWebJobsStorage"]
    client: BlobClient = blob_sdk_object(connection="AzureWebJobsStorage", container="uploads", blob_name=blob_name)
    return client


def upload_and_classify(api: TestClient, app_settings: dict[str, str], user: str, data: bytes,
                        filename: str = "photo.jpg") -> dict[str, str]:
    """The whole direct-upload path: grant, PUT, then the real blob trigger function on the stored blob."""
    body = upload(api, user, data, filename)
    classify_uploaded_blob(deliver(app_settings, body["blob_name"]))
    return body


def fire_timer_together(now: datetime, instances: int = 2, timeout: float = 120.0) -> list[DriftRun]:
    """The drift timer fired by several instances at the same moment (threads released together); all runs."""
    start = threading.Barrier(instances)
    runs: list[DriftRun] = []

    def fire() -> None:
        start.wait()
        runs.extend(run_due_windows(past_due=False, last_run=None, now=now))

    threads = [threading.Thread(target=fire) for _ in range(instances)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return runs
