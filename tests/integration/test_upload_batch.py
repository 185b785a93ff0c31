"""Folder uploads on Azurite and the Cosmos server: many grants and many results per request, limits per image."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from functions import dependencies
from functions.blob_trigger import classify_uploaded_blob
from functions.http_api import create_api
from tests.factories import image_bytes
from tests.integration.app_fixtures import bearer, deliver, restore_environment

pytestmark = pytest.mark.integration
RED = image_bytes("JPEG", size=(64, 48), color=(230, 20, 20))
GREEN = image_bytes("PNG", size=(40, 40), color=(20, 230, 20))


@pytest.fixture
def configured(app_settings: dict[str, str]) -> Iterator[Callable[..., TestClient]]:
    """configured(**settings): a client of the app under those settings (restored afterwards)."""
    saved: dict[str, str | None] = {}
    clients: list[TestClient] = []

    def make(**values: str) -> TestClient:
        for name, value in values.items():
            saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        dependencies.reset()
        client = TestClient(create_api())
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    restore_environment(saved)


def batch(files: list[tuple[str, str | None]]) -> dict[str, list[dict[str, str | None]]]:
    return {"files": [{"filename": name, "idempotency_key": key} for name, key in files]}


def test_batch_grants_then_one_query_reports_every_result(api: TestClient, app_settings: dict[str, str]) -> None:
    headers = bearer("batch-ann")
    keys = [uuid.uuid4().hex for _ in range(3)]
    granted = api.post("/api/uploads/batch", headers=headers,
                       json=batch([("a.jpg", keys[0]), ("b.png", keys[1]), ("c.jpg", keys[2])]))
    assert granted.status_code == 200, granted.text
    items = granted.json()["items"]
    assert [set(item) for item in items] == [{"id", "upload_url", "blob_name", "expires_at", "result_url"}] * 3
    assert [item["blob_name"].rsplit(".", 1)[1] for item in items] == ["jpg", "png", "jpg"]
    for item, data in zip(items[:2], (RED, GREEN), strict=True):
        assert httpx.put(item["upload_url"], content=data, headers={"x-ms-blob-type": "BlockBlob"}).status_code == 201
        classify_uploaded_blob(deliver(app_settings, item["blob_name"]))

    # a retried batch (its answer lost) maps every file to the same result and blob
    again = api.post("/api/uploads/batch", headers=headers,
                     json=batch([("a.jpg", keys[0]), ("b.png", keys[1]), ("c.jpg", keys[2])])).json()["items"]
    assert [i["id"] for i in again] == [i["id"] for i in items]
    assert [i["blob_name"] for i in again] == [i["blob_name"] for i in items]

    other = api.post("/api/uploads", headers=bearer("batch-bob"), json={"filename": "x.jpg"}).json()["id"]
    asked = [items[2]["id"], items[0]["id"], "0" * 32, other, "not-an-id", items[1]["id"], items[0]["id"]]
    answer = api.post("/api/results/query", headers=headers, json={"ids": asked})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(r["id"], r["status"]) for r in body["items"]] == [
        (items[2]["id"], "pending"), (items[0]["id"], "done"), (items[1]["id"], "done")]
    assert [r["predicted_label"] for r in body["items"][1:]] == ["red", "green"]
    assert body["missing"] == ["0" * 32, other, "not-an-id"]  # another user's result is as good as unknown


def test_batch_without_keys_and_the_single_file_contract_still_work(api: TestClient) -> None:
    headers = bearer("batch-cid")
    first = api.post("/api/uploads/batch", headers=headers, json=batch([("a.jpg", None), ("a.jpg", None)]))
    assert first.status_code == 200
    assert len({item["id"] for item in first.json()["items"]}) == 2
    single = api.post("/api/uploads", headers=headers, json={"filename": "one.jpg"})
    assert single.status_code == 200 and set(single.json()) >= {"id", "upload_url", "result_url"}


def test_bad_batches_and_queries_answer_4xx(configured: Callable[..., TestClient]) -> None:
    client = configured(MAX_UPLOADS_PER_REQUEST="3", MAX_RESULT_IDS_PER_REQUEST="2")
    headers = bearer("batch-dee")
    too_many = client.post("/api/uploads/batch", headers=headers, json=batch([(f"{i}.jpg", None) for i in range(4)]))
    assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "payload_too_large"
    assert client.post("/api/uploads/batch", headers=headers, json={"files": []}).status_code == 422
    assert client.post("/api/uploads/batch", headers=headers,
                       json=batch([("a.jpg", "bad key with spaces")])).status_code == 422
    assert client.post("/api/uploads/batch", headers=headers, json=batch([("notes.txt", None)])).status_code == 400
    assert client.post("/api/results/query", headers=headers, json={"ids": ["a", "b", "c"]}).status_code == 413
    assert client.post("/api/results/query", headers=headers, json={"ids": []}).status_code == 422
    assert client.post("/api/results/query", json={"ids": ["a"]}).status_code == 401
    assert client.post("/api/uploads/batch", json=batch([("a.jpg", None)])).status_code == 401


def test_limits_count_images_granted_not_requests(configured: Callable[..., TestClient]) -> None:
    # one image a minute refills: a slow (loaded) machine cannot refill a token between the two requests
    client = configured(RATE_LIMIT_PER_MINUTE="6", RATE_LIMIT_BURST="3", RATE_LIMIT_IMAGES_PER_MINUTE="1",
                        RATE_LIMIT_IMAGES_BURST="10")
    headers = bearer("batch-eve")
    # ten images in one request: one request and ten images; a per-request count alone would allow 3 files
    assert client.post("/api/uploads/batch", headers=headers,
                       json=batch([(f"{i}.jpg", None) for i in range(10)])).status_code == 200
    limited = client.post("/api/uploads", headers=headers, json={"filename": "eleventh.jpg"})
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # polling is a request, not images: it still goes through
    assert client.post("/api/results/query", headers=headers, json={"ids": ["0" * 32]}).status_code == 200
    over = client.post("/api/uploads/batch", headers=bearer("batch-fay"),
                       json=batch([(f"{i}.jpg", None) for i in range(11)]))
    assert over.status_code == 413  # more than the image burst can never pass: told to split, not to wait
