"""The model repository under failure: the last good model keeps serving, downloads are atomic, old sessions go."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from shared_code.inference import classifier as classifier_module
from shared_code.inference.model_repository import LATEST_POINTER, BlobModelRepository, ModelProvider
from tests.factories import image_bytes, make_tiny_model

pytestmark = pytest.mark.integration
RED = image_bytes("PNG", size=(40, 40), color=(230, 20, 20))


@pytest.fixture
def repository(azurite: Any, tmp_path: Path) -> tuple[BlobModelRepository, str]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    if not service.get_container_client("models").exists():
        service.create_container("models")
    name = f"tiny-{uuid.uuid4().hex[:8]}"
    repo = BlobModelRepository(service, "models", tmp_path / "cache")
    for version in ("1", "2"):
        repo.publish(name, version, make_tiny_model(tmp_path / f"v{version}", version=version).parent,
                     promote=version == "1")
    return repo, name


def test_an_unreadable_pointer_keeps_the_last_good_model_serving(repository: tuple[BlobModelRepository, str]) -> None:
    repo, name = repository
    provider = ModelProvider(repository=repo, name=name, refresh_seconds=5)
    assert provider.current().classify_bytes(RED).model_version == "1"
    repo.container.delete_blob(f"{name}/{LATEST_POINTER}")  # unreadable (a transient outage reads the same)
    provider._checked_at -= 10  # the refresh interval has passed
    assert provider.current().classify_bytes(RED).model_version == "1"
    # It looks again after a back-off, and picks up a promoted version once the pointer is back.
    repo.container.upload_blob(f"{name}/{LATEST_POINTER}", json.dumps({"version": "2"}), overwrite=True)
    provider._checked_at -= 10
    assert provider.current().classify_bytes(RED).model_version == "2"


def test_an_interrupted_download_is_never_trusted(repository: tuple[BlobModelRepository, str]) -> None:
    repo, name = repository
    # What a download interrupted after the card and before the ONNX left behind.
    partial = repo.cache_dir / name / "1"
    partial.mkdir(parents=True)
    (partial / "model.card.json").write_bytes(repo.container.download_blob(f"{name}/1/model.card.json").readall())
    provider = ModelProvider(repository=repo, name=name)
    assert provider.current().classify_bytes(RED).model_version == "1"
    assert (partial / "model.onnx").exists()
    assert [p.name for p in (repo.cache_dir / name).iterdir()] == ["1"]  # no staging folder left behind


def test_a_superseded_session_is_evicted(repository: tuple[BlobModelRepository, str]) -> None:
    repo, name = repository
    provider = ModelProvider(repository=repo, name=name, refresh_seconds=5)
    old = provider.current().classifier
    repo.container.upload_blob(f"{name}/{LATEST_POINTER}", json.dumps({"version": "2"}), overwrite=True)
    provider._checked_at -= 10
    assert provider.current().classifier is not old
    assert all(cached is not old for cached in classifier_module._cache.values())
