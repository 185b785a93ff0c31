"""The HTTP API end to end on Azurite and the Cosmos server: contracts, storage, errors, isolation."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.factories import TINY_LABELS, image_bytes
from tests.integration.app_fixtures import bearer

pytestmark = pytest.mark.integration

RED = image_bytes("JPEG", size=(64, 48), color=(230, 20, 20))
BLUE = image_bytes("PNG", size=(40, 40), color=(20, 20, 230))


def assert_error(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert body["error"]["message"]


def test_health_names_the_model(api: TestClient) -> None:
    response = api.get("/api/health")
    assert response.status_code == 200
    # INFERENCE_BACKEND=auto: a fp32 model without a recorded bf16 parity runs on ONNX Runtime
    assert response.json() == {"status": "ok", "model": {"name": "tiny", "version": "1",
                                                          "backend": "onnxruntime-fp32"}}


def test_classify_multipart_returns_the_contract_and_stores_the_result(api: TestClient) -> None:
    headers = bearer("alice")
    response = api.post("/api/classify?top_k=2", files={"file": ("red.jpg", RED, "image/jpeg")}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"id", "predictions", "model"} <= set(body)
    assert body["predictions"][0]["label"] == "red" and len(body["predictions"]) == 2
    assert set(body["predictions"][0]) == {"label", "class_index", "score"}
    assert body["model"] == {"name": "tiny", "version": "1", "backend": "onnxruntime-fp32"}
    stored = api.get(f"/api/results/{body['id']}", headers=headers).json()
    assert stored["model"] == body["model"]  # the result document's model block names the engine too
    assert stored["status"] == "done" and stored["predictions"] == body["predictions"]
    assert stored["features"]["width"] == 64 and len(stored["features"]["embedding"]) == 32


def test_classify_raw_body_and_several_files(api: TestClient) -> None:
    headers = bearer("alice")
    raw = api.post("/api/classify", content=BLUE, headers={**headers, "Content-Type": "image/png"})
    assert raw.status_code == 200 and raw.json()["predictions"][0]["label"] == "blue"
    many = api.post("/api/classify", headers=headers, files=[("file", ("a.jpg", RED, "image/jpeg")),
                                                              ("file", ("b.png", BLUE, "image/png")),
                                                              ("file", ("c.txt", b"nope", "text/plain"))])
    results = many.json()["results"]
    assert [r["status"] for r in results] == ["done", "done", "rejected"]
    assert results[2]["error"]["code"] == "invalid_image"  # bytes in no image format: a broken file, not a format


def test_bad_requests_share_one_error_shape(api: TestClient) -> None:
    headers = bearer("alice")
    assert_error(api.post("/api/classify", content=RED, headers={"Content-Type": "image/jpeg"}), 401, "unauthorized")
    assert_error(api.post("/api/classify", content=RED, headers={**headers, "Authorization": "Bearer x.y.z"}),
                 401, "unauthorized")
    assert_error(api.post("/api/classify", content=b"{}", headers={**headers, "Content-Type": "application/json"}),
                 415, "unsupported_media_type")
    assert_error(api.post("/api/classify", content=b"\xff\xd8\xff" + b"\0" * 250_000,
                          headers={**headers, "Content-Type": "image/jpeg"}), 413, "payload_too_large")
    undecodable = api.post("/api/classify", content=b"\xff\xd8\xff\xe0garbage",
                           headers={**headers, "Content-Type": "image/jpeg"})
    assert_error(undecodable, 400, "invalid_image")
    assert "JPEG" in undecodable.json()["error"]["message"]
    assert_error(api.get("/api/results/does-not-exist", headers=headers), 404, "not_found")
    assert_error(api.post("/api/classify", headers=headers, files={"other": ("a.jpg", RED, "image/jpeg")}),
                 400, "bad_request")
    too_many = [("file", (f"{i}.jpg", RED, "image/jpeg")) for i in range(5)]
    assert_error(api.post("/api/classify", headers=headers, files=too_many), 413, "payload_too_large")
    assert_error(api.get("/api/results?page_size=0", headers=headers), 422, "validation_error")


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "application/octet-stream"])
def test_bytes_that_are_no_image_answer_400_with_a_message_on_the_raw_path(api: TestClient, content_type: str) -> None:
    response = api.post("/api/classify", content=b"not an image",
                        headers={**bearer("contract"), "Content-Type": content_type})
    assert_error(response, 400, "invalid_image")
    assert "not a supported image" in response.json()["error"]["message"]


def test_bytes_that_are_no_image_answer_400_as_a_multipart_file(api: TestClient) -> None:
    response = api.post("/api/classify", headers=bearer("contract"),
                        files={"file": ("photo.jpg", b"not an image", "image/jpeg")})
    assert_error(response, 400, "invalid_image")
    assert "JPEG" in response.json()["error"]["message"]  # the message names the accepted formats


def test_a_recognised_but_unaccepted_format_and_a_non_image_type_stay_415(api: TestClient) -> None:
    headers = bearer("contract")
    for raw_type in ("image/svg+xml", "image/png"):
        svg = api.post("/api/classify", content=SVG, headers={**headers, "Content-Type": raw_type})
        assert_error(svg, 415, "unsupported_format")
        assert "SVG" in svg.json()["error"]["message"]
    assert_error(api.post("/api/classify", headers=headers, files={"file": ("a.svg", SVG, "image/svg+xml")}),
                 415, "unsupported_format")
    assert_error(api.post("/api/classify", content=b"not an image", headers={**headers, "Content-Type": "text/plain"}),
                 415, "unsupported_media_type")


def test_results_are_listed_newest_first_paged_and_filtered(api: TestClient) -> None:
    headers = bearer("lister")
    ids = [api.post("/api/classify", content=data, headers={**headers, "Content-Type": "image/png"}).json()["id"]
           for data in (BLUE, RED, BLUE, RED, BLUE)]
    seen: list[str] = []
    continuation = None
    while True:
        params = {"page_size": 2, **({"continuation": continuation} if continuation else {})}
        page = api.get("/api/results", params=params, headers=headers).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        continuation = page["continuation"]
        if not continuation:
            break
    assert seen == list(reversed(ids))
    blue = api.get("/api/results", params={"label": "blue"}, headers=headers).json()["items"]
    assert {item["id"] for item in blue} == {ids[0], ids[2], ids[4]}
    bad = api.get("/api/results", params={"continuation": "%%%not-a-token"}, headers=headers)
    assert bad.status_code == 400
    assert_error(api.get("/api/results", params={"continuation": ""}, headers=headers), 400, "bad_request")


def test_users_never_see_or_delete_each_others_results(api: TestClient) -> None:
    alice, bob = bearer("alice"), bearer("bob")
    result_id = api.post("/api/classify", content=RED, headers={**alice, "Content-Type": "image/jpeg"}).json()["id"]
    assert api.get(f"/api/results/{result_id}", headers=bob).status_code == 404
    assert api.delete(f"/api/results/{result_id}", headers=bob).status_code == 404
    assert result_id not in {i["id"] for i in api.get("/api/results", headers=bob).json()["items"]}
    assert api.delete(f"/api/results/{result_id}", headers=alice).status_code == 204
    assert api.get(f"/api/results/{result_id}", headers=alice).status_code == 404


def test_openapi_document_links_results_and_names_the_served_labels(api: TestClient) -> None:
    document = api.get("/api/openapi.json").json()
    paths = document["paths"]
    operation_ids = {op["operationId"] for item in paths.values() for op in item.values()}
    for source, method in (("/api/uploads", "post"), ("/api/results", "get")):
        links = paths[source][method]["responses"]["200"]["links"]
        assert set(links) == {"GetResult", "DeleteResult", "GetResultImage", "GiveFeedback"}
        assert all(link["operationId"] in operation_ids for link in links.values())
    assert paths["/api/uploads"]["post"]["responses"]["200"]["links"]["GetResult"]["parameters"] == {
        "result_id": "$response.body#/id"}
    label = document["components"]["schemas"]["FeedbackCreate"]["properties"]["label"]
    assert label["enum"] == TINY_LABELS and label["examples"] == TINY_LABELS[:1]  # the served model's classes
    multipart = paths["/api/classify"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert multipart["properties"]["file"]["minItems"] == 1 and multipart["properties"]["file"]["maxItems"] == 4


@pytest.mark.parametrize(("filename", "accepted"), [
    ("cat.jpg", True), ("CAT.JPEG", True), ("a.b.webp", True), ("..png", True), ("noext", False),
    (".jpg", False), ("dir/.png", False), ("cat.jpg/", False), ("cat.svg", False), ("cat.jp g", False),
])
def test_the_upload_filename_rule_is_the_documented_pattern(api: TestClient, filename: str, accepted: bool) -> None:
    import re  # noqa: PLC0415 - only this test reads the pattern

    pattern = api.get("/api/openapi.json").json()["components"]["schemas"]["UploadCreate"]["properties"][
        "filename"]["pattern"]
    assert bool(re.search(pattern, filename)) is accepted
    response = api.post("/api/uploads", json={"filename": filename}, headers=bearer("namer"))
    assert response.status_code == (200 if accepted else 400), response.text


def test_openapi_document_describes_the_routes(api: TestClient) -> None:
    paths = api.get("/api/openapi.json").json()["paths"]
    assert {"/api/health", "/api/classify", "/api/uploads", "/api/results", "/api/results/{result_id}"} <= set(paths)


def test_openapi_documents_the_409_of_every_route_that_creates_during_an_erasure(api: TestClient) -> None:
    """Creating routes answer 409 `account_erased` when the account is erased mid-request (schemathesis found it
    undocumented once both changes met)."""
    paths = api.get("/api/openapi.json").json()["paths"]
    for path in ("/api/classify", "/api/uploads", "/api/uploads/batch", "/api/keys"):
        assert "409" in paths[path]["post"]["responses"], path
