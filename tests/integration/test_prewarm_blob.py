"""The worker's prewarm with MODEL_SOURCE=blob (what Azure runs): the promoted version is downloaded and loaded
while the worker starts, into the same components the first request then uses."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from functions import dependencies
from shared_code.inference.model_card import load_card
from shared_code.inference.model_repository import BlobModelRepository
from tests.factories import make_tiny_model
from tests.integration.app_fixtures import blob_service

pytestmark = pytest.mark.integration


def test_the_prewarm_serves_a_blob_sourced_model_before_the_first_request(app_settings: dict[str, str],
                                                                          tmp_path: Path) -> None:
    name = f"prewarm-{uuid.uuid4().hex[:8]}"
    repository = BlobModelRepository(blob_service(app_settings), "models", tmp_path / "publisher")
    card = make_tiny_model(tmp_path / "source" / "1", version="1")
    repository.publish(name, "1", card.parent, promote=True)
    patch = pytest.MonkeyPatch()
    patch.setenv("MODEL_SOURCE", "blob")
    patch.setenv("MODEL_NAME", name)
    patch.setenv("MODEL_CACHE_DIR", str(tmp_path / "served"))
    dependencies.reset()
    try:
        thread = dependencies.prewarm_model()
        assert thread is not None
        thread.join(120)
        assert dependencies.components_built()  # built by the prewarm, not by a request
        assert (tmp_path / "served" / name / "1").is_dir()
        # The version disappears from the container: only a model loaded before this can still be served.
        for blob in repository.container.list_blobs(name_starts_with=f"{name}/"):
            repository.container.delete_blob(blob.name)
        pipeline = dependencies.get_components().models.current()
        assert pipeline.card.model_id == load_card(card)[0].model_id
    finally:
        patch.undo()
        dependencies.reset()


def test_without_a_model_name_the_blob_prewarm_fails_quietly_and_the_request_reports_it(
        app_settings: dict[str, str], tmp_path: Path) -> None:
    patch = pytest.MonkeyPatch()
    patch.setenv("MODEL_SOURCE", "blob")
    patch.delenv("MODEL_NAME", raising=False)
    dependencies.reset()
    try:
        thread = dependencies.prewarm_model()
        assert thread is not None
        thread.join(60)
        assert not dependencies.components_built()  # the bad settings were not kept
        with pytest.raises(Exception, match="MODEL_NAME"):
            dependencies.get_components()
    finally:
        patch.undo()
        dependencies.reset()
