"""Uploads above MAX_UPLOAD_BYTES: the triggers learn the size from the blob's properties and never download it.

A SAS cannot cap a blob's size (and create/write also allows Put Blob From URL), so the limit holds only if the
trigger reads properties first. The blob triggers take the blob extension's `BlobClient` (what the host passes
for an SDK-typed parameter), built here exactly as the host has the extension build it.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from functions.blob_trigger import classify_uploaded_blob, reject_oversized_upload
from tests.factories import image_bytes
from tests.integration.app_fixtures import bearer, blob_service, deliver, upload
from tests.integration.test_hostile_images import PeakRss

BIG = 48 * 1024 * 1024  # far above the test stack's MAX_UPLOAD_BYTES (200000)
GROWTH_LIMIT_MIB = 16.0  # a download would need at least BIG bytes
GREEN_PNG = image_bytes("PNG", size=(32, 32), color=(20, 230, 20))


def test_an_oversized_upload_is_rejected_without_being_read(api: TestClient, app_settings: dict[str, str]) -> None:
    grant = upload(api, "olga", b"\xff\xd8" + b"\0" * 64)
    blob_service(app_settings).get_blob_client("uploads", grant["blob_name"]).upload_blob(
        b"\0" * BIG, overwrite=True)  # as a client with the grant could: the SAS allows any size
    with PeakRss() as memory:
        classify_uploaded_blob(deliver(app_settings, grant["blob_name"]))
    result = api.get(f"/api/results/{grant['id']}", headers=bearer("olga")).json()
    assert result["status"] == "rejected" and result["error"]["code"] == "image_too_large", result
    assert f"the blob has {BIG} bytes; the limit is 200000" in result["error"]["message"]
    assert memory.growth_mib < GROWTH_LIMIT_MIB, f"{memory.growth_mib:.1f} MiB: the blob was downloaded"


def test_the_oversized_route_rejects_from_properties_and_leaves_small_blobs_to_the_classifier(
        api: TestClient, app_settings: dict[str, str]) -> None:
    big = upload(api, "oscar", b"\0" * 300_000)
    with PeakRss() as memory:
        reject_oversized_upload(deliver(app_settings, big["blob_name"]))
    rejected = api.get(f"/api/results/{big['id']}", headers=bearer("oscar")).json()
    assert rejected["status"] == "rejected" and rejected["error"]["code"] == "image_too_large"
    assert memory.growth_mib < GROWTH_LIMIT_MIB

    # An event routed here whose blob was overwritten by a small image meanwhile: that version has its own
    # event to the classifier, so this function records nothing and the result waits for it.
    small = upload(api, "oscar", b"\0" * 300_000, filename="again.png")
    blob_service(app_settings).get_blob_client("uploads", small["blob_name"]).upload_blob(GREEN_PNG, overwrite=True)
    assert reject_oversized_upload(deliver(app_settings, small["blob_name"])) is None
    assert api.get(f"/api/results/{small['id']}", headers=bearer("oscar")).json()["status"] == "pending"
    classify_uploaded_blob(deliver(app_settings, small["blob_name"]))
    assert api.get(f"/api/results/{small['id']}", headers=bearer("oscar")).json()["status"] == "done"


def test_a_blob_gone_before_its_delivery_records_nothing(api: TestClient, app_settings: dict[str, str]) -> None:
    grant = upload(api, "otto", GREEN_PNG)
    client = deliver(app_settings, grant["blob_name"])
    blob_service(app_settings).get_blob_client("uploads", grant["blob_name"]).delete_blob()
    classify_uploaded_blob(client)  # returns normally: nothing to retry
    assert api.get(f"/api/results/{grant['id']}", headers=bearer("otto")).json()["status"] == "pending"
