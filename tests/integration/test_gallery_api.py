"""Explain, gallery images, class counts and the streamed zip export, on Azurite and the Cosmos server."""

from __future__ import annotations

import base64
import csv
import gc
import io
import json
import os
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from functions import dependencies
from functions.gallery_api import export_archive
from functions.http_api import create_api
from shared_code.results.store import ModelRef, PredictionOut, ResultDocument
from tests.factories import image_bytes, make_tiny_model, with_classifier_weights
from tests.integration.app_fixtures import bearer, blob_service, restore_environment, upload_and_classify

pytestmark = pytest.mark.integration

RED = image_bytes("JPEG", size=(80, 60), color=(230, 20, 20))
GREEN = image_bytes("JPEG", size=(80, 60), color=(20, 230, 20))
BLUE = image_bytes("PNG", size=(40, 40), color=(20, 20, 230))


def assert_error(response: httpx.Response, status: int, code: str, text: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert text in body["error"]["message"]


def upload_done(api: TestClient, app_settings: dict[str, str], user: str, data: bytes, filename: str) -> str:
    """Grant, PUT to Azurite through the SAS URL, then the real blob trigger function: a `done` result."""
    return upload_and_classify(api, app_settings, user, data, filename)["id"]


def classify_http(api: TestClient, user: str, data: bytes, content_type: str = "image/jpeg") -> str:
    response = api.post("/api/classify", content=data, headers={**bearer(user), "Content-Type": content_type})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def red_square(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    image = Image.new("RGB", size, (10, 10, 10))
    image.paste((240, 10, 10), box)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def cam_api(app_settings: dict[str, str], tmp_path: Path) -> Iterator[TestClient]:
    """The app serving a tiny model that has classifier weights (the session's model has none)."""
    saved = {"MODEL_PATH": os.environ.get("MODEL_PATH")}
    os.environ["MODEL_PATH"] = str(with_classifier_weights(make_tiny_model(tmp_path / "cam", version="cam")))
    dependencies.reset()
    with TestClient(create_api()) as client:
        yield client
    restore_environment(saved)


# --- explain ----------------------------------------------------------------------------------------------
def test_explain_an_upload_returns_the_contract_in_original_pixels(cam_api: TestClient) -> None:
    data = red_square((120, 90), (70, 20, 100, 50))
    response = cam_api.post("/api/explain?label=red", headers=bearer("xena"),
                            files={"file": ("square.png", data, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"class_index", "label", "score", "model", "heatmap", "peak", "overlay_png"}
    assert (body["class_index"], body["label"]) == (1, "red") and 0 < body["score"] <= 1
    assert body["model"] == {"name": "tiny", "version": "cam"}
    heat = body["heatmap"]
    assert (heat["width"], heat["height"]) == (120, 90) and body["image"] == {"width": 120, "height": 90}
    values = np.frombuffer(base64.b64decode(heat["data"]), dtype=np.uint8).reshape(90, 120)
    assert values.max() == 255
    assert 70 <= body["peak"]["x"] < 100 and 20 <= body["peak"]["y"] < 50
    hot_y, hot_x = np.unravel_index(int(np.argmax(values)), values.shape)
    assert 70 <= hot_x < 100 and 20 <= hot_y < 50
    with Image.open(io.BytesIO(base64.b64decode(body["overlay_png"]))) as overlay:
        assert overlay.format == "PNG" and overlay.size == (120, 90)
    top1 = cam_api.post("/api/explain", headers={**bearer("xena"), "Content-Type": "image/png"}, content=data)
    assert top1.status_code == 200 and top1.json()["label"] == "dark"  # mostly dark: the default is top-1
    by_index = cam_api.post("/api/explain?class_index=3", headers={**bearer("xena"), "Content-Type": "image/png"},
                            content=data)
    assert by_index.json()["label"] == "blue"


def test_explain_png_format_returns_the_overlay(cam_api: TestClient) -> None:
    response = cam_api.post("/api/explain?format=png&label=red", headers=bearer("xena"),
                            files={"file": ("square.png", red_square((64, 64), (0, 0, 20, 20)), "image/png")})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as overlay:
        assert overlay.size == (64, 64)
        pixels = np.asarray(overlay.convert("RGB"))
        assert pixels[5, 5, 0] > pixels[60, 60, 0]  # the red corner is red and hot, the far corner dark


def test_explain_a_stored_upload_by_result_id_only_for_its_owner(cam_api: TestClient,
                                                                  app_settings: dict[str, str]) -> None:
    result_id = upload_done(cam_api, app_settings, "yara", RED, "red.jpg")
    mine = cam_api.post("/api/explain", json={"result_id": result_id, "label": "red"}, headers=bearer("yara"))
    assert mine.status_code == 200, mine.text
    assert mine.json()["label"] == "red" and mine.json()["heatmap"]["width"] == 80
    assert_error(cam_api.post("/api/explain", json={"result_id": result_id}, headers=bearer("mallory")),
                 404, "not_found")
    http_id = classify_http(cam_api, "yara", RED)
    assert_error(cam_api.post("/api/explain", json={"result_id": http_id}, headers=bearer("yara")),
                 404, "not_found", "over HTTP")
    assert_error(cam_api.post("/api/explain", json={"result_id": "../../x"}, headers=bearer("yara")), 404, "not_found")


def test_explain_errors_share_the_error_shape(cam_api: TestClient) -> None:
    headers = bearer("xena")
    assert_error(cam_api.post("/api/explain", content=b"hello", headers={**headers, "Content-Type": "text/plain"}),
                 415, "unsupported_media_type")
    assert_error(cam_api.post("/api/explain", json={"nothing": 1}, headers=headers), 400, "bad_request", "result_id")
    assert_error(cam_api.post("/api/explain?class_index=4", content=BLUE, headers={**headers, "Content-Type":
                                                                                    "image/png"}),
                 400, "bad_request", "between 0 and 3")
    assert_error(cam_api.post("/api/explain?label=purple", content=BLUE, headers={**headers, "Content-Type":
                                                                                   "image/png"}),
                 400, "bad_request", "not one of")
    assert_error(cam_api.post("/api/explain", content=b"\xff\xd8\xffgarbage", headers={**headers, "Content-Type":
                                                                                        "image/jpeg"}),
                 400, "invalid_image")
    assert_error(cam_api.post("/api/explain", content=RED, headers={"Content-Type": "image/jpeg"}), 401,
                 "unauthorized")


def test_a_model_without_classifier_weights_answers_409(api: TestClient) -> None:
    response = api.post("/api/explain", content=RED, headers={**bearer("xena"), "Content-Type": "image/jpeg"})
    assert_error(response, 409, "explanation_unavailable", "classifier.npz")


# --- gallery image and class counts -----------------------------------------------------------------------
def test_the_uploaded_image_is_streamed_to_its_owner_only(api: TestClient, app_settings: dict[str, str]) -> None:
    result_id = upload_done(api, app_settings, "zoe", BLUE, "sky.png")
    response = api.get(f"/api/results/{result_id}/image", headers=bearer("zoe"))
    assert response.status_code == 200, response.text
    assert response.content == BLUE and response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff" and "sandbox" in response.headers[
        "content-security-policy"]
    assert_error(api.get(f"/api/results/{result_id}/image", headers=bearer("mallory")), 404, "not_found")
    http_id = classify_http(api, "zoe", RED)
    assert_error(api.get(f"/api/results/{http_id}/image", headers=bearer("zoe")), 404, "not_found", "over HTTP")
    assert_error(api.get("/api/results/0123456789abcdef0123456789abcdef/image", headers=bearer("zoe")),
                 404, "not_found")
    assert_error(api.get("/api/results/nothex/image", headers=bearer("zoe")), 404, "not_found")


def test_class_counts_use_corrections_and_only_done_results(api: TestClient, app_settings: dict[str, str]) -> None:
    user = "counter"
    reds = [classify_http(api, user, RED) for _ in range(3)]
    classify_http(api, user, BLUE, "image/png")
    upload_done(api, app_settings, user, GREEN, "leaf.jpg")
    upload_done(api, app_settings, user, b"not an image", "broken.jpg")  # rejected: not counted
    corrected = api.post(f"/api/results/{reds[0]}/feedback", json={"label": "blue"}, headers=bearer(user))
    assert corrected.status_code == 200, corrected.text
    response = api.get("/api/results/classes", headers=bearer(user))  # not taken for /results/{result_id}
    assert response.status_code == 200, response.text
    assert response.json() == {"classes": [{"label": "blue", "count": 2}, {"label": "red", "count": 2},
                                           {"label": "green", "count": 1}], "total": 5}
    assert api.get("/api/results/classes", headers=bearer("nobody-yet")).json() == {"classes": [], "total": 0}


# --- export -----------------------------------------------------------------------------------------------
def read_zip(content: bytes) -> tuple[zipfile.ZipFile, list[dict[str, str]], dict[str, Any]]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    assert archive.testzip() is None  # every CRC checks out
    rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode("utf-8-sig"))))
    return archive, rows, json.loads(archive.read("manifest.json"))


def test_export_zip_has_class_folders_safe_unique_names_and_manifests(api: TestClient,
                                                                     app_settings: dict[str, str]) -> None:
    user = "exporter"
    first = upload_done(api, app_settings, user, RED, "photo.jpg")
    second = upload_done(api, app_settings, user, GREEN, "photo.jpg")  # same name, corrected to red below
    third = upload_done(api, app_settings, user, BLUE, "../../etc/=cmd|calc.png")
    upload_done(api, app_settings, user, b"not an image", "broken.jpg")  # rejected: not exported
    classify_http(api, user, RED)  # HTTP: no image kept, not exported
    upload_done(api, app_settings, "someone-else", RED, "theirs.jpg")
    assert api.post(f"/api/results/{second}/feedback", json={"label": "red"}, headers=bearer(user)).status_code == 200

    response = api.get("/api/export.zip", headers=bearer(user))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="imgclass-exporter-') and disposition.endswith('.zip"')
    archive, rows, manifest = read_zip(response.content)
    names = sorted(archive.namelist())
    assert names == ["blue/=cmd_calc.png", "manifest.csv", "manifest.json", "red/photo (2).jpg", "red/photo.jpg"]
    assert all(".." not in name and not name.startswith("/") for name in names)
    assert archive.read("red/photo.jpg") == RED and archive.read("red/photo (2).jpg") == GREEN
    assert archive.read("blue/=cmd_calc.png") == BLUE
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == {first, second, third}
    assert list(rows[0]) == ["id", "filename", "path", "predicted_label", "corrected_label", "score",
                             "model_version", "created_at"]
    assert by_id[second]["predicted_label"] == "green" and by_id[second]["corrected_label"] == "red"
    assert by_id[second]["path"] == "red/photo (2).jpg" and by_id[first]["model_version"] == "1"
    assert by_id[third]["filename"] == "../../etc/=cmd|calc.png" and float(by_id[first]["score"]) > 0.5
    assert manifest["user_id"] == user and manifest["count"] == 3 and manifest["missing"] == []
    assert {item["path"] for item in manifest["items"]} == {row["path"] for row in rows}

    only_red = api.get("/api/export.zip?label=red", headers=bearer(user))
    red_archive, red_rows, red_manifest = read_zip(only_red.content)
    assert sorted(red_archive.namelist()) == ["manifest.csv", "manifest.json", "red/photo (2).jpg", "red/photo.jpg"]
    assert red_manifest["label"] == "red" and len(red_rows) == 2
    assert "-red-" in only_red.headers["content-disposition"]
    empty = read_zip(api.get("/api/export.zip", headers=bearer("nobody-yet")).content)[0]
    assert sorted(empty.namelist()) == ["manifest.csv", "manifest.json"]


def test_a_formula_like_file_name_is_defused_in_the_csv(api: TestClient, app_settings: dict[str, str]) -> None:
    upload_done(api, app_settings, "spreadsheet", RED, "=HYPERLINK(1).jpg")
    rows = read_zip(api.get("/api/export.zip", headers=bearer("spreadsheet")).content)[1]
    assert rows[0]["filename"] == "'=HYPERLINK(1).jpg"


def test_export_memory_stays_flat_while_streaming_many_large_images(api: TestClient, app_settings: dict[str, str],
                                                                    tmp_path: Path) -> None:
    """40 images of ~500 KB (20 MB): the traced peak of the route's zip stream is a fraction of that, and does
    not grow like the export from 10 images to 40 (memory follows the chunk size, not the export size)."""
    service = dependencies.get_service()
    container = blob_service(app_settings).get_container_client("uploads")
    rng = np.random.default_rng(7)
    size = 500_000

    def make_user(user: str, count: int) -> None:
        for index in range(count):
            result_id = f"{index:032x}"
            blob_name = f"{user}/{result_id}.jpg"
            container.upload_blob(blob_name, b"\xff\xd8\xff" + rng.bytes(size - 3), overwrite=True)
            label = ["red", "green"][index % 2]
            service.results.upsert(ResultDocument(
                id=result_id, user_id=user, status="done", source="blob", filename=f"img{index % 5}.jpg",
                blob_name=blob_name, predicted_label=label, model=ModelRef(name="tiny", version="1"),
                predictions=[PredictionOut(label=label, class_index=1, score=0.9)]))

    def traced_export(user: str, target: Path) -> tuple[int, int]:
        gc.collect()
        tracemalloc.start()
        try:
            chunks = 0
            with target.open("wb") as handle:
                for chunk in export_archive(service, user, None):
                    handle.write(chunk)
                    chunks += 1
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return peak, chunks

    make_user("bulk-10", 10)
    make_user("bulk-40", 40)
    small_peak, _ = traced_export("bulk-10", tmp_path / "small.zip")
    peak, chunks = traced_export("bulk-40", tmp_path / "export.zip")
    total = 40 * size
    print(f"\nexport of 40 x {size} B = {total / 1e6:.1f} MB: peak traced memory {peak / 1e6:.2f} MB "
          f"(10 images: {small_peak / 1e6:.2f} MB), {chunks} chunks")
    # Buffering the zip would need >= 20 MB here (>= 5 MB for 10 images). tracemalloc also counts other threads
    # (SDK and test-client background work), so the bounds leave room for a few MB of unrelated allocations.
    assert peak < total / 2, f"peak {peak} bytes for a {total}-byte export: the export is not streamed"
    assert peak < 2 * small_peak + 2_000_000, "memory grew with the number of images"
    with zipfile.ZipFile(tmp_path / "export.zip") as archive:
        images = [info for info in archive.infolist() if info.filename.endswith(".jpg")]
        assert len(images) == 40 and all(info.file_size == size for info in images)
        assert len({info.filename for info in images}) == 40  # img0..img4 repeated: de-duplicated
        assert archive.testzip() is None
    assert chunks >= 40  # written as it went: at least one chunk per image
