"""Direct uploads: SAS grant -> PUT to Azurite -> blob trigger function -> exactly one result."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from functions import dependencies
from functions.blob_trigger import classify_uploaded_blob
from shared_code.errors import ModelUnavailable
from shared_code.inference.model_repository import ModelProvider
from shared_code.results.service import ClassificationService
from shared_code.results.store import ResultDocument
from shared_code.settings import get_settings
from tests.factories import image_bytes
from tests.integration.app_fixtures import bearer, blob_service, deliver, upload

pytestmark = pytest.mark.integration
GREEN = image_bytes("JPEG", size=(80, 60), color=(20, 230, 20))


def test_upload_grant_then_blob_trigger_gives_a_done_result(api: TestClient, app_settings: dict[str, str]) -> None:
    grant = upload(api, "carol", GREEN)
    assert grant["blob_name"].startswith("carol/") and grant["blob_name"].endswith(".jpg")
    pending = api.get(f"/api/results/{grant['id']}", headers=bearer("carol")).json()
    assert pending["status"] == "pending"
    classify_uploaded_blob(deliver(app_settings, grant["blob_name"]))
    result = api.get(f"/api/results/{grant['id']}", headers=bearer("carol")).json()
    assert result["status"] == "done" and result["predictions"][0]["label"] == "green"
    assert api.get(f"/api/results/{grant['id']}", headers=bearer("mallory")).status_code == 404


def test_grant_is_scoped_to_one_blob_under_the_callers_prefix(api: TestClient) -> None:
    grant = api.post("/api/uploads", json={"filename": "../../bob/evil.jpg"}, headers=bearer("carol")).json()
    assert grant["blob_name"].startswith("carol/") and "bob" not in grant["blob_name"]
    other_blob = grant["upload_url"].replace(grant["blob_name"], "bob/stolen.jpg")
    put = httpx.put(other_blob, content=GREEN, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 403
    refused = api.post("/api/uploads", json={"filename": "notes.txt"}, headers=bearer("carol"))
    assert refused.status_code == 400


def test_three_deliveries_and_a_crash_before_the_write_yield_one_done_result(
        api: TestClient, app_settings: dict[str, str]) -> None:
    grant = upload(api, "dave", GREEN)
    service = dependencies.get_service()
    crashes = {"left": 1}

    def crash_once(_: ResultDocument) -> None:
        if crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError("worker died after inference, before the write")

    crashing = ClassificationService(service.models, service.results, service.blobs, max_attempts=3,
                                     before_result_write=crash_once)
    client = deliver(app_settings, grant["blob_name"])
    with pytest.raises(RuntimeError):
        crashing.process_uploaded_blob(client)
    for _ in range(3):
        crashing.process_uploaded_blob(client)
    documents = list(service.results.container.query_items(
        "SELECT * FROM c WHERE c.userId = @u", parameters=[{"name": "@u", "value": "dave"}], partition_key="dave"))
    assert len(documents) == 1
    assert documents[0]["status"] == "done" and documents[0]["id"] == grant["id"]
    assert documents[0]["attempts"] == 2  # the crashed attempt and the one that wrote; duplicates were no-ops


def test_bad_blob_is_rejected_once_without_retries(api: TestClient, app_settings: dict[str, str]) -> None:
    grant = upload(api, "erin", b"this is not an image at all")
    classify_uploaded_blob(deliver(app_settings, grant["blob_name"]))  # returns normally: no host retry
    result = api.get(f"/api/results/{grant['id']}", headers=bearer("erin")).json()
    assert result["status"] == "rejected" and result["error"]["code"] == "invalid_image"


def test_a_blob_in_an_unaccepted_image_format_is_rejected_as_such(api: TestClient,
                                                                  app_settings: dict[str, str]) -> None:
    grant = upload(api, "erin", b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    classify_uploaded_blob(deliver(app_settings, grant["blob_name"]))
    result = api.get(f"/api/results/{grant['id']}", headers=bearer("erin")).json()
    assert result["status"] == "rejected" and result["error"]["code"] == "unsupported_format"
    assert "SVG" in result["error"]["message"]


def test_persistent_failure_ends_failed_and_visible(api: TestClient, app_settings: dict[str, str],
                                                    tmp_path: Path) -> None:
    grant = upload(api, "frank", GREEN)
    service = dependencies.get_service()
    model_store_down = ModelProvider(local_path=str(tmp_path / "missing.card.json"))
    broken = ClassificationService(model_store_down, service.results, service.blobs,
                                   max_attempts=get_settings().BLOB_MAX_ATTEMPTS)
    client = deliver(app_settings, grant["blob_name"])
    for _ in range(get_settings().BLOB_MAX_ATTEMPTS - 1):
        with pytest.raises(ModelUnavailable):
            broken.process_uploaded_blob(client)  # transient: raised so that the host redelivers
        assert api.get(f"/api/results/{grant['id']}", headers=bearer("frank")).json()["status"] == "pending"
    final = broken.process_uploaded_blob(client)  # last attempt: recorded as failed, not raised
    assert final is not None and final.status == "failed"
    result = api.get(f"/api/results/{grant['id']}", headers=bearer("frank")).json()
    assert result["status"] == "failed" and "3 attempts" in result["error"]["message"]


def test_delete_removes_result_and_blob(api: TestClient, app_settings: dict[str, str]) -> None:
    grant = upload(api, "gina", GREEN)
    classify_uploaded_blob(deliver(app_settings, grant["blob_name"]))
    assert api.delete(f"/api/results/{grant['id']}", headers=bearer("gina")).status_code == 204
    assert not blob_service(app_settings).get_blob_client("uploads", grant["blob_name"]).exists()


def test_a_retried_grant_with_the_same_idempotency_key_reuses_its_result(
        api: TestClient, app_settings: dict[str, str]) -> None:
    user = "idem-user"
    key = {"Idempotency-Key": "3f2b6c1e-retry-me", **bearer(user)}
    first = api.post("/api/uploads", json={"filename": "cat.jpg"}, headers=key)
    again = api.post("/api/uploads", json={"filename": "cat.jpg"}, headers=key)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["blob_name"] == first.json()["blob_name"]
    # The retried answer's URL works for the same blob; the result then completes once.
    put = httpx.put(again.json()["upload_url"], content=GREEN, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201, put.text
    classify_uploaded_blob(deliver(app_settings, again.json()["blob_name"]))
    page = api.get("/api/results", params={"page_size": 50}, headers=bearer(user)).json()
    assert [item["id"] for item in page["items"]] == [first.json()["id"]]
    assert page["items"][0]["status"] == "done"
    # The same key for another kind of file is a client bug, refused rather than silently re-pointed.
    other = api.post("/api/uploads", json={"filename": "cat.png"}, headers=key)
    assert other.status_code == 400 and "Idempotency-Key" in other.json()["error"]["message"]
    # Without a key, every request is a new upload.
    plain = [api.post("/api/uploads", json={"filename": "cat.jpg"}, headers=bearer(user)).json()["id"]
             for _ in range(2)]
    assert len(set(plain) | {first.json()["id"]}) == 3
