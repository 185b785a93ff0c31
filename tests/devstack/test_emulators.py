"""The emulators speak the real Azure APIs: Storage through azure-storage-blob, Cosmos through azure-cosmos."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosAccessConditionFailedError, CosmosResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from devstack.emulators import Azurite, CosmosServer, start_azurite, start_cosmos
from devstack.processes import is_running, port_is_free, port_is_open

pytestmark = pytest.mark.integration


@pytest.fixture
def results(cosmos: CosmosServer) -> Iterator[ContainerProxy]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # urllib3 warns on every request to the self-signed endpoint
        client = CosmosClient(cosmos.endpoint, cosmos.key, connection_verify=False)
        database = client.create_database_if_not_exists(f"db-{uuid.uuid4().hex[:8]}")
        yield database.create_container_if_not_exists("results", partition_key=PartitionKey(path="/userId"))
        client.delete_database(database.id)


def test_blob_round_trip_with_the_connection_string(azurite: Azurite) -> None:
    assert f"BlobEndpoint=http://127.0.0.1:{azurite.blob_port}/devstoreaccount1;" in azurite.connection_string
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container(f"c{uuid.uuid4().hex[:12]}")
    payload = uuid.uuid4().bytes * 1000
    container.upload_blob("alice/photo.jpg", payload, metadata={"user": "alice"})
    blob = container.get_blob_client("alice/photo.jpg")
    assert blob.download_blob().readall() == payload
    assert blob.get_blob_properties().metadata == {"user": "alice"}
    assert [b.name for b in container.list_blobs(name_starts_with="alice/")] == ["alice/photo.jpg"]


def test_cosmos_crud_and_missing_item_is_404(results: ContainerProxy) -> None:
    results.upsert_item({"id": "r1", "userId": "alice", "label": "cat"})
    results.upsert_item({"id": "r1", "userId": "alice", "label": "dog"})
    assert results.read_item("r1", partition_key="alice")["label"] == "dog"
    # The patched read-document handler answers 404 (the unpatched server answers 500 here).
    with pytest.raises(CosmosResourceNotFoundError):
        results.read_item("missing", partition_key="alice")
    with pytest.raises(CosmosResourceNotFoundError):
        results.read_item("r1", partition_key="bob")


def test_cosmos_parameterised_query_orders_and_pages(results: ContainerProxy) -> None:
    for index in range(7):
        results.upsert_item({"id": f"r{index}", "userId": "alice", "rank": (index * 3) % 7})
    results.upsert_item({"id": "other", "userId": "bob", "rank": 0})
    pages: Any = results.query_items(
        "SELECT * FROM c WHERE c.userId = @user ORDER BY c.rank DESC",
        parameters=[{"name": "@user", "value": "alice"}], partition_key="alice", max_item_count=3,
    ).by_page()
    first = list(next(pages))
    assert len(first) == 3
    token = pages.continuation_token
    assert token
    rest = results.query_items(
        "SELECT * FROM c WHERE c.userId = @user ORDER BY c.rank DESC",
        parameters=[{"name": "@user", "value": "alice"}], partition_key="alice", max_item_count=3,
    ).by_page(token)
    ranks = [item["rank"] for item in first] + [item["rank"] for page in rest for item in page]
    assert ranks == [6, 5, 4, 3, 2, 1, 0]


def test_cosmos_etag_if_match_conflict(results: ContainerProxy) -> None:
    created = results.upsert_item({"id": "e1", "userId": "alice", "n": 1})
    results.replace_item("e1", {"id": "e1", "userId": "alice", "n": 2},
                         etag=created["_etag"], match_condition=MatchConditions.IfNotModified)
    with pytest.raises(CosmosAccessConditionFailedError):
        results.replace_item("e1", {"id": "e1", "userId": "alice", "n": 3},
                             etag=created["_etag"], match_condition=MatchConditions.IfNotModified)
    assert results.read_item("e1", partition_key="alice")["n"] == 2


def test_stop_leaves_no_process_and_frees_the_ports(tmp_path: Path) -> None:
    azurite = start_azurite(tmp_path)
    cosmos = start_cosmos(tmp_path)
    ports = [azurite.blob_port, azurite.queue_port, azurite.table_port, cosmos.port]
    assert all(port_is_open(port) for port in ports)
    azurite.stop()
    cosmos.stop()
    assert not is_running(azurite.pid) and not is_running(cosmos.pid)
    assert all(port_is_free(port) for port in ports)
