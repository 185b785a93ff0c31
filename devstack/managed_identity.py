"""A local endpoint that speaks the App Service managed identity protocol, so `azure-identity` runs unchanged.

App Service and Azure Functions set `IDENTITY_ENDPOINT` (a loopback URL) and `IDENTITY_HEADER` (a secret) in
the app's environment; `ManagedIdentityCredential` (through `DefaultAzureCredential`) then sends

    GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<resource>[&client_id=<user-assigned id>]
    X-IDENTITY-HEADER: {IDENTITY_HEADER}

and reads `access_token`, `expires_on` (epoch seconds), `resource`, `token_type` and `client_id`. This
endpoint answers that for one user-assigned identity, with v1.0 tokens shaped like Entra's managed
identity tokens (`iss` https://sts.windows.net/{tid}/, `aud` the resource, `oid` = the identity's principal
id, `appid` = its client id, `idtyp` app), signed by the local issuer's current key. Azurite in OAuth mode
(`--oauth basic`) accepts them for blob data access and derives user delegation keys from `oid`/`tid`.
Like App Service, a wrong header is a 401, an unknown `client_id` a 400, a missing resource a 400.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any, Self

from devstack.entra_issuer import EntraIssuer
from devstack.loopback_json import LoopbackJsonServer, LoopbackService
from devstack.processes import LOOPBACK

API_VERSION = "2019-08-01"
TOKEN_PATH = "/msi/token"  # noqa: S105 - a URL path, not a secret


@dataclass
class ManagedIdentityEndpoint(LoopbackService):
    """One user-assigned managed identity (client id + principal id) of the tenant of `issuer`."""

    issuer: EntraIssuer
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    principal_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    lifetime_s: int = 3600
    requests: list[dict[str, str]] = field(default_factory=list)  # every accepted token request's parameters
    _server: LoopbackJsonServer | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the endpoint is not started")
        return f"http://{LOOPBACK}:{self._server.port}{TOKEN_PATH}"

    def environment(self) -> dict[str, str]:
        """What the platform puts into the app's environment, plus AZURE_CLIENT_ID as Bicep sets it."""
        return {"IDENTITY_ENDPOINT": self.endpoint, "IDENTITY_HEADER": self.secret, "AZURE_CLIENT_ID": self.client_id}

    def token_for(self, resource: str) -> tuple[str, int]:
        claims = self.issuer.base_claims(oid=self.principal_id, client_app_id=self.client_id, version="1.0",
                                         lifetime_s=self.lifetime_s)
        claims.update(aud=resource, idtyp="app",
                      xms_mirid=f"/subscriptions/{uuid.UUID(int=0)}/resourcegroups/rg-local/providers/"
                                f"Microsoft.ManagedIdentity/userAssignedIdentities/id-local")
        return self.issuer.mint(claims), int(claims["exp"])

    def answer(self, path: str, query: dict[str, list[str]], header: str | None) -> tuple[int, dict[str, Any]]:
        """The status and JSON body App Service would answer for one request."""
        if path != TOKEN_PATH:
            return 404, {"statusCode": 404, "message": "not found"}
        if header is None or not secrets.compare_digest(header, self.secret):
            return 401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"}
        params = {name: values[-1] for name, values in query.items()}
        if params.get("api-version") != API_VERSION:
            return 400, {"statusCode": 400, "message": f"api-version must be {API_VERSION}"}
        resource = params.get("resource", "").removesuffix("/.default")
        if not resource:
            return 400, {"statusCode": 400, "message": "resource is required"}
        if params.get("client_id", self.client_id) != self.client_id:
            return 400, {"statusCode": 400, "message": "no user-assigned identity with this client_id"}
        self.requests.append(params)
        token, expires_on = self.token_for(resource)
        return 200, {"access_token": token, "expires_on": str(expires_on), "resource": resource,
                     "token_type": "Bearer", "client_id": self.client_id}

    def start(self) -> Self:
        if not self.issuer.published_kids:
            self.issuer.rotate()
        self._server = LoopbackJsonServer(
            lambda path, query, headers: self.answer(path, query, headers.get("X-IDENTITY-HEADER")),
            host=LOOPBACK, name="managed-identity")
        self._server.start()
        return self

