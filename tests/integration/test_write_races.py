"""Nothing lost, nothing resurrected: conditional writes under interleavings that lose data with blind upserts.

Two workers are two service instances over the same stores; an interleaving is forced with the service's
fault seam (`before_result_write`) or a store whose read hands control to another worker right after it read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from functions import dependencies
from shared_code.errors import AccountErased
from shared_code.identity import erasure
from shared_code.identity.account import AccountService
from shared_code.identity.erasure import ErasureLog
from shared_code.results.blob_store import read_uploaded_version
from shared_code.results.service import BlobEvent, ClassificationService, UploadedFile
from shared_code.results.store import ResultDocument, ResultsStore
from shared_code.settings import Settings, get_settings
from tests.factories import image_bytes
from tests.integration.app_fixtures import bearer, blob_service, deliver, upload

pytestmark = pytest.mark.integration
GREEN = image_bytes("JPEG", size=(80, 60), color=(20, 230, 20))
RED = image_bytes("JPEG", size=(80, 60), color=(230, 20, 20))
REPO = Path(__file__).resolve().parents[2]


class WorkerKilled(BaseException):
    """The process dies (out of memory, timeout): no `except Exception` in the app runs."""


class ReadThenYield(ResultsStore):
    """A store whose first read of a result hands control to `then` before returning what it read."""

    def __init__(self, store: ResultsStore, then: Callable[[], None]) -> None:
        super().__init__(store.container)
        self._then: Callable[[], None] | None = then

    def find(self, user_id: str, result_id: str) -> ResultDocument | None:
        document = super().find(user_id, result_id)
        if self._then is not None:
            then, self._then = self._then, None
            then()
        return document


def event_of(app_settings: dict[str, str], blob_name: str) -> BlobEvent:
    """The event of the blob's current version as the trigger reads it (its bytes held, as a slow worker would)."""
    version = read_uploaded_version(deliver(app_settings, blob_name), int(app_settings["MAX_UPLOAD_BYTES"]))
    assert version is not None
    return BlobEvent.of(version)


def user_documents(service: ClassificationService, user: str) -> list[dict[str, Any]]:
    return list(service.results.container.query_items(
        "SELECT * FROM c WHERE c.userId = @u", parameters=[{"name": "@u", "value": user}], partition_key=user))


def user_blobs(app_settings: dict[str, str], user: str) -> list[str]:
    uploads = blob_service(app_settings).get_container_client("uploads")
    return [blob.name for blob in uploads.list_blobs(name_starts_with=f"{user}/")]


def test_a_duplicate_delivery_finishing_after_a_correction_keeps_the_correction(
        api: TestClient, app_settings: dict[str, str]) -> None:
    user = "race-correct"
    grant = upload(api, user, GREEN)
    service = dependencies.get_service()
    event = event_of(app_settings, grant["blob_name"])

    def other_delivery_finishes_and_the_user_corrects(_: ResultDocument) -> None:
        ClassificationService(service.models, service.results, service.blobs).process_blob(event)
        fixed = api.post(f"/api/results/{grant['id']}/feedback", json={"label": "blue"}, headers=bearer(user))
        assert fixed.status_code == 200, fixed.text

    slow = ClassificationService(service.models, service.results, service.blobs,
                                 before_result_write=other_delivery_finishes_and_the_user_corrects)
    slow.process_blob(event)  # the duplicate delivery, still working when the first one finished
    result = api.get(f"/api/results/{grant['id']}", headers=bearer(user)).json()
    assert result["status"] == "done"
    assert result["corrected_label"] == "blue"


def test_two_versions_racing_on_two_workers_leave_the_newer_result(
        api: TestClient, app_settings: dict[str, str]) -> None:
    user = "race-versions"
    grant = upload(api, user, GREEN)
    old = event_of(app_settings, grant["blob_name"])
    blob_service(app_settings).get_blob_client("uploads", grant["blob_name"]).upload_blob(RED, overwrite=True)
    new = event_of(app_settings, grant["blob_name"])
    service = dependencies.get_service()
    worker_b = ClassificationService(service.models, service.results, service.blobs)
    # Worker A read the result, then worker B processed the newer version completely, then A went on.
    def worker_b_processes_the_newer_version() -> None:
        worker_b.process_blob(new)

    racing_store = ReadThenYield(service.results, worker_b_processes_the_newer_version)
    worker_a = ClassificationService(service.models, racing_store, service.blobs)
    worker_a.process_blob(old)
    worker_a.process_blob(old)  # and a redelivery of the old event changes nothing either
    stored = service.results.find(user, grant["id"])
    assert stored is not None
    assert (stored.status, stored.blob_etag, stored.predicted_label) == ("done", new.etag, "red")


def test_erasure_during_processing_and_a_redelivery_afterwards_leave_nothing_of_the_user(
        api: TestClient, app_settings: dict[str, str]) -> None:
    user = "erase-inflight"
    headers = bearer(user)
    grant = upload(api, user, GREEN)
    late_grant = api.post("/api/uploads", json={"filename": "late.jpg"}, headers=headers).json()
    assert api.post("/api/keys", json={"name": "ci"}, headers=headers).status_code == 201
    service = dependencies.get_service()
    event = event_of(app_settings, grant["blob_name"])

    def account_erased_meanwhile(_: ResultDocument) -> None:
        assert api.delete("/api/me", headers=headers).status_code == 200

    in_flight = ClassificationService(service.models, service.results, service.blobs,
                                      before_result_write=account_erased_meanwhile)
    assert in_flight.process_blob(event) is None  # its result was erased: nothing written
    assert service.process_blob(event) is None  # the host redelivers the same event later
    # An upload through a SAS granted before the erasure lands after it: its blob is removed, not classified.
    put = httpx.put(late_grant["upload_url"], content=RED, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201
    assert service.process_blob(event_of(app_settings, late_grant["blob_name"])) is None
    assert user_documents(service, user) == []
    assert user_blobs(app_settings, user) == []
    assert dependencies.get_components().keys.list(user) == []


def test_an_http_classification_in_flight_during_erasure_is_undone(
        api: TestClient, app_settings: dict[str, str]) -> None:
    user = "erase-http"
    headers = bearer(user)
    service = dependencies.get_service()

    class EraseAfterCreate(ResultsStore):
        def create(self, document: ResultDocument) -> ResultDocument:
            created = super().create(document)
            assert api.delete("/api/me", headers=headers).status_code == 200  # the erasure overtakes the request
            return created

    racing = ClassificationService(service.models, EraseAfterCreate(service.results.container), service.blobs,
                                   erased_recently=service._erased_recently)
    with pytest.raises(AccountErased):
        racing.classify_files(user, [UploadedFile("a.jpg", GREEN)], top_k=1)
    assert user_documents(service, user) == []


def test_a_deleted_result_is_not_recreated_by_its_processing_or_a_redelivery(
        api: TestClient, app_settings: dict[str, str]) -> None:
    user = "delete-inflight"
    grant = upload(api, user, GREEN)
    service = dependencies.get_service()
    event = event_of(app_settings, grant["blob_name"])

    def deleted_meanwhile(_: ResultDocument) -> None:
        assert api.delete(f"/api/results/{grant['id']}", headers=bearer(user)).status_code == 204

    ClassificationService(service.models, service.results, service.blobs,
                          before_result_write=deleted_meanwhile).process_blob(event)
    service.process_blob(event)
    assert user_documents(service, user) == []
    assert user_blobs(app_settings, user) == []


def test_a_key_use_after_its_revocation_does_not_recreate_the_key(api: TestClient) -> None:
    user = "revoke-touch"
    created = api.post("/api/keys", json={"name": "ci"}, headers=bearer(user)).json()
    store = dependencies.get_components().keys
    record = store._read(user, created["id"])  # what a token exchange read just before the revoke
    assert record is not None
    store.revoke(user, created["id"])
    store._touch(record)  # the exchange records its use afterwards
    assert store._read(user, created["id"]) is None
    assert api.post("/api/token", json={"api_key": created["api_key"]}).status_code == 401


def test_a_blob_that_kills_its_worker_ends_failed_within_the_hosts_deliveries(
        api: TestClient, app_settings: dict[str, str]) -> None:
    user = "killer-blob"
    grant = upload(api, user, GREEN)
    service = dependencies.get_service()
    event = event_of(app_settings, grant["blob_name"])
    max_attempts = get_settings().BLOB_MAX_ATTEMPTS
    host_deliveries = json.loads((REPO / "host.json").read_text())["extensions"]["blobs"]["poisonBlobThreshold"]
    assert Settings.model_fields["BLOB_MAX_ATTEMPTS"].default < host_deliveries  # room for the recording delivery

    def kill_from_the_last_attempt(document: ResultDocument) -> None:
        if document.attempts >= max_attempts:
            raise WorkerKilled
        raise RuntimeError("transient")

    dying = ClassificationService(service.models, service.results, service.blobs, max_attempts=max_attempts,
                                  before_result_write=kill_from_the_last_attempt)
    for _ in range(host_deliveries):  # the host redelivers while the invocation fails, up to its threshold
        try:
            dying.process_blob(event)
        except (RuntimeError, WorkerKilled):
            continue
        break
    result = api.get(f"/api/results/{grant['id']}", headers=bearer(user)).json()
    assert result["status"] == "failed", result
    assert result["error"]["code"] == "processing_failed"


def test_a_write_that_trusts_a_clean_marker_read_during_an_erasure_is_removed_by_the_second_sweep(
        api: TestClient, app_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another instance read "no marker" just before the erasure and trusts it: its write lands after the first
    sweep and its check after write reads nothing. The second sweep, `clean_trust_s` after the marker, removes it."""
    user = "trusting-tom"
    components = dependencies.get_components()
    reads: list[str] = []
    real_read = erasure.read_or_none  # type: ignore[attr-defined]  # the module's own import, spied on

    def counted_read(*args: Any) -> Any:
        reads.append(args[2])
        return real_read(*args)

    monkeypatch.setattr(erasure, "read_or_none", counted_read)
    other_instance = ErasureLog(components.erasures.container, clean_trust_s=1.0)
    assert other_instance.erased_recently(user) is False  # a read, now trusted for 1 s
    assert other_instance.erased_recently(user) is False and reads == [user]  # the second check costs no read
    landed: list[str] = []

    def in_flight_write_lands() -> None:
        document = ResultDocument(id=uuid.uuid4().hex, user_id=user, status="done", source="http")
        components.results.create(document)
        assert other_instance.erased_recently(user) is False  # trusted: the check after write sees no marker
        landed.append(document.id)

    account = AccountService(components.results, components.blobs, components.keys, components.account.feedback,
                             components.erasures, between_sweeps=in_flight_write_lands)
    started = time.monotonic()
    account.delete(user)
    assert landed and user_documents(components.service, user) == []
    assert time.monotonic() - started >= components.erasures.clean_trust_s  # the second sweep waited for the trust
