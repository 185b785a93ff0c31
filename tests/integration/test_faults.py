"""Fault injection against the real emulators, and a small bounded version of `make fault-test`.

Injected Cosmos 429/503/408 and Storage 503 go through the real SDK retry policies; the blob pipeline
survives host kills, an Azurite restart and faults with exactly one final result per upload; duplicate
and out-of-order blob events leave one result for the newest content.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, LinearRetry
from fastapi.testclient import TestClient

from devstack.faults import (
    FaultInjector,
    FaultSpec,
    FaultSpecError,
    endpoints_from_env,
    install,
    install_from_env,
    read_fault_log,
    uninstall,
)
from functions import dependencies
from shared_code.cosmos import cosmos_client, ensure_container
from shared_code.errors import TransientError
from shared_code.results.blob_store import BlobStore, read_uploaded_version
from shared_code.results.service import BlobEvent
from shared_code.results.store import ResultDocument, ResultsStore
from tests.factories import image_bytes
from tests.integration.app_fixtures import bearer, blob_service, deliver
from tools.fault_test import FaultTestConfig, passed, run

pytestmark = pytest.mark.integration
GREEN = image_bytes("JPEG", size=(80, 60), color=(20, 230, 20))
RED = image_bytes("JPEG", size=(80, 60), color=(230, 20, 20))


@pytest.fixture
def injector_for() -> Iterator[Any]:
    """Install an injector for one test and always restore the real transport."""

    def make(spec: FaultSpec, targets: dict[str, str], log_path: str | None = None) -> FaultInjector:
        injector = FaultInjector(spec, targets, log_path)
        install(injector)
        return injector

    yield make
    uninstall()


@pytest.fixture(scope="module")
def results(cosmos: Any) -> ResultsStore:
    client = cosmos_client(cosmos.endpoint, cosmos.key, verify_tls=False)
    return ResultsStore(ensure_container(client, "faults-test", "results"))


def cosmos_targets(cosmos: Any) -> dict[str, str]:
    return endpoints_from_env({"COSMOS_ENDPOINT": cosmos.endpoint})


def document(result_id: str) -> ResultDocument:
    return ResultDocument(id=result_id, user_id="faulty", status="pending", source="blob")


def test_fault_spec_parses_what_the_host_reads_and_refuses_nonsense() -> None:
    spec = FaultSpec.parse("cosmos:0.05, storage:0.1,seed=7,after=0.5,cosmos_status=429")
    assert (spec.cosmos, spec.storage, spec.seed, spec.after, spec.cosmos_status) == (0.05, 0.1, 7, 0.5, 429)
    for bad in ("cosmos:2", "cosmos", "blob:0.1", "seed=x", "cosmos_status=500"):
        with pytest.raises(FaultSpecError):
            FaultSpec.parse(bad)
    assert install_from_env({}) is None  # unset: the host installs nothing


@pytest.mark.parametrize(("status", "sdk_attempts"), [(429, 10), (503, 2), (408, 1)])
def test_cosmos_faults_exhaust_the_sdk_retries_then_surface_as_transient(
        injector_for: Any, results: ResultsStore, cosmos: Any, status: int, sdk_attempts: int) -> None:
    injector = injector_for(FaultSpec(cosmos=1.0, after=0.0, cosmos_status=status, retry_after_ms=1),
                            cosmos_targets(cosmos))
    with pytest.raises(TransientError, match=str(status)):
        results.upsert(document(f"{status:032d}"))
    # 429 honours x-ms-retry-after-ms 9 times, a write's 503 is retried once, a write's 408 never.
    assert injector.counts[f"cosmos:{status}:before"] == sdk_attempts
    uninstall()
    assert results.find("faulty", f"{status:032d}") is None  # nothing was sent: nothing was written


def test_lost_answer_after_a_write_leaves_the_write_and_a_retry_keeps_one_document(
        injector_for: Any, results: ResultsStore, cosmos: Any) -> None:
    result_id = "a" * 32
    injector = injector_for(FaultSpec(cosmos=1.0, after=1.0, cosmos_status=503), cosmos_targets(cosmos))
    with pytest.raises(TransientError):
        results.upsert(document(result_id))
    assert injector.counts["cosmos:503:after"] == 2  # the SDK retried the upsert once; both writes happened
    uninstall()
    assert results.find("faulty", result_id) is not None  # the caller saw a failure, the store has the write
    results.upsert(document(result_id))  # the trigger's retry
    assert [d.id for d in results.iter_user("faulty")].count(result_id) == 1


def test_seeded_cosmos_faults_are_absorbed_by_retries(injector_for: Any, results: ResultsStore, cosmos: Any,
                                                      tmp_path: Path) -> None:
    log = tmp_path / "faults.jsonl"
    injector_for(FaultSpec(cosmos=0.3, seed=3, after=0.3, retry_after_ms=1), cosmos_targets(cosmos), str(log))
    for index in range(20):
        for _ in range(10):  # what the blob trigger does with a TransientError: deliver again
            try:
                results.upsert(document(f"{index:030d}ff"))
                break
            except TransientError:
                continue
    uninstall()
    counts, seen = read_fault_log(log)
    assert sum(counts.values()) >= 5 and set(counts) <= {f"cosmos:{s}:{w}" for s in (429, 503, 408)
                                                        for w in ("before", "after")}
    assert seen["cosmos"] >= sum(counts.values())
    stored = [results.find("faulty", f"{index:030d}ff") for index in range(20)]
    assert all(item is not None for item in stored)


def test_storage_503_is_retried_by_the_sdk_and_surfaces_as_transient_without_retries(
        injector_for: Any, azurite: Any) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    with contextlib.suppress(Exception):
        service.create_container("faults")
    service.get_blob_client("faults", "a.bin").upload_blob(b"x", overwrite=True)
    targets = endpoints_from_env({"AzureWebJobsStorage": azurite.connection_string})
    injector = injector_for(FaultSpec(storage=1.0, after=0.0), targets)
    no_retries = BlobStore(BlobServiceClient.from_connection_string(azurite.connection_string, retry_total=0),
                           uploads_container="faults")
    with pytest.raises(TransientError):
        no_retries.etag("faults", "a.bin")
    assert injector.counts["storage:503:before"] == 1
    uninstall()
    injector = injector_for(FaultSpec(storage=0.5, seed=1, after=0.5), targets)
    retry = LinearRetry(backoff=0, retry_total=10, retry_status=10, random_jitter_range=0)
    quick = BlobStore(BlobServiceClient.from_connection_string(azurite.connection_string, retry_policy=retry),
                      uploads_container="faults")
    etags = {quick.etag("faults", "a.bin") for _ in range(10)}
    assert len(etags) == 1 and None not in etags
    assert injector.counts["storage:503:before"] + injector.counts["storage:503:after"] >= 3


@pytest.mark.slow
def test_blob_pipeline_survives_host_kills_an_azurite_restart_and_faults(tmp_path: Path) -> None:
    summary = run(FaultTestConfig(uploads=30, kills=3, fault_rate=0.05, bad_share=0.1, users=3, seed=5,
                                  upload_seconds=8, timeout_s=150, duplicates=0.2, reorder=0.2), tmp_path)
    assert passed(summary), summary
    assert summary["uploads"] == summary["results"] == 30
    assert summary["statuses"] == {"done": 27, "rejected": 3}
    assert summary["host_kills"] == 3 and summary["kills_in_flight"] >= 1
    assert summary["azurite_restarts"] == 1
    assert summary["injected_faults"] > 0
    assert summary["deliveries"] >= 30
    # Delivered by the local Event Grid to the blobs webhook, with duplicates and late events, none dead-lettered.
    event_grid = summary["event_grid"]
    assert event_grid["published"] >= 30 and event_grid["dead_lettered"] == 0
    assert event_grid["duplicates_sent"] >= 1 and event_grid["reordered"] >= 1


def upload_version(app_settings: dict[str, str], blob_name: str, data: bytes) -> BlobEvent:
    """Write one version of the blob and return the event the trigger would deliver for it."""
    client = blob_service(app_settings).get_blob_client("uploads", blob_name)
    written = client.upload_blob(data, overwrite=True)
    return BlobEvent(blob_name=blob_name, data=data, etag=str(written["etag"]).strip('"'))


def test_duplicate_and_out_of_order_events_leave_one_result_for_the_newest_content(
        api: TestClient, app_settings: dict[str, str]) -> None:
    grant = api.post("/api/uploads", json={"filename": "leaf.jpg"}, headers=bearer("olga")).json()
    service = dependencies.get_service()
    old = upload_version(app_settings, grant["blob_name"], GREEN)
    service.process_blob(old)
    new = upload_version(app_settings, grant["blob_name"], RED)  # the client overwrote its upload
    service.process_blob(new)
    service.process_blob(new)  # duplicate delivery
    late = service.process_blob(old)  # the older version's event arrives last
    assert late is not None and late.blob_etag == new.etag
    documents = list(service.results.container.query_items(
        "SELECT * FROM c WHERE c.userId = @u", parameters=[{"name": "@u", "value": "olga"}], partition_key="olga"))
    assert len(documents) == 1
    assert documents[0]["blobEtag"] == new.etag and documents[0]["predictedLabel"] == "red"
    assert documents[0]["id"] == grant["id"]


def test_a_version_overwritten_while_it_was_processed_does_not_overwrite_the_newer_result(
        api: TestClient, app_settings: dict[str, str]) -> None:
    grant = api.post("/api/uploads", json={"filename": "leaf.jpg"}, headers=bearer("pavel")).json()
    service = dependencies.get_service()
    old = upload_version(app_settings, grant["blob_name"], GREEN)
    newer: dict[str, BlobEvent] = {}

    def overwrite_and_finish_first(_: ResultDocument) -> None:
        # While `old` is being classified the client overwrites the blob and the newer version completes.
        newer["event"] = upload_version(app_settings, grant["blob_name"], RED)
        type(service)(service.models, service.results, service.blobs).process_blob(newer["event"])

    racing = type(service)(service.models, service.results, service.blobs,
                           before_result_write=overwrite_and_finish_first)
    racing.process_blob(old)
    result = api.get(f"/api/results/{grant['id']}", headers=bearer("pavel")).json()
    assert result["status"] == "done" and result["predictions"][0]["label"] == "red"
    stored = service.results.find("pavel", grant["id"])
    assert stored is not None and stored.blob_etag == newer["event"].etag



@pytest.mark.slow
def test_account_erasures_and_corrections_amid_kills_leave_nothing_resurrected_or_lost(tmp_path: Path) -> None:
    summary = run(FaultTestConfig(uploads=30, kills=3, fault_rate=0.05, bad_share=0.1, users=3, seed=6,
                                  upload_seconds=8, timeout_s=200, erase_users=1, corrections=5), tmp_path)
    assert passed(summary), summary
    assert summary["erased_users"] == 1 and summary["erased_uploads"] == 10
    assert summary["resurrected"] == summary["lost_corrections"] == summary["stuck_pending"] == 0
    assert summary["corrections"] == 5
    assert summary["uploads"] == summary["results"] == 30


def test_the_fault_run_passes_in_entra_mode_under_event_grid_delivery(tmp_path: Path) -> None:
    """The Bicep identity settings (AUTH_MODE=entra, v2 issuer, client-id audience) against a local OpenID issuer:
    every grant, read, correction and erasure carries an Entra-shaped token, through kills and faults."""
    summary = run(FaultTestConfig(uploads=20, kills=2, fault_rate=0.05, bad_share=0.1, users=2, seed=8,
                                  upload_seconds=6, timeout_s=200, erase_users=1, corrections=3, auth="entra"),
                  tmp_path)
    assert passed(summary), summary
    assert summary["auth"] == "entra"
    assert summary["uploads"] == summary["results"] == 20
    assert summary["resurrected"] == summary["lost_corrections"] == summary["stuck_pending"] == 0
    # every kept upload's event arrived (an erased user's blob may be gone before its event is published)
    assert summary["event_grid"]["delivered"] >= summary["uploads"] - summary["erased_uploads"]
    assert summary["event_grid"]["dead_lettered"] == 0


def test_a_storage_outage_fails_the_blob_read_in_seconds_not_a_minute(
        injector_for: Any, azurite: Any, app_settings: dict[str, str]) -> None:
    """The binding's client retries on the SDK default (15 s, then 18 s, 24 s...): one 503 held the invocation for
    a minute. The read uses the short request retries; the trigger's redelivery handles longer outages."""
    name = f"slow-storage/{uuid.uuid4().hex}.jpg"
    blob_service(app_settings).get_blob_client("uploads", name).upload_blob(GREEN)
    client = deliver(app_settings, name)
    injector = injector_for(FaultSpec(storage=1.0, after=0.0),
                            endpoints_from_env({"AzureWebJobsStorage": azurite.connection_string}))
    started = time.monotonic()
    with pytest.raises(TransientError):
        read_uploaded_version(client, 1 << 20)
    assert time.monotonic() - started < 15.0
    assert injector.counts  # the faults were really met
