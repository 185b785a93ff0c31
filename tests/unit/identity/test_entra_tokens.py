"""Entra ID access tokens as Entra issues them (devstack/entra_issuer.py), validated with the Bicep-shaped settings.

Each defect of issue 13 has a test here that fails on the code before the fix: the application id URI as
audience (every v2 token a 401), v1 tokens refused, `nbf` optional, `admin` granted by a consented scope.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from devstack.entra_issuer import EntraIssuer
from shared_code.errors import Forbidden, Unauthorized
from shared_code.identity.auth import authenticate
from shared_code.settings import Settings

pytestmark = pytest.mark.unit
USER = "0b5e1d9c-7a43-4e0f-9c1d-3f2a6b8e4d10"


@pytest.fixture(scope="module")
def issuer() -> Iterator[EntraIssuer]:
    with EntraIssuer() as running:
        yield running


@pytest.fixture(scope="module")
def settings(issuer: EntraIssuer) -> Settings:
    return Settings(**issuer.app_settings(), COSMOS_KEY="", STORAGE_CONNECTION_STRING="")  # type: ignore[arg-type]


def bearer(token: str) -> str:
    return f"Bearer {token}"


def bicep_shaped(tenant: str, **changes: str) -> dict[str, str]:
    authority = f"https://login.microsoftonline.com/{tenant}"
    values = {"AUTH_MODE": "entra", "AUTH_ISSUER": f"{authority}/v2.0",
              "AUTH_AUDIENCE": "66666666-7777-8888-9999-000000000000",
              "AUTH_JWKS_URL": f"{authority}/discovery/v2.0/keys", "COSMOS_KEY": "", "STORAGE_CONNECTION_STRING": ""}
    return {**values, **changes}


TENANT = "11111111-2222-3333-4444-555555555555"


# --- settings --------------------------------------------------------------------------------------------
def test_the_bicep_contract_is_valid_settings() -> None:
    settings = Settings(**bicep_shaped(TENANT))  # type: ignore[arg-type]
    assert settings.entra_tenant_id == TENANT


@pytest.mark.parametrize(("name", "value"), [
    ("AUTH_AUDIENCE", "api://imgclass"),  # the old Bicep default: v2 tokens never carry it
    ("AUTH_AUDIENCE", "api://66666666-7777-8888-9999-000000000000"),
    ("AUTH_AUDIENCE", "66666666-7777-8888-9999-00000000000A"),  # Entra writes lower case; aud is compared exactly
    ("AUTH_ISSUER", f"https://sts.windows.net/{TENANT}/"),  # v1: accepted in tokens, but configure the v2 issuer
    ("AUTH_ISSUER", "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0"),  # tokens name the tenant id
    ("AUTH_ISSUER", f"https://login.microsoftonline.com/{TENANT}"),
    ("AUTH_ISSUER", f"http://login.microsoftonline.com/{TENANT}/v2.0"),
    ("AUTH_ISSUER", "imgclass-local"),
    ("AUTH_JWKS_URL", f"http://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"),
    ("AUTH_JWKS_URL", ""),
])
def test_entra_settings_that_would_answer_every_request_401_are_refused_at_start_up(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings(**bicep_shaped(TENANT, **{name: value}))  # type: ignore[arg-type]


def test_plain_http_jwks_is_allowed_on_loopback_only(issuer: EntraIssuer) -> None:
    assert issuer.jwks_url.startswith("http://127.0.0.1:")
    Settings(**bicep_shaped(TENANT, AUTH_JWKS_URL=issuer.jwks_url))  # type: ignore[arg-type]


# --- token shapes ----------------------------------------------------------------------------------------
def test_a_v2_user_token_is_accepted_with_its_delegated_scopes(issuer: EntraIssuer, settings: Settings) -> None:
    principal = authenticate(settings, bearer(issuer.user_token(USER, ("classify", "results:read"))))
    assert principal.user_id == USER and principal.scopes == {"classify", "results:read"}


def test_a_v2_app_token_gets_its_app_roles(issuer: EntraIssuer, settings: Settings) -> None:
    principal = authenticate(settings, bearer(issuer.app_token("2f0c8a51-58e1-4d1b-9a8c-1c4e9f0b7a22", ("classify",))))
    assert principal.scopes == {"classify"}


def test_a_v1_token_is_accepted_with_its_own_issuer_and_audience(issuer: EntraIssuer, settings: Settings) -> None:
    token = issuer.v1_user_token(USER, ("classify",))
    assert authenticate(settings, bearer(token)).scopes == {"classify"}


def resolve(value: object, issuer: EntraIssuer) -> object:
    """Fill in the issuer's ids (`{client}`, `{tenant}`) and relative times (`+600`) of a claim template."""
    if isinstance(value, str) and value.startswith("+"):
        return int(time.time()) + int(value[1:])
    if isinstance(value, str):
        return value.format(client=issuer.client_id, tenant=issuer.tenant_id)
    if isinstance(value, list):
        return [resolve(item, issuer) for item in value]
    return value


@pytest.mark.parametrize(("label", "changes"), [
    ("v2 issuer with the v1 audience", {"aud": "api://{client}"}),
    ("v1 issuer with the v2 audience", {"iss": "https://sts.windows.net/{tenant}/", "ver": "1.0"}),
    ("v1 issuer and audience, ver 2.0", {"iss": "https://sts.windows.net/{tenant}/", "aud": "api://{client}"}),
    ("v2 issuer and audience, ver 1.0", {"ver": "1.0"}),
    ("no ver", {"ver": None}),
    ("v1 issuer of another tenant", {"iss": "https://sts.windows.net/99999999-2222-3333-4444-555555555555/",
                                     "aud": "api://{client}", "ver": "1.0"}),
    ("tid of another tenant", {"tid": "99999999-2222-3333-4444-555555555555"}),
    ("no tid", {"tid": None}),
    ("audience list holding ours", {"aud": ["{client}", "00000003-0000-0000-c000-000000000000"]}),
    ("another app's client id", {"aud": "00000003-0000-0000-c000-000000000000"}),
    ("no nbf", {"nbf": None}),
    ("nbf in the future", {"nbf": "+600"}),
    ("no exp", {"exp": None}),
    ("no iss", {"iss": None}),
    ("no aud", {"aud": None}),
])
def test_tokens_mixing_shapes_or_missing_required_claims_are_401(issuer: EntraIssuer, settings: Settings,
                                                                label: str, changes: dict[str, object]) -> None:
    claims = issuer.base_claims(oid=USER, client_app_id="2f0c8a51-58e1-4d1b-9a8c-1c4e9f0b7a22")
    claims["scp"] = "classify"
    for name, value in changes.items():
        claims[name] = resolve(value, issuer)
    with pytest.raises(Unauthorized):
        authenticate(settings, bearer(issuer.mint(claims)))


# --- admin -----------------------------------------------------------------------------------------------
def test_admin_in_the_delegated_scp_claim_grants_nothing(issuer: EntraIssuer, settings: Settings) -> None:
    principal = authenticate(settings, bearer(issuer.user_token(USER, ("admin",))))
    assert "admin" not in principal.scopes
    with pytest.raises(Forbidden):
        principal.require("results:read")


def test_admin_comes_from_an_app_role_assignment(issuer: EntraIssuer, settings: Settings) -> None:
    user_admin = authenticate(settings, bearer(issuer.user_token(USER, ("classify",), roles=("admin",))))
    assert user_admin.scopes == {"classify", "admin"}
    user_admin.require("results:write")
    app_admin = authenticate(settings, bearer(issuer.app_token("2f0c8a51-58e1-4d1b-9a8c-1c4e9f0b7a22", ("admin",))))
    assert app_admin.scopes == {"admin"}


def test_a_scope_claim_is_not_read_from_entra_tokens(issuer: EntraIssuer, settings: Settings) -> None:
    # `scope` is what this service writes into its own local tokens; Entra access tokens use `scp`.
    principal = authenticate(settings, bearer(issuer.user_token(USER, (), scope="classify admin")))
    assert principal.scopes == frozenset()


# --- keys in entra mode ----------------------------------------------------------------------------------
AZURITE = ("DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=a2V5;"
           "BlobEndpoint=https://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=https://127.0.0.1:10001/devstoreaccount1;")


@pytest.mark.parametrize("changes", [
    {"COSMOS_ENDPOINT": "https://cosmos-x.documents.azure.com:443/", "COSMOS_KEY": "a2V5"},
    {"STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=stx;AccountKey=a2V5;"
                                  "EndpointSuffix=core.windows.net"},
    {"STORAGE_CONNECTION_STRING": AZURITE.replace("QueueEndpoint=https://127.0.0.1", "QueueEndpoint=https://evil.test")},
    {"COSMOS_ENDPOINT": "https://cosmos-x.documents.azure.com:443/", "COSMOS_VERIFY_TLS": "false"},
])
def test_entra_mode_refuses_keys_and_unverified_tls_for_azure_endpoints(changes: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="local"):
        Settings(**bicep_shaped(TENANT, **changes))  # type: ignore[arg-type]


def test_entra_mode_accepts_the_emulators_keys_on_loopback() -> None:
    # The rehearsal runs the Bicep settings against the emulators: the Cosmos emulator has no Entra ID auth.
    Settings(**bicep_shaped(TENANT, COSMOS_ENDPOINT="https://127.0.0.1:8081/", COSMOS_KEY="a2V5",  # type: ignore[arg-type]
                            COSMOS_VERIFY_TLS="false", STORAGE_CONNECTION_STRING=AZURITE))
    Settings(**bicep_shaped(TENANT, STORAGE_CONNECTION_STRING="UseDevelopmentStorage=true"))  # type: ignore[arg-type]
