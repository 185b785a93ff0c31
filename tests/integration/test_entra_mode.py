"""The real app in Entra mode, configured as main.bicep configures it, with tokens from the local Entra issuer.

devstack/entra_issuer.py serves Entra's discovery document and JWKS paths on loopback and mints access
tokens shaped like Entra's (v2.0 user and app tokens, v1.0 tokens). The app gets the Bicep contract:
AUTH_MODE=entra, AUTH_ISSUER=https://login.microsoftonline.com/<tenant>/v2.0, AUTH_AUDIENCE=<client id>,
AUTH_JWKS_URL=<the issuer's JWKS> (the only substitution). /api/me needs no storage, so no emulator runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from devstack.entra_issuer import EntraIssuer
from functions import dependencies
from functions.http_api import create_api
from shared_code.identity.auth import jwks_keys

pytestmark = pytest.mark.integration
USER = "3c9a7b12-5e4f-4d61-8a2b-9f0e1c7d6b54"
DAEMON = "8e1d2c3b-4a59-4b6c-9d7e-0f1a2b3c4d5e"


@pytest.fixture
def issuer() -> Iterator[EntraIssuer]:
    with EntraIssuer() as running:
        yield running


@pytest.fixture
def api(issuer: EntraIssuer, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for name, value in {**issuer.app_settings(), "COSMOS_KEY": "", "STORAGE_CONNECTION_STRING": "",
                        "RATE_LIMIT_PER_MINUTE": "0"}.items():
        monkeypatch.setenv(name, value)
    dependencies.reset()
    with TestClient(create_api()) as client:
        yield client
    monkeypatch.undo()
    dependencies.reset()


def me(api: TestClient, token: str) -> httpx.Response:
    response: httpx.Response = api.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    return response


def test_the_discovery_document_names_the_configured_issuer_and_jwks(issuer: EntraIssuer) -> None:
    document = httpx.get(issuer.discovery_url).json()
    settings = issuer.app_settings()
    assert document["issuer"] == settings["AUTH_ISSUER"] == f"https://login.microsoftonline.com/{issuer.tenant_id}/v2.0"
    assert document["jwks_uri"] == settings["AUTH_JWKS_URL"]
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    keys = httpx.get(document["jwks_uri"]).json()["keys"]
    assert [key["kid"] for key in keys] == [issuer.signing_kid] and {key["kty"] for key in keys} == {"RSA"}


def test_minted_tokens_have_the_entra_v2_shape(issuer: EntraIssuer) -> None:
    import jwt  # noqa: PLC0415 - reading the token, not validating it

    token = issuer.user_token(USER, ("classify",))
    header, claims = jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})
    assert header == {"alg": "RS256", "kid": issuer.signing_kid, "typ": "JWT"}
    assert claims["iss"] == issuer.issuer and claims["aud"] == issuer.client_id and claims["ver"] == "2.0"
    assert claims["tid"] == issuer.tenant_id and claims["oid"] == claims["sub"] == USER
    assert {"iat", "nbf", "exp", "azp", "azpacr", "aio", "uti", "rh", "scp"} <= set(claims) and "roles" not in claims
    app = jwt.decode(issuer.app_token(DAEMON, ("classify",)), options={"verify_signature": False})
    assert app["roles"] == ["classify"] and app["idtyp"] == "app" and "scp" not in app and app["azp"] == DAEMON


def test_the_app_with_the_bicep_settings_accepts_entra_user_and_app_tokens(issuer: EntraIssuer,
                                                                            api: TestClient) -> None:
    user = me(api, issuer.user_token(USER, ("classify", "results:read")))
    assert user.status_code == 200, user.text
    assert user.json() == {"user_id": USER, "scopes": ["classify", "results:read"], "via_api_key": False}
    app = me(api, issuer.app_token(DAEMON, ("classify",), oid="6b0f9e8d-7c6b-4a59-8e4d-3c2b1a0f9e8d"))
    assert app.status_code == 200 and app.json()["scopes"] == ["classify"]
    v1 = me(api, issuer.v1_user_token(USER, ("results:read",)))
    assert v1.status_code == 200 and v1.json()["scopes"] == ["results:read"]


def test_admin_is_an_app_role_assignment_not_a_consented_scope(issuer: EntraIssuer, api: TestClient) -> None:
    assert me(api, issuer.user_token(USER, ("classify", "admin"))).json()["scopes"] == ["classify"]
    assert me(api, issuer.user_token(USER, ("classify",), roles=("admin",))).json()["scopes"] == ["admin", "classify"]
    assert me(api, issuer.app_token(DAEMON, ("admin",))).json()["scopes"] == ["admin"]


def test_a_key_rotation_by_the_issuer_causes_no_wrongful_401(issuer: EntraIssuer, api: TestClient) -> None:
    old_kid = issuer.signing_kid
    before = issuer.user_token(USER)
    assert me(api, before).status_code == 200
    new_kid = issuer.rotate()  # publishes the next key and signs with it
    after = issuer.user_token(USER)
    assert new_kid != old_kid and issuer.published_kids == [old_kid, new_kid]
    assert me(api, after).status_code == 200 and me(api, before).status_code == 200
    issuer.retire(old_kid)
    assert me(api, after).status_code == 200
    jwks_keys.cache_clear()  # a new instance, which never saw the retired key
    assert me(api, before).status_code == 401 and me(api, after).status_code == 200


def test_tokens_for_another_api_or_tenant_are_refused(api: TestClient, issuer: EntraIssuer) -> None:
    other_tenant = EntraIssuer(client_id=issuer.client_id)
    other_tenant.publish([(issuer.signing_kid, issuer.signing_private_key)])  # same key, another tenant
    assert me(api, other_tenant.user_token(USER)).status_code == 401
    other_api = EntraIssuer(tenant_id=issuer.tenant_id)
    other_api.publish([(issuer.signing_kid, issuer.signing_private_key)])
    assert me(api, other_api.user_token(USER)).status_code == 401
