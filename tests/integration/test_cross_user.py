"""Per-user isolation over every route that takes an id or lists data: another user's ids are simply 404."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.factories import image_bytes
from tests.integration.app_fixtures import bearer

pytestmark = pytest.mark.integration

GREEN = image_bytes("PNG", size=(32, 32), color=(20, 230, 20))
TRAVERSAL_NAMES = ["../bob/x.jpg", "bob/x.jpg", "/bob/x.jpg", "..\\bob\\x.jpg", "../../uploads/bob/x.jpg",
                   "%2e%2e/bob/x.jpg", "alice/../bob/x.jpg", "./../bob/x.png", "bob/../../x.jpg"]


@pytest.fixture
def alices_things(api: TestClient) -> dict[str, str]:
    """A classified result, an upload grant and an API key owned by alice."""
    alice = bearer("iso-alice")
    result = api.post("/api/classify", content=GREEN, headers={**alice, "Content-Type": "image/png"}).json()
    grant = api.post("/api/uploads", json={"filename": "a.png"}, headers=alice).json()
    key = api.post("/api/keys", json={"name": "alice's"}, headers=alice).json()
    return {"result": result["id"], "upload": grant["id"], "key": key["id"], "api_key": key["api_key"]}


@pytest.mark.parametrize("admin", [False, True], ids=["user", "admin-scope"])
def test_another_user_gets_404_for_every_id_route(api: TestClient, alices_things: dict[str, str],
                                                  admin: bool) -> None:
    bob = bearer("iso-bob", admin=admin)  # the admin scope grants operations, never other users' data
    for method, path in (("GET", f"/api/results/{alices_things['result']}"),
                         ("GET", f"/api/results/{alices_things['upload']}"),
                         ("DELETE", f"/api/results/{alices_things['result']}"),
                         ("DELETE", f"/api/results/{alices_things['upload']}"),
                         ("DELETE", f"/api/keys/{alices_things['key']}")):
        response = api.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    alice = bearer("iso-alice")
    assert api.get(f"/api/results/{alices_things['result']}", headers=alice).status_code == 200
    assert api.get(f"/api/results/{alices_things['upload']}", headers=alice).json()["status"] == "pending"
    assert api.post("/api/token", json={"api_key": alices_things["api_key"]}).status_code == 200


def test_lists_and_exports_show_only_the_callers_data(api: TestClient, alices_things: dict[str, str]) -> None:
    bob = bearer("iso-bob")
    api.post("/api/classify", content=GREEN, headers={**bob, "Content-Type": "image/png"})
    listed = api.get("/api/results?page_size=100", headers=bob).json()["items"]
    assert listed and alices_things["result"] not in {item["id"] for item in listed}
    labelled = api.get("/api/results", params={"label": "green", "page_size": 100}, headers=bob).json()["items"]
    assert alices_things["result"] not in {item["id"] for item in labelled}
    assert alices_things["key"] not in {item["id"] for item in api.get("/api/keys", headers=bob).json()["items"]}
    export = api.get("/api/me/export", headers=bob).json()
    assert export["user_id"] == "iso-bob"
    assert alices_things["result"] not in {r["id"] for r in export["results"]}
    assert all(r["user_id"] == "iso-bob" for r in export["results"])


def test_deleting_one_account_leaves_the_other_intact(api: TestClient, alices_things: dict[str, str]) -> None:
    assert api.delete("/api/me", headers=bearer("iso-mallory")).status_code == 200
    alice = bearer("iso-alice")
    assert api.get(f"/api/results/{alices_things['result']}", headers=alice).status_code == 200
    assert alices_things["key"] in {item["id"] for item in api.get("/api/keys", headers=alice).json()["items"]}


@pytest.mark.parametrize("filename", TRAVERSAL_NAMES)
def test_crafted_upload_names_stay_under_the_callers_prefix(api: TestClient, filename: str) -> None:
    response = api.post("/api/uploads", json={"filename": filename}, headers=bearer("iso-alice"))
    assert response.status_code == 200, response.text
    grant = response.json()
    blob_name = grant["blob_name"]
    assert blob_name.startswith("iso-alice/") and blob_name.count("/") == 1
    assert ".." not in blob_name and "bob" not in blob_name
    assert httpx.URL(grant["upload_url"]).path.endswith(f"/uploads/{blob_name}")


def test_only_the_token_names_the_user(api: TestClient, alices_things: dict[str, str]) -> None:
    headers = {**bearer("iso-bob"), "X-User-Id": "iso-alice", "X-MS-CLIENT-PRINCIPAL-NAME": "iso-alice"}
    params = {"userId": "iso-alice", "user_id": "iso-alice", "page_size": 100}
    assert api.get("/api/me", headers=headers).json()["user_id"] == "iso-bob"
    listed = api.get("/api/results", headers=headers, params=params).json()["items"]
    assert alices_things["result"] not in {item["id"] for item in listed}
    assert api.get(f"/api/results/{alices_things['result']}", headers=headers, params=params).status_code == 404
