"""Cosmos DB (NoSQL API) access shared by every store: the client, containers, point reads, error mapping, timestamps.

Locally a key reaches the emulator; in Azure the managed identity does (local auth is off there).
"""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime
from typing import Any

import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceNotFoundError

from shared_code.errors import TransientError

PARTITION_KEY_PATH = "/userId"
_TRANSIENT_STATUS = frozenset({408, 429, 449, 500, 502, 503, 504})


def utc_now() -> str:
    """ISO-8601 UTC timestamps sort lexicographically, which ORDER BY relies on."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _transport() -> RequestsTransport:
    """A requests transport that reads proxy settings once, not on every call.

    `requests` re-reads the proxy environment (and .netrc) for every request when `trust_env` is on: ~0.5 ms
    per Cosmos call on the classify path (docs/benchmark.md). With no proxy configured at start-up there is
    nothing to find, so the lookup is switched off; with a proxy configured, requests keeps honouring it.
    """
    session = requests.Session()
    session.trust_env = bool(urllib.request.getproxies())
    return RequestsTransport(session=session, session_owner=True)


def cosmos_client(endpoint: str, key: str, *, verify_tls: bool, client_id: str = "") -> CosmosClient:
    """A key-based client for the local emulator, otherwise the managed identity (local auth is off in Azure)."""
    if key:
        return CosmosClient(endpoint, credential=key, connection_verify=verify_tls, transport=_transport())
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - only the Azure path needs it

    credential = DefaultAzureCredential(managed_identity_client_id=client_id or None)
    return CosmosClient(endpoint, credential=credential, transport=_transport())


def ensure_container(client: CosmosClient, database: str, container: str) -> ContainerProxy:
    """Create database and container if missing (local emulator and tests; Bicep creates them in Azure)."""
    db = client.create_database_if_not_exists(database)
    return db.create_container_if_not_exists(container, partition_key=PartitionKey(path=PARTITION_KEY_PATH))


def read_or_none(container: ContainerProxy, item_id: str, partition_key: str) -> dict[str, Any] | None:
    """A point read that returns None for a missing item and a TransientError for throttling/outages."""
    try:
        item: dict[str, Any] = container.read_item(item_id, partition_key=partition_key)
    except CosmosResourceNotFoundError:
        return None
    except CosmosHttpResponseError as exc:
        raise translate_cosmos_error(exc) from exc
    return item


def translate_cosmos_error(exc: CosmosHttpResponseError) -> Exception:
    if exc.status_code in _TRANSIENT_STATUS:
        return TransientError(f"Cosmos DB is temporarily unavailable ({exc.status_code})")
    return exc
