"""Approving a retrained candidate on Azurite: gate results and states in GET /api/models, the admin-only promote
route (404, 409, audit fields), and the conditional pointer write that racing approvals cannot regress."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from functions import dependencies
from functions.http_api import create_api
from model.gates import decide, guard_gate, split_gate
from shared_code.errors import Conflict
from shared_code.inference.model_card import load_card
from shared_code.inference.model_repository import BlobModelRepository, read_pointer, write_pointer
from shared_code.retraining.approval import APPROVAL_FILE, approve
from tests.factories import make_tiny_model
from tests.integration.app_fixtures import bearer, blob_service

pytestmark = pytest.mark.integration

TRUSTED_GUARD = {"data": "/curated/imagenet-sample", "candidate": 0.9, "current": 0.9}
PASSED = decide(split_gate(0.9, 0.5, 0.0), guard_gate(TRUSTED_GUARD, required=True, max_regression=0.02),
                mode="approval")
NO_GUARD = decide(split_gate(0.9, 0.5, 0.0), guard_gate(None, required=True, max_regression=0.02), mode="approval")
ADMIN = "ops"


@pytest.fixture
def repository(app_settings: dict[str, str], tmp_path: Path) -> BlobModelRepository:
    return BlobModelRepository(blob_service(app_settings), "models", tmp_path / "cache")


def publish(repository: BlobModelRepository, root: Path, name: str, version: str, *,
            decision: dict[str, Any] | None = None, promote: bool = False, evaluated: str | None = None) -> str:
    """A tiny version as model.train publishes it: card, ONNX and (with `decision`) its evaluation.json."""
    card_path = make_tiny_model(root / name / version, version=version)
    card, _ = load_card(card_path)
    if decision is not None:
        evaluation = {"name": name, "version": version, "candidate": {"model": evaluated or card.model_id,
                                                                      "accuracy": 0.9}, "promotion": decision}
        (card_path.parent / "evaluation.json").write_text(json.dumps(evaluation))
    repository.publish(name, version, card_path.parent, promote=promote)
    return card.sha256


@pytest.fixture
def api(app_settings: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_api()) as client:
        yield client


def serving(name: str, tmp_path: Path) -> pytest.MonkeyPatch:
    patch = pytest.MonkeyPatch()
    patch.setenv("MODEL_SOURCE", "blob")
    patch.setenv("MODEL_NAME", name)
    patch.setenv("MODEL_CACHE_DIR", str(tmp_path / "served"))
    dependencies.reset()
    return patch


def test_an_admin_approves_a_candidate_that_passed_its_gates(api: TestClient, repository: BlobModelRepository,
                                                             tmp_path: Path) -> None:
    name = f"promo-{uuid.uuid4().hex[:8]}"
    publish(repository, tmp_path, name, "1", promote=True)  # the base version, promoted by the model workflow
    sha2 = publish(repository, tmp_path, name, "2", decision=PASSED)
    publish(repository, tmp_path, name, "3", decision=NO_GUARD)
    publish(repository, tmp_path, name, "4")  # by hand: no gate results
    publish(repository, tmp_path, name, "5", decision=PASSED, evaluated="tiny:5:000000000000")  # someone else's
    admin = bearer(ADMIN, admin=True)
    patch = serving(name, tmp_path)
    try:
        listing = api.get("/api/models", headers=admin)
        assert listing.status_code == 200, listing.text
        versions = {v["version"]: v for v in listing.json()["versions"]}
        assert {v: versions[v]["state"] for v in versions} == {
            "1": "current", "2": "candidate", "3": "not_promotable", "4": "unevaluated", "5": "candidate"}
        assert versions["2"]["gates"]["passed"] is True and versions["2"]["gates"]["guard"]["evaluated"] is True
        assert versions["2"]["gates"]["mode"] == "approval" and versions["2"]["approval"] is None
        assert "no trusted guard set" in versions["3"]["gates"]["reasons"][0]
        assert versions["4"]["gates"] is None

        route = f"/api/models/{name}/versions/{{}}/promote"
        assert api.post(route.format("2"), headers=bearer("someone")).status_code == 403  # not an admin
        assert api.post(route.format("99"), headers=admin).status_code == 404
        assert api.post(f"/api/models/nothing-{name}/versions/1/promote", headers=admin).status_code == 404
        assert api.post("/api/models/_retraining/versions/1/promote", headers=admin).status_code == 422
        for version, message in (("3", "did not pass its promotion gates: no trusted guard set"),
                                 ("4", "has no gate results"), ("5", "evaluation is of 'tiny:5:000000000000'")):
            refused = api.post(route.format(version), headers=admin)
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"]["code"] == "conflict" and message in refused.json()["error"]["message"]
        assert read_pointer(repository.container, name).version == "1"  # nothing refused moved it

        approved = api.post(route.format("2"), headers=admin)
        assert approved.status_code == 200, approved.text
        body = approved.json()
        assert {k: body[k] for k in ("name", "version", "sha256", "approved_by", "previous")} == {
            "name": name, "version": "2", "sha256": sha2, "approved_by": ADMIN, "previous": "1"}
        pointer = read_pointer(repository.container, name).body
        assert pointer is not None and pointer["version"] == "2" and pointer["approved_by"] == ADMIN
        assert pointer["approved_at"] == body["approved_at"] and pointer["sha256"] == sha2
        assert repository.latest_version(name) == "2"  # what ModelProvider serves next
        record = json.loads(repository.container.download_blob(f"{name}/2/{APPROVAL_FILE}").readall())
        assert record["approved_by"] == ADMIN and record["approved_at"] == body["approved_at"]
        again = api.post(route.format("2"), headers=admin)
        assert again.status_code == 409 and "already the promoted version" in again.json()["error"]["message"]

        publish(repository, tmp_path, name, "6", decision=PASSED)
        assert api.post(route.format("6"), headers=admin).status_code == 200
        older = api.post(route.format("2"), headers=admin)  # passed its gates, but 6 is promoted now
        assert older.status_code == 409 and "6 is promoted and newer than 2" in older.json()["error"]["message"]
        dependencies.reset()
        versions = {v["version"]: v for v in api.get("/api/models", headers=admin).json()["versions"]}
        assert versions["6"]["state"] == "current" and versions["6"]["approval"]["previous"] == "2"
        assert versions["2"]["state"] == "superseded" and versions["2"]["approval"]["approved_by"] == ADMIN
        assert versions["1"]["state"] == "unevaluated" and versions["1"]["approval"] is None
    finally:
        patch.undo()
        dependencies.reset()


def test_going_back_to_an_older_candidate_is_not_an_approval(repository: BlobModelRepository, tmp_path: Path) -> None:
    name = f"back-{uuid.uuid4().hex[:8]}"
    publish(repository, tmp_path, name, "1", promote=True)
    for version in ("2", "10"):
        publish(repository, tmp_path, name, version, decision=PASSED)
    approve(repository, name, "10", approved_by=ADMIN)
    with pytest.raises(Conflict, match="10 is promoted and newer than 2"):  # numeric order: 2 < 10
        approve(repository, name, "2", approved_by=ADMIN)
    assert read_pointer(repository.container, name).version == "10"


def test_racing_approvals_never_leave_the_older_version_promoted(repository: BlobModelRepository,
                                                                 tmp_path: Path) -> None:
    """Two admins approve 2 and 3 at the same moment, eight times over: 3 is promoted every time; 2 is either
    promoted first and then superseded, or refused (409) because 3 got there first."""
    for round_ in range(8):
        name = f"race-{round_}-{uuid.uuid4().hex[:6]}"
        publish(repository, tmp_path, name, "1", promote=True)
        for version in ("2", "3"):
            publish(repository, tmp_path, name, version, decision=PASSED)
        start = threading.Barrier(2)
        outcomes: dict[str, Any] = {}

        def approve_at_once(version: str, name: str = name, start: threading.Barrier = start,
                            outcomes: dict[str, Any] = outcomes) -> None:
            start.wait()
            try:
                outcomes[version] = approve(repository, name, version, approved_by=f"admin-{version}")
            except Conflict as exc:
                outcomes[version] = exc

        threads = [threading.Thread(target=approve_at_once, args=(version,)) for version in ("2", "3")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert read_pointer(repository.container, name).version == "3", (round_, outcomes)
        assert isinstance(outcomes["3"], dict), outcomes
        if isinstance(outcomes["2"], dict):  # 2 won the first write: 3 then moved past it
            assert outcomes["3"]["previous"] == "2"
        else:
            assert isinstance(outcomes["2"], Conflict) and outcomes["3"]["previous"] == "1"


def test_a_pointer_write_against_a_stale_etag_changes_nothing(repository: BlobModelRepository,
                                                              tmp_path: Path) -> None:
    name = f"etag-{uuid.uuid4().hex[:8]}"
    publish(repository, tmp_path, name, "1", promote=True)
    stale = read_pointer(repository.container, name)
    assert write_pointer(repository.container, name, {"version": "3"}, expected=stale)
    assert not write_pointer(repository.container, name, {"version": "2"}, expected=stale)  # read before "3"
    assert read_pointer(repository.container, name).version == "3"

    fresh = f"etag-new-{uuid.uuid4().hex[:8]}"
    nothing = read_pointer(repository.container, fresh)
    assert nothing.body is None and nothing.etag is None
    assert write_pointer(repository.container, fresh, {"version": "3"}, expected=nothing)  # create-only
    assert not write_pointer(repository.container, fresh, {"version": "2"}, expected=nothing)
    assert read_pointer(repository.container, fresh).version == "3"


def test_an_azure_ml_job_outcome_carries_the_gates_of_its_version(repository: BlobModelRepository,
                                                                   tmp_path: Path) -> None:
    """promotion_outcome (the Azure ML launcher's result, read from the models container) says what the gates said."""
    from shared_code.retraining.submission import promotion_outcome  # noqa: PLC0415

    name = f"aml-{uuid.uuid4().hex[:8]}"
    publish(repository, tmp_path, name, "1", promote=True)
    publish(repository, tmp_path, name, "2", decision=PASSED)
    publish(repository, tmp_path, name, "3", decision=NO_GUARD)
    candidate = promotion_outcome(repository, {"modelName": name, "version": "2"})
    assert candidate == {"name": name, "version": "2", "published": True, "promoted": False, "promotable": True,
                         "reasons": [], "state": "candidate"}
    refused = promotion_outcome(repository, {"modelName": name, "version": "3"})
    assert refused["state"] == "not_promotable" and "no trusted guard set" in refused["reasons"][0]
    approve(repository, name, "2", approved_by=ADMIN)
    assert promotion_outcome(repository, {"modelName": name, "version": "2"})["state"] == "promoted"
    assert promotion_outcome(repository, {"modelName": name, "version": "9"})["published"] is False
