"""Session-wide emulators for integration tests: Azurite and the Cosmos DB server on free loopback ports."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from devstack.emulators import Azurite, CosmosServer
from devstack.shared_emulators import shared_azurite, shared_cosmos


def _require_node() -> None:
    # The only reason to skip: without Node.js the emulators cannot exist. Any other failure is loud.
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js (node and npm) is not installed: Azurite and the Cosmos server need it")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A running Azurite; `.connection_string` has explicit loopback endpoints."""
    _require_node()
    with shared_azurite(tmp_path_factory.mktemp("azurite")) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def cosmos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CosmosServer]:
    """A running Cosmos DB server; connect with `.endpoint`, `.key` and connection_verify=False."""
    _require_node()
    with shared_cosmos(tmp_path_factory.mktemp("cosmos")) as emulator:
        yield emulator
