"""API keys, token exchange, revocation, account export and deletion, rate and decode limits, end to end."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from azure.cosmos import PartitionKey
from fastapi.testclient import TestClient

from functions import dependencies
from functions.blob_trigger import classify_uploaded_blob
from functions.http_api import create_api
from shared_code.cosmos import cosmos_client
from shared_code.errors import RateLimited
from tests.factories import image_bytes
from tests.integration.app_fixtures import bearer, blob_service, deliver, restore_environment

pytestmark = pytest.mark.integration

RED = image_bytes("PNG", size=(40, 40), color=(230, 20, 20))


def create_key(api: TestClient, user: str, **body: object) -> dict[str, Any]:
    response = api.post("/api/keys", json=body, headers=bearer(user))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def exchange(api: TestClient, api_key: str) -> httpx.Response:
    response: httpx.Response = api.post("/api/token", json={"api_key": api_key})
    return response


def key_bearer(api: TestClient, api_key: str) -> dict[str, str]:
    response = exchange(api, api_key)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def configured_api(app_settings: dict[str, str]) -> Iterator[Callable[..., None]]:
    """Run the app under extra settings for one test; restores the environment afterwards."""
    saved: dict[str, str | None] = {}

    def apply(**values: str) -> None:
        for name, value in values.items():
            saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        dependencies.reset()

    yield apply
    restore_environment(saved)


def test_a_key_is_shown_once_and_exchanged_for_a_short_lived_token(api: TestClient) -> None:
    created = create_key(api, "kim", name="nightly batch")
    assert created["api_key"].startswith("ick_") and created["api_key"].endswith(created["api_key"][-64:])
    assert created["scopes"] == ["classify", "results:read", "results:write"] and created["name"] == "nightly batch"
    listed = api.get("/api/keys", headers=bearer("kim")).json()["items"]
    mine = next(item for item in listed if item["id"] == created["id"])
    assert "api_key" not in mine and created["api_key"] not in json.dumps(listed)
    assert mine["last_used_at"] is None and mine["prefix"].endswith(created["id"])
    token = exchange(api, created["api_key"])
    assert token.status_code == 200, token.text
    body = token.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 15 * 60
    assert body["scope"] == "classify results:read results:write"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert api.get("/api/me", headers=headers).json() == {
        "user_id": "kim", "scopes": ["classify", "results:read", "results:write"], "via_api_key": True}
    classified = api.post("/api/classify", content=RED, headers={**headers, "Content-Type": "image/png"})
    assert classified.status_code == 200 and classified.json()["predictions"][0]["label"] == "red"
    used = next(i for i in api.get("/api/keys", headers=bearer("kim")).json()["items"] if i["id"] == created["id"])
    assert used["last_used_at"] is not None


def test_key_scopes_are_a_subset_of_the_callers_and_enforced(api: TestClient) -> None:
    reader = create_key(api, "lee", scopes=["results:read"])
    headers = key_bearer(api, reader["api_key"])
    assert api.get("/api/results", headers=headers).status_code == 200
    denied = api.post("/api/classify", content=RED, headers={**headers, "Content-Type": "image/png"})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    escalation = api.post("/api/keys", json={"scopes": ["admin"]}, headers=bearer("lee"))
    assert escalation.status_code == 403
    assert api.post("/api/keys", json={"scopes": ["root"]}, headers=bearer("lee")).status_code == 422
    assert api.post("/api/keys", json={"scopes": []}, headers=bearer("lee")).status_code == 400
    admin_made = api.post("/api/keys", json={"scopes": ["admin"]}, headers=bearer("lee", admin=True))
    assert admin_made.status_code == 201 and admin_made.json()["scopes"] == ["admin"]


def test_key_tokens_cannot_manage_keys_or_delete_the_account(api: TestClient) -> None:
    headers = key_bearer(api, create_key(api, "max")["api_key"])
    for method, path in (("POST", "/api/keys"), ("GET", "/api/keys"), ("DELETE", "/api/keys/0123456789abcdef"),
                         ("DELETE", "/api/me")):
        response = api.request(method, path, headers=headers, json={} if method == "POST" else None)
        assert response.status_code == 403, (method, path, response.text)
        assert "user token" in response.json()["error"]["message"]


def test_revocation_stops_new_exchanges_and_tokens_already_issued(api: TestClient) -> None:
    created = create_key(api, "nia")
    headers = key_bearer(api, created["api_key"])
    assert api.get("/api/me", headers=headers).status_code == 200
    assert api.delete(f"/api/keys/{created['id']}", headers=bearer("nia")).status_code == 204
    refused = exchange(api, created["api_key"])
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    revoked = api.get("/api/me", headers=headers)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]
    assert api.delete(f"/api/keys/{created['id']}", headers=bearer("nia")).status_code == 404
    assert created["id"] not in {i["id"] for i in api.get("/api/keys", headers=bearer("nia")).json()["items"]}


def test_wrong_or_malformed_keys_are_401(api: TestClient) -> None:
    real = create_key(api, "oli")["api_key"]
    wrong_secret = real[:-64] + ("0" * 64 if not real.endswith("0" * 64) else "1" * 64)
    for candidate in (wrong_secret, real + "0", real.replace("ick_", "ick-"), "ick_", "x" * 1000, real[:-1]):
        response = exchange(api, candidate)
        assert response.status_code == 401, (candidate[:40], response.text)
    assert api.post("/api/token", json={}).status_code == 422
    assert api.post("/api/token", content=b"api_key=x", headers={"Content-Type": "text/plain"}).status_code == 422


def test_export_is_a_json_download_of_all_the_callers_results(api: TestClient) -> None:
    headers = bearer("pia")
    ids = {api.post("/api/classify", content=RED, headers={**headers, "Content-Type": "image/png"}).json()["id"]
           for _ in range(3)}
    create_key(api, "pia", name="export me")
    response = api.get("/api/me/export", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="imgclass-export-pia.json"'
    export = response.json()
    assert export["user_id"] == "pia" and {r["id"] for r in export["results"]} == ids
    assert [k["name"] for k in export["api_keys"]] == ["export me"]
    assert "secret" not in response.text.lower() and "salt" not in response.text


def test_deleting_the_account_removes_blobs_results_keys_and_feedback(
        api: TestClient, app_settings: dict[str, str]) -> None:
    user = "quinn"
    headers = bearer(user)
    other = api.post("/api/classify", content=RED, headers={**bearer("quinnie"), "Content-Type": "image/png"}).json()
    for _ in range(2):
        api.post("/api/classify", content=RED, headers={**headers, "Content-Type": "image/png"})
    grant = api.post("/api/uploads", json={"filename": "a.png"}, headers=headers).json()
    put = httpx.put(grant["upload_url"], content=RED, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201
    key = create_key(api, user)
    key_headers = key_bearer(api, key["api_key"])
    client = cosmos_client(app_settings["COSMOS_ENDPOINT"], app_settings["COSMOS_KEY"], verify_tls=False)
    feedback = client.get_database_client(app_settings["COSMOS_DATABASE"]).create_container_if_not_exists(
        "feedback", partition_key=PartitionKey(path="/userId"))
    feedback.upsert_item({"id": "fb1", "userId": user, "label": "red"})
    feedback.upsert_item({"id": "fb2", "userId": "quinnie", "label": "red"})

    report = api.delete("/api/me", headers=headers)
    assert report.status_code == 200, report.text
    assert report.json() == {"blobs": 1, "results": 3, "keys": 1, "feedback": 1}
    assert api.get("/api/results", headers=headers).json()["items"] == []
    assert api.get("/api/me/export", headers=headers).json()["results"] == []
    assert api.get("/api/me", headers=key_headers).status_code == 401
    uploads = blob_service(app_settings).get_container_client("uploads")
    assert list(uploads.list_blobs(name_starts_with=f"{user}/")) == []
    assert api.get(f"/api/results/{other['id']}", headers=bearer("quinnie")).status_code == 200
    left = feedback.query_items("SELECT * FROM c WHERE c.userId = @user",
                                parameters=[{"name": "@user", "value": "quinnie"}], partition_key="quinnie")
    assert [item["id"] for item in left] == ["fb2"]
    again = api.delete("/api/me", headers=headers).json()
    assert again == {"blobs": 0, "results": 0, "keys": 0, "feedback": 0}


def test_per_user_rate_limit_answers_429_with_retry_after(configured_api: Callable[..., None]) -> None:
    configured_api(RATE_LIMIT_PER_MINUTE="6", RATE_LIMIT_BURST="3")
    with TestClient(create_api()) as client:
        statuses = [client.get("/api/me", headers=bearer("rita")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = client.get("/api/me", headers=bearer("rita"))
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 10
        assert client.get("/api/me", headers=bearer("sam")).status_code == 200  # other users are unaffected


def test_slow_decodes_are_rejected_over_http_and_in_the_blob_path(
        configured_api: Callable[..., None], app_settings: dict[str, str]) -> None:
    configured_api(DECODE_TIMEOUT_S="0.000001")
    with TestClient(create_api()) as client:
        headers = bearer("tess")
        response = client.post("/api/classify", content=RED, headers={**headers, "Content-Type": "image/png"})
        assert response.status_code == 422 and response.json()["error"]["code"] == "decode_timeout"
        grant = client.post("/api/uploads", json={"filename": "slow.png"}, headers=headers).json()
        assert httpx.put(grant["upload_url"], content=RED, headers={"x-ms-blob-type": "BlockBlob"}).status_code == 201
        classify_uploaded_blob(deliver(app_settings, grant["blob_name"]))
        result = client.get(f"/api/results/{grant['id']}", headers=headers).json()
        assert result["status"] == "rejected" and result["error"]["code"] == "decode_timeout"


def _not_near_a_window_edge() -> None:
    """Shared limits count per minute window: start well inside one, so the test sees a single window."""
    import time  # noqa: PLC0415

    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)


def test_two_instances_sharing_a_per_user_limit_hold_it_together(configured_api: Callable[..., None]) -> None:
    import uuid  # noqa: PLC0415

    configured_api(RATE_LIMIT_PER_MINUTE="6", RATE_LIMIT_BURST="6")
    _not_near_a_window_edge()
    first = dependencies.get_components().rate_limiter
    dependencies.reset()  # a second instance: its own process, its own in-memory state
    second = dependencies.get_components().rate_limiter
    assert first is not second
    subject = f"user:shared-{uuid.uuid4().hex[:8]}"
    allowed = 0
    for instance in [first, second] * 6:
        try:
            instance.check(subject)
            allowed += 1
        except RateLimited:
            continue
    assert allowed == 6


def test_token_exchange_is_limited_per_client_address_whatever_key_ids_are_tried(
        configured_api: Callable[..., None]) -> None:
    import secrets  # noqa: PLC0415

    configured_api(TOKEN_RATE_LIMIT_PER_MINUTE="4", TRUST_FORWARDED_FOR="true")
    _not_near_a_window_edge()
    address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    owner = b"guess".hex()
    with TestClient(create_api()) as client:
        statuses = []
        for _ in range(7):  # a fresh (made-up) key id every time: the per-key limit never trips
            guess = f"ick_{owner}_{secrets.token_hex(8)}_{secrets.token_hex(32)}"
            response = client.post("/api/token", json={"api_key": guess},
                                   headers={"X-Forwarded-For": f"203.0.113.9, {address}"})
            statuses.append(response.status_code)
        assert statuses == [401] * 4 + [429] * 3
        other = client.post("/api/token", json={"api_key": "ick_00_0000000000000000_" + "0" * 64},
                            headers={"X-Forwarded-For": f"{address}, 198.51.100.{secrets.randbelow(250)}"})
        assert other.status_code == 401  # another client address (the last entry is the front end's)
