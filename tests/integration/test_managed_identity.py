"""Storage through the managed identity, offline, with the SDK code Azure runs.

- devstack/managed_identity.py speaks the App Service managed identity protocol (IDENTITY_ENDPOINT,
  IDENTITY_HEADER, api-version 2019-08-01, client_id); the app's own `DefaultAzureCredential` (built with
  AZURE_CLIENT_ID, as Bicep sets it) gets its tokens there;
- Azurite runs in OAuth mode (`--oauth basic`) over HTTPS with a loopback certificate that the SDK trusts
  through REQUESTS_CA_BUNDLE; the app has STORAGE_ACCOUNT_URL and no connection string or key, so every blob
  call carries a bearer token, and the upload grant is a **user delegation SAS** (a key from
  `get_user_delegation_key`, derived by Azurite from the token's oid/tid), verified by Azurite on the PUT.

The app runs with the identity settings main.bicep gives it (AUTH_MODE=entra, the v2.0 issuer, the API's
client id as audience, AZURE_CLIENT_ID) and callers present tokens of the local Entra issuer, so this is
the Azure request path end to end. The Cosmos DB emulator has no Entra ID data-plane auth, so Cosmos still
uses its key here (allowed in entra mode for a loopback endpoint only; docs/identity.md).
"""

from __future__ import annotations

import os
import shutil
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobClient, BlobServiceClient
from fastapi.testclient import TestClient

from devstack.emulators import Azurite, start_azurite
from devstack.entra_issuer import EntraIssuer
from devstack.managed_identity import ManagedIdentityEndpoint
from devstack.sdk_bindings import blob_sdk_object
from functions import dependencies
from functions.blob_trigger import classify_uploaded_blob
from functions.http_api import create_api
from shared_code.cosmos import cosmos_client, ensure_container
from tests.factories import image_bytes, make_tiny_model

pytestmark = pytest.mark.integration
STORAGE_RESOURCE = "https://storage.azure.com"
ALICE, BOB, CAROL = ("a11ce000-0000-4000-8000-000000000001", "b0b00000-0000-4000-8000-000000000002",
                     "ca201000-0000-4000-8000-000000000003")


@dataclass
class IdentityStack:
    azurite: Azurite
    identity: ManagedIdentityEndpoint
    settings: dict[str, str]

    def bearer(self, user: str) -> dict[str, str]:
        """A delegated Entra v2.0 token of `user` with the default scopes."""
        return {"Authorization": f"Bearer {self.identity.issuer.user_token(user)}"}

    @property
    def ca_file(self) -> str:
        assert self.azurite.ca_file is not None
        return str(self.azurite.ca_file)

    @property
    def tls(self) -> ssl.SSLContext:
        """What a browser that trusts the loopback CA verifies: httpx with only that CA."""
        return ssl.create_default_context(cafile=self.ca_file)

    def blob_service(self) -> BlobServiceClient:
        """A client that authenticates exactly as the app does: the managed identity, no key."""
        credential = DefaultAzureCredential(managed_identity_client_id=self.identity.client_id)
        return BlobServiceClient(self.azurite.blob_endpoint, credential=credential)


@pytest.fixture(scope="module")
def oauth_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: Azurite needs it")
    with start_azurite(tmp_path_factory.mktemp("azurite-oauth"), oauth=True) as azurite:
        yield azurite


@pytest.fixture(scope="module")
def stack(oauth_azurite: Azurite, cosmos: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityStack]:
    with EntraIssuer() as issuer, ManagedIdentityEndpoint(issuer) as identity, pytest.MonkeyPatch.context() as env:
        assert oauth_azurite.ca_file is not None
        values = {
            **identity.environment(),  # IDENTITY_ENDPOINT, IDENTITY_HEADER (the platform), AZURE_CLIENT_ID (Bicep)
            **issuer.app_settings(),  # AUTH_MODE=entra, AUTH_ISSUER, AUTH_AUDIENCE as Bicep; AUTH_JWKS_URL local
            "REQUESTS_CA_BUNDLE": str(oauth_azurite.ca_file),
            # The host connection as infra/modules/function-app.bicep sets it: the blob trigger's client uses it.
            "AzureWebJobsStorage__credential": "managedidentity", "AzureWebJobsStorage__clientId": identity.client_id,
            "AzureWebJobsStorage__blobServiceUri": oauth_azurite.blob_endpoint,
            "STORAGE_ACCOUNT_URL": oauth_azurite.blob_endpoint, "STORAGE_CONNECTION_STRING": "",
            "COSMOS_ENDPOINT": cosmos.endpoint, "COSMOS_KEY": cosmos.key, "COSMOS_VERIFY_TLS": "false",
            "COSMOS_DATABASE": "imgclass-mi", "COSMOS_RESULTS_CONTAINER": "results",
            "MODEL_SOURCE": "local", "MODEL_PATH": str(make_tiny_model(tmp_path_factory.mktemp("mi-model"))),
            "AUTH_SIGNING_KEY": "", "RATE_LIMIT_PER_MINUTE": "0",
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "",
        }
        for name, value in values.items():
            env.setenv(name, value)
        for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT",
                     "AzureWebJobsStorage"):  # Bicep sets no connection string: the __* settings apply
            env.delenv(name, raising=False)  # only the managed identity may answer
        ensure_container(cosmos_client(cosmos.endpoint, cosmos.key, verify_tls=False), "imgclass-mi", "results")
        built = IdentityStack(oauth_azurite, identity, values)
        service = built.blob_service()
        for container in ("uploads", "models", "reports"):
            if not service.get_container_client(container).exists():
                service.create_container(container)
        dependencies.reset()
        yield built
    dependencies.reset()


@pytest.fixture
def api(stack: IdentityStack) -> Iterator[TestClient]:
    dependencies.reset()
    with TestClient(create_api()) as client:
        yield client
    dependencies.reset()


def deliver(stack: IdentityStack, blob_name: str) -> BlobClient:
    """What the host hands the trigger in Azure: the blob extension's client, built from the identity-based
    `AzureWebJobsStorage__*` settings of Bicep (user-assigned managed identity, no key)."""
    assert os.environ["AzureWebJobsStorage__credential"] == "managedidentity"  # noqa: SIM112 - the Bicep name
    client: BlobClient = blob_sdk_object(connection="AzureWebJobsStorage", container="uploads", blob_name=blob_name)
    return client


def test_azure_identity_gets_tokens_from_the_app_service_endpoint(stack: IdentityStack) -> None:
    credential = DefaultAzureCredential(managed_identity_client_id=stack.identity.client_id)
    token = credential.get_token(f"{STORAGE_RESOURCE}/.default")
    assert token.token.count(".") == 2 and token.expires_on > 0
    request = stack.identity.requests[-1]
    assert request == {"api-version": "2019-08-01", "resource": STORAGE_RESOURCE, "client_id": stack.identity.client_id}


def test_the_endpoint_refuses_what_app_service_refuses(stack: IdentityStack) -> None:
    url = stack.identity.endpoint
    params = {"api-version": "2019-08-01", "resource": STORAGE_RESOURCE}
    assert httpx.get(url, params=params, headers={"X-IDENTITY-HEADER": "wrong"}).status_code == 401
    assert httpx.get(url, params=params).status_code == 401
    header = {"X-IDENTITY-HEADER": stack.identity.secret}
    assert httpx.get(url, params={**params, "client_id": "not-ours"}, headers=header).status_code == 400
    assert httpx.get(url, params={**params, "api-version": "2017-09-01"}, headers=header).status_code == 400
    ok = httpx.get(url, params={**params, "client_id": stack.identity.client_id}, headers=header).json()
    assert set(ok) == {"access_token", "expires_on", "resource", "token_type", "client_id"}


def test_azurite_in_oauth_mode_needs_a_credential(stack: IdentityStack) -> None:
    listing = f"{stack.azurite.blob_endpoint}/uploads?restype=container&comp=list"
    assert httpx.get(listing, verify=stack.tls).status_code in {401, 403, 404}
    names = [c.name for c in stack.blob_service().list_containers()]
    assert {"uploads", "models", "reports"} <= set(names)


def test_a_user_delegation_sas_upload_is_classified_to_done(stack: IdentityStack, api: TestClient) -> None:
    grant = api.post("/api/uploads", json={"filename": "photo.png"}, headers=stack.bearer(ALICE))
    assert grant.status_code == 200, grant.text
    body = grant.json()
    query = sas_query(body["upload_url"])
    # Signed with a user delegation key of the managed identity, for HTTPS, create+write only.
    assert query["skoid"] == stack.identity.principal_id and query["sktid"] == stack.identity.issuer.tenant_id
    assert query["spr"] == "https" and query["sp"] == "cw" and query["sr"] == "b"
    assert any(r["resource"] == STORAGE_RESOURCE for r in stack.identity.requests)

    put = httpx.put(body["upload_url"], content=image_bytes("PNG", size=(40, 40)),
                    headers={"x-ms-blob-type": "BlockBlob"}, verify=stack.tls)
    assert put.status_code == 201, put.text
    assert api.get(body["result_url"], headers=stack.bearer(ALICE)).json()["status"] == "pending"

    classify_uploaded_blob(deliver(stack, body["blob_name"]))
    result = api.get(body["result_url"], headers=stack.bearer(ALICE))
    assert result.status_code == 200 and result.json()["status"] == "done", result.text


def sas_query(upload_url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(upload_url).query).items()}


def test_grants_share_one_delegation_key_and_never_outlive_it(stack: IdentityStack, api: TestClient) -> None:
    grants = []
    for i in range(3):
        grants.append(api.post("/api/uploads", json={"filename": f"k{i}.png"}, headers=stack.bearer(BOB)).json())
        time.sleep(1.1)  # SAS times have whole seconds: a key per grant would show a different skt/ske
    queries = [sas_query(grant["upload_url"]) for grant in grants]
    assert len({(query["skt"], query["ske"]) for query in queries}) == 1  # one Storage round trip, not three
    assert all(query["se"] <= query["ske"] for query in queries)  # ISO 8601 UTC strings sort as times
    for grant in grants:
        put = httpx.put(grant["upload_url"], content=image_bytes("PNG", size=(8, 8)),
                        headers={"x-ms-blob-type": "BlockBlob"}, verify=stack.tls)
        assert put.status_code == 201, put.text


def test_the_user_delegation_sas_grants_exactly_one_blob(stack: IdentityStack, api: TestClient) -> None:
    body = api.post("/api/uploads", json={"filename": "one.png"}, headers=stack.bearer(BOB)).json()
    url = urlsplit(body["upload_url"])
    other = url._replace(path=url.path.rsplit("/", 1)[0] + "/other.png").geturl()
    put = httpx.put(other, content=b"x", headers={"x-ms-blob-type": "BlockBlob"}, verify=stack.tls)
    assert put.status_code == 403
    read = httpx.get(body["upload_url"], verify=stack.tls)
    assert read.status_code == 403  # create/write only: the grant cannot read the blob back
    tampered = body["upload_url"].replace("sp=cw", "sp=rcw")
    assert httpx.get(tampered, verify=stack.tls).status_code == 403


def test_without_the_identity_endpoint_a_grant_is_503_not_an_account_key_fallback(
        stack: IdentityStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "revoked")  # the platform secret no longer matches
    dependencies.reset()
    with TestClient(create_api()) as client:
        started = time.monotonic()
        response = client.post("/api/uploads", json={"filename": "photo.png"}, headers=stack.bearer(CAROL))
        elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert elapsed < 30, f"the grant waited {elapsed:.0f} s (SDK default retries: ~90 s)"
    assert response.json()["error"]["code"] == "temporarily_unavailable"
    monkeypatch.setenv("IDENTITY_HEADER", stack.identity.secret)
    dependencies.reset()
    assert os.environ["STORAGE_CONNECTION_STRING"] == ""
