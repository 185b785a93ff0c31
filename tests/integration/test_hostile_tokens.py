"""Hostile bearer tokens, table-driven, in both auth modes: every one is a 401 or 403, never a 5xx.

local mode runs against the real app on the emulators; entra mode against the real app with a JWKS served
by a local `http.server` (RSA keys made with `cryptography`), which also shows that a key rollover causes
no wrongful 401 and that unknown kids cannot make the service hammer the JWKS endpoint.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm

from devstack.entra_issuer import EntraIssuer
from functions import dependencies
from functions.http_api import create_api
from shared_code.identity.auth import ALL_SCOPES, MAX_TOKEN_BYTES, jwks_keys
from tests.factories import image_bytes
from tests.integration.app_fixtures import SIGNING_KEY

pytestmark = pytest.mark.integration

PNG = image_bytes("PNG", size=(16, 16))
Header = Callable[[], dict[str, Any]]  # built lazily: some need the server or a revoked key first


# --- crafting -----------------------------------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: object) -> str:
    return b64(json.dumps(value).encode())


def raw_jwt(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{segment(header)}.{segment(claims)}.{b64(signature)}"


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{segment(header)}.{segment(claims)}".encode()
    return f"{signing_input.decode()}.{b64(hmac.new(secret, signing_input, hashlib.sha256).digest())}"


def bearer_of(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_for(issuer: str, audience: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": issuer, "aud": audience, "sub": "hostile-victim", "iat": now, "nbf": now,
                              "exp": now + 600, "scope": " ".join(ALL_SCOPES), "scp": " ".join(ALL_SCOPES)}
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def tamper(token: str, part: int) -> str:
    pieces = token.split(".")
    target = pieces[part]
    pieces[part] = target[:-2] + ("AA" if not target.endswith("AA") else "BB")
    return ".".join(pieces)


def replace_payload(token: str, claims: dict[str, Any]) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{segment(claims)}.{sig}"


@dataclass(frozen=True)
class Case:
    name: str
    headers: Header
    expected: int = 401


def assert_refused(client: TestClient, case: Case, method: str, path: str, extra_headers: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
    response = client.request(method, path, headers={**case.headers(), **(extra_headers or {})}, **kwargs)
    assert response.status_code == case.expected, (case.name, method, path, response.status_code, response.text)
    assert response.json()["error"]["code"] == ("unauthorized" if case.expected == 401 else "forbidden")
    if case.expected == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


# --- local mode (HS256 issued by the service) ---------------------------------------------------------
def local_claims(**changes: Any) -> dict[str, Any]:
    return claims_for("imgclass-local", "imgclass-api", **changes)


def local_token(key: str = SIGNING_KEY, alg: str = "HS256", headers: dict[str, Any] | None = None,
                **changes: Any) -> str:
    return jwt.encode(local_claims(**changes), key, algorithm=alg, headers=headers)


@pytest.fixture(scope="module")
def revoked_key_token(api_module: TestClient) -> str:
    """A token exchanged for an API key that was then revoked."""
    owner = bearer_of(local_token(sub="hostile-victim"))
    created = api_module.post("/api/keys", json={"name": "to revoke"}, headers=owner).json()
    token: str = api_module.post("/api/token", json={"api_key": created["api_key"]}).json()["access_token"]
    assert api_module.get("/api/me", headers=bearer_of(token)).status_code == 200
    assert api_module.delete(f"/api/keys/{created['id']}", headers=owner).status_code == 204
    return token


@pytest.fixture(scope="module")
def api_module(app_settings: dict[str, str]) -> Iterator[TestClient]:
    dependencies.reset()
    with TestClient(create_api()) as client:
        yield client


RSA_ATTACKER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_ATTACKER = ec.generate_private_key(ec.SECP256R1())
_revoked: dict[str, str] = {}

LOCAL_CASES = [
    Case("no header", lambda: {}),
    Case("empty bearer", lambda: {"Authorization": "Bearer "}),
    Case("bearer only whitespace", lambda: {"Authorization": "Bearer      "}),
    Case("scheme without token", lambda: {"Authorization": "Bearer"}),
    Case("basic scheme", lambda: {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}),
    Case("wrong scheme, valid token", lambda: {"Authorization": f"Token {local_token()}"}),
    Case("token without scheme", lambda: {"Authorization": local_token()}),
    Case("alg none", lambda: bearer_of(raw_jwt({"alg": "none", "typ": "JWT"}, local_claims()))),
    Case("alg None", lambda: bearer_of(raw_jwt({"alg": "None"}, local_claims()))),
    Case("alg none with signature", lambda: bearer_of(raw_jwt({"alg": "none"}, local_claims(), b"sig"))),
    Case("HS384 with the real key", lambda: bearer_of(local_token(alg="HS384"))),
    Case("HS512 with the real key", lambda: bearer_of(local_token(alg="HS512"))),
    Case("HS256 with a wrong key", lambda: bearer_of(local_token(key="x" * 48))),
    Case("HS256 with an empty key", lambda: bearer_of(hs256({"alg": "HS256"}, local_claims(), b""))),
    Case("RS256 with an attacker key", lambda: bearer_of(local_token(key=RSA_ATTACKER, alg="RS256"))),  # type: ignore[arg-type]
    Case("ES256 with an attacker key", lambda: bearer_of(local_token(key=EC_ATTACKER, alg="ES256"))),  # type: ignore[arg-type]
    Case("expired beyond leeway", lambda: bearer_of(local_token(exp=int(time.time()) - 120))),
    Case("nbf in the future", lambda: bearer_of(local_token(nbf=int(time.time()) + 600))),
    Case("iat in the future", lambda: bearer_of(local_token(iat=int(time.time()) + 600))),
    Case("wrong issuer", lambda: bearer_of(local_token(iss="https://evil.example"))),
    Case("wrong audience", lambda: bearer_of(local_token(aud="another-api"))),
    Case("audience list without ours", lambda: bearer_of(local_token(aud=["a", "b"]))),
    Case("missing exp", lambda: bearer_of(local_token(exp=None))),
    Case("missing iat", lambda: bearer_of(local_token(iat=None))),
    Case("missing sub", lambda: bearer_of(local_token(sub=None))),
    Case("missing iss", lambda: bearer_of(local_token(iss=None))),
    Case("missing aud", lambda: bearer_of(local_token(aud=None))),
    Case("empty sub", lambda: bearer_of(local_token(sub=""))),
    Case("sub with path traversal", lambda: bearer_of(local_token(sub="../hostile-other"))),
    Case("sub is a number", lambda: bearer_of(local_token(sub=12345))),
    Case("exp is a string", lambda: bearer_of(local_token(exp="tomorrow"))),
    Case("lifetime beyond 24 h", lambda: bearer_of(local_token(exp=int(time.time()) + 90_000))),
    Case("jku header", lambda: bearer_of(local_token(headers={"jku": "http://127.0.0.1:1/jwks"}))),
    Case("x5u header", lambda: bearer_of(local_token(headers={"x5u": "http://127.0.0.1:1/cert"}))),
    Case("jwk header", lambda: bearer_of(local_token(headers={"jwk": {"kty": "oct", "k": b64(b"k" * 32)}}))),
    Case("x5c header", lambda: bearer_of(local_token(headers={"x5c": ["MIIB"]}))),
    Case("crit header", lambda: bearer_of(local_token(headers={"crit": ["exp"]}))),
    Case("typ JWE", lambda: bearer_of(local_token(headers={"typ": "JWE"}))),
    Case("kid injection, wrong key", lambda: bearer_of(local_token(key="y" * 40, headers={"kid": "../../dev/null"}))),
    Case("oversized", lambda: bearer_of(local_token(pad="p" * MAX_TOKEN_BYTES))),
    Case("malformed base64 header", lambda: bearer_of("!!!." + local_token().split(".", 1)[1])),
    Case("malformed base64 payload", lambda: {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.%%%%.c2ln"}),
    Case("two segments", lambda: bearer_of(".".join(local_token().split(".")[:2]))),
    Case("four segments", lambda: bearer_of(local_token() + ".extra")),
    Case("payload not JSON", lambda: bearer_of(f"{segment({'alg': 'HS256'})}.{b64(b'not json')}.c2ln")),
    Case("payload a JSON array", lambda: bearer_of(hs256({"alg": "HS256"}, [1, 2], SIGNING_KEY.encode()))),  # type: ignore[arg-type]
    Case("header a JSON string", lambda: bearer_of(f"{segment('HS256')}.{segment(local_claims())}.c2ln")),
    Case("signature stripped", lambda: bearer_of(local_token().rsplit(".", 1)[0] + ".")),
    Case("signature tampered", lambda: bearer_of(tamper(local_token(), 2))),
    Case("payload swapped, signature kept",
         lambda: bearer_of(replace_payload(local_token(), local_claims(sub="other")))),
    Case("control characters", lambda: {"Authorization": "Bearer a\tb"}),
    Case("non-ASCII token", lambda: {"Authorization": "Bearer ñññ.ççç.ééé".encode()}),
    Case("key_id of a key that never existed", lambda: bearer_of(local_token(key_id="fedcba9876543210"))),
    Case("malformed key_id", lambda: bearer_of(local_token(key_id="../x"))),
    Case("revoked API key's token", lambda: bearer_of(_revoked["token"])),
    Case("valid signature, no scopes", lambda: bearer_of(local_token(scope=None, scp=None)), 403),
    Case("valid signature, unknown scopes", lambda: bearer_of(local_token(scope="Admin root *", scp=None)), 403),
    Case("valid signature, roles not a list", lambda: bearer_of(local_token(scope=None, scp=None, roles="admin")),
         403),
]


@pytest.mark.parametrize("case", LOCAL_CASES, ids=lambda case: case.name)
def test_hostile_tokens_in_local_mode_are_refused_on_every_route(api_module: TestClient, revoked_key_token: str,
                                                                 case: Case) -> None:
    _revoked["token"] = revoked_key_token
    assert_refused(api_module, case, "GET", "/api/results")
    assert_refused(api_module, case, "GET", "/api/results/0123456789abcdef0123456789abcdef")
    assert_refused(api_module, case, "DELETE", "/api/results/0123456789abcdef0123456789abcdef")
    assert_refused(api_module, case, "POST", "/api/classify", {"Content-Type": "image/png"}, content=PNG)
    assert_refused(api_module, case, "POST", "/api/keys", json={})
    assert_refused(api_module, case, "GET", "/api/me/export")
    if case.expected == 401:
        assert_refused(api_module, case, "GET", "/api/me")


def test_the_local_table_is_large_enough() -> None:
    assert len(LOCAL_CASES) >= 40 and len({case.name for case in LOCAL_CASES}) == len(LOCAL_CASES)


# --- entra mode (RS256 from a JWKS) -------------------------------------------------------------------
# The settings main.bicep gives the app (AUTH_ISSUER the v2.0 issuer, AUTH_AUDIENCE the API's client id);
# only AUTH_JWKS_URL points at a loopback server. Two such servers, every entra test runs against both:
# "jwks-server": a bare JWKS document served by http.server; "entra-issuer": devstack/entra_issuer.py, which
# serves Entra's discovery document and JWKS paths and mints tokens exactly as Entra shapes them.
TENANT = "5d2b8c9e-0f4a-4b71-8e36-2c9a1f7d4e50"
CLIENT_ID = "a7e3f0c2-91b4-4d8e-b6a5-3f1c2d9e8b70"
ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
AUDIENCE = CLIENT_ID
V1_ISSUER = f"https://sts.windows.net/{TENANT}/"


@dataclass
class Jwks:
    """A JWKS endpoint on a free loopback port; `publish` changes its keys to simulate rollover."""

    keys: list[dict[str, Any]]
    hits: dict[str, int] = field(default_factory=dict)
    url: str = ""  # the server's base URL
    keys_path: str = "/keys"
    issuer: EntraIssuer | None = None  # set for the devstack Entra issuer

    @property
    def jwks_url(self) -> str:
        return f"{self.url}{self.keys_path}"

    def publish(self, pairs: list[tuple[RSAPrivateKey, str]]) -> None:
        """Publish exactly these (key, kid) pairs."""
        if self.issuer is not None:
            self.issuer.publish([(kid, key) for key, kid in pairs])
        else:
            self.keys = [public_jwk(key, kid) for key, kid in pairs]


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


@contextlib.contextmanager
def bare_jwks_server() -> Iterator[Jwks]:
    state = Jwks(keys=[])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] = state.hits.get(self.path, 0) + 1
            body = json.dumps({"keys": state.keys}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def devstack_entra_issuer() -> Iterator[Jwks]:
    with EntraIssuer(tenant_id=TENANT, client_id=CLIENT_ID) as issuer:
        base = issuer.jwks_url.removesuffix(issuer.jwks_path)
        yield Jwks(keys=[], hits=issuer.hits, url=base, keys_path=issuer.jwks_path, issuer=issuer)


@pytest.fixture(params=["jwks-server", "entra-issuer"])
def jwks(request: pytest.FixtureRequest) -> Iterator[Jwks]:
    with (bare_jwks_server() if request.param == "jwks-server" else devstack_entra_issuer()) as state:
        yield state


@pytest.fixture
def entra_api(jwks: Jwks, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The real app with AUTH_MODE=entra; /api/me needs no storage, so no emulator is involved."""
    settings = {"AUTH_MODE": "entra", "AUTH_JWKS_URL": jwks.jwks_url, "AUTH_ISSUER": ISSUER, "AUTH_AUDIENCE": AUDIENCE}
    if jwks.issuer is not None:
        assert jwks.issuer.app_settings() == settings  # the local issuer's settings are the Bicep contract
    for name, value in {**settings, "COSMOS_KEY": "", "STORAGE_CONNECTION_STRING": "",
                        "RATE_LIMIT_PER_MINUTE": "0"}.items():
        monkeypatch.setenv(name, value)
    dependencies.reset()
    # The key cache is per JWKS URL per process: a server of an earlier test may have had this port, and its cache
    # (with a refetch cooldown just started) would then answer for this test's issuer.
    jwks_keys.cache_clear()
    with TestClient(create_api()) as client:
        yield client
    monkeypatch.undo()
    dependencies.reset()
    jwks_keys.cache_clear()


SIGNER = rsa_key()
SIGNER_KID = "key-2026-a"


def entra_claims(**changes: Any) -> dict[str, Any]:
    """A v2.0 access token's claims (tid and ver are checked; the rest as Entra writes them)."""
    entra = {"oid": "00000000-0000-0000-0000-00000000a11c", "tid": TENANT, "ver": "2.0",
             "azp": "2f0c8a51-58e1-4d1b-9a8c-1c4e9f0b7a22", "azpacr": "1", "uti": "AbCdEfGh12345678", "aio": "x"}
    return claims_for(ISSUER, AUDIENCE, **{**entra, **changes})


def entra_token(key: Any = SIGNER, alg: str = "RS256", kid: Any = SIGNER_KID, headers: dict[str, Any] | None = None,
                **changes: Any) -> str:
    extra: dict[str, Any] = {**({"kid": kid} if kid is not None else {}), **(headers or {})}
    return jwt.encode(entra_claims(**changes), key, algorithm=alg, headers=extra)


def public_pem() -> bytes:
    return SIGNER.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def jwk_n() -> bytes:
    return str(public_jwk(SIGNER, SIGNER_KID)["n"]).encode()


ENTRA_CASES = [
    Case("no header", lambda: {}),
    Case("empty bearer", lambda: {"Authorization": "Bearer "}),
    Case("wrong scheme", lambda: {"Authorization": f"JWT {entra_token()}"}),
    Case("alg none", lambda: bearer_of(raw_jwt({"alg": "none", "kid": SIGNER_KID}, entra_claims()))),
    Case("HS256 signed with the RSA public key PEM",
         lambda: bearer_of(hs256({"alg": "HS256", "kid": SIGNER_KID}, entra_claims(), public_pem()))),
    Case("HS256 signed with the JWK modulus",
         lambda: bearer_of(hs256({"alg": "HS256", "kid": SIGNER_KID}, entra_claims(), jwk_n()))),
    Case("RS384 with the real key", lambda: bearer_of(entra_token(alg="RS384"))),
    Case("PS256 with the real key", lambda: bearer_of(entra_token(alg="PS256"))),
    Case("ES256 with an attacker key", lambda: bearer_of(entra_token(key=EC_ATTACKER, alg="ES256"))),
    Case("attacker key under the real kid", lambda: bearer_of(entra_token(key=RSA_ATTACKER))),
    Case("attacker key under an unknown kid", lambda: bearer_of(entra_token(key=RSA_ATTACKER, kid="attacker-1"))),
    Case("second unknown kid", lambda: bearer_of(entra_token(key=RSA_ATTACKER, kid="attacker-2"))),
    Case("no kid", lambda: bearer_of(entra_token(kid=None))),
    Case("kid not a string", lambda: bearer_of(raw_jwt({"alg": "RS256", "kid": 7}, entra_claims(), b"s" * 256))),
    Case("kid path traversal", lambda: bearer_of(entra_token(kid="../../../etc/passwd"))),
    Case("kid oversized", lambda: bearer_of(entra_token(kid="k" * 500))),
    Case("wrong issuer", lambda: bearer_of(entra_token(iss="https://login.example.test/other-tenant/v2.0"))),
    Case("wrong audience", lambda: bearer_of(entra_token(aud="api://someone-else"))),
    Case("expired beyond leeway", lambda: bearer_of(entra_token(exp=int(time.time()) - 120))),
    Case("nbf in the future", lambda: bearer_of(entra_token(nbf=int(time.time()) + 600))),
    Case("missing exp", lambda: bearer_of(entra_token(exp=None))),
    Case("missing subject", lambda: bearer_of(entra_token(sub=None))),
    Case("oid with bad characters", lambda: bearer_of(entra_token(oid="a/b", sub="a/b"))),
    Case("jku to an attacker JWKS", lambda: bearer_of(entra_token(
        key=RSA_ATTACKER, kid="attacker-jku", headers={"jku": f"{_jwks_url['url']}/attacker"}))),
    Case("x5u to an attacker cert", lambda: bearer_of(entra_token(headers={"x5u": f"{_jwks_url['url']}/attacker"}))),
    Case("embedded jwk", lambda: bearer_of(entra_token(key=RSA_ATTACKER, kid="attacker-jwk",
                                                       headers={"jwk": public_jwk(RSA_ATTACKER, "attacker-jwk")}))),
    Case("x5c header", lambda: bearer_of(entra_token(headers={"x5c": ["MIIBIjANBg"]}))),
    Case("oversized", lambda: bearer_of(entra_token(pad="p" * MAX_TOKEN_BYTES))),
    Case("malformed base64", lambda: {"Authorization": "Bearer e30.e30.%%%"}),
    Case("signature tampered", lambda: bearer_of(tamper(entra_token(), 2))),
    Case("claims swapped, signature kept", lambda: bearer_of(replace_payload(entra_token(), entra_claims(oid="x")))),
    Case("local-mode key_id claim, tampered signature",
         lambda: bearer_of(tamper(entra_token(key_id="0" * 16), 2))),
    # Entra token shapes: v2.0 (v2 issuer, aud = client id, ver 2.0) or v1.0 (sts issuer, aud = api://client id,
    # ver 1.0), never a mix; the tenant named in AUTH_ISSUER only; the required claims present.
    Case("v2 issuer, application id URI as audience", lambda: bearer_of(entra_token(aud=f"api://{CLIENT_ID}"))),
    Case("the old default audience api://imgclass", lambda: bearer_of(entra_token(aud="api://imgclass"))),
    Case("v1 issuer, client id as audience", lambda: bearer_of(entra_token(iss=V1_ISSUER, ver="1.0"))),
    Case("v1 issuer and audience, ver 2.0", lambda: bearer_of(entra_token(iss=V1_ISSUER, aud=f"api://{CLIENT_ID}"))),
    Case("v2 shape, ver 1.0", lambda: bearer_of(entra_token(ver="1.0"))),
    Case("no ver", lambda: bearer_of(entra_token(ver=None))),
    Case("v1 issuer of another tenant", lambda: bearer_of(entra_token(
        iss="https://sts.windows.net/0e4b9a3c-1111-4222-8333-944455556666/", aud=f"api://{CLIENT_ID}", ver="1.0"))),
    Case("tid of another tenant", lambda: bearer_of(entra_token(tid="0e4b9a3c-1111-4222-8333-944455556666"))),
    Case("no tid", lambda: bearer_of(entra_token(tid=None))),
    Case("audience list holding ours", lambda: bearer_of(entra_token(aud=[CLIENT_ID, "api://someone-else"]))),
    Case("missing nbf", lambda: bearer_of(entra_token(nbf=None))),
    Case("missing iss", lambda: bearer_of(entra_token(iss=None))),
    Case("missing aud", lambda: bearer_of(entra_token(aud=None))),
    Case("issuer spelled with the tenant's domain", lambda: bearer_of(entra_token(
        iss="https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0"))),
]
_jwks_url: dict[str, str] = {}


def test_hostile_tokens_in_entra_mode_are_all_401_and_never_hammer_the_jwks(jwks: Jwks,
                                                                            entra_api: TestClient) -> None:
    jwks.publish([(SIGNER, SIGNER_KID)])
    _jwks_url["url"] = jwks.url
    valid = entra_api.get("/api/me", headers=bearer_of(entra_token()))
    assert valid.status_code == 200, valid.text
    assert valid.json()["user_id"] == "00000000-0000-0000-0000-00000000a11c"
    outcomes = {}
    for case in ENTRA_CASES:
        response = entra_api.get("/api/me", headers=case.headers())
        outcomes[case.name] = response.status_code
        assert response.json()["error"]["code"] == "unauthorized", case.name
    assert outcomes == {case.name: 401 for case in ENTRA_CASES}
    assert jwks.hits.get("/attacker", 0) == 0  # key sources named by a token are never contacted
    assert jwks.hits[jwks.keys_path] <= 2  # the first fetch, and at most one refetch for all the unknown kids
    assert entra_api.get("/api/me", headers=bearer_of(entra_token())).status_code == 200


def test_in_entra_mode_admin_comes_from_app_roles_never_from_scp(jwks: Jwks, entra_api: TestClient) -> None:
    jwks.publish([(SIGNER, SIGNER_KID)])
    consented = entra_api.get("/api/me", headers=bearer_of(entra_token(scope=None, scp="classify admin")))
    assert consented.status_code == 200 and consented.json()["scopes"] == ["classify"]
    assigned = entra_api.get("/api/me", headers=bearer_of(entra_token(scope=None, scp="classify", roles=["admin"])))
    assert assigned.json()["scopes"] == ["admin", "classify"]


def test_a_v1_token_with_its_own_issuer_and_audience_is_accepted(jwks: Jwks, entra_api: TestClient) -> None:
    jwks.publish([(SIGNER, SIGNER_KID)])
    v1 = entra_token(iss=V1_ISSUER, aud=f"api://{CLIENT_ID}", ver="1.0", azp=None, appid=CLIENT_ID)
    response = entra_api.get("/api/me", headers=bearer_of(v1))
    assert response.status_code == 200, response.text


def test_both_tables_hold_at_least_40_hostile_tokens() -> None:
    assert len(ENTRA_CASES) >= 30 and len(LOCAL_CASES) + len(ENTRA_CASES) >= 80


def test_key_rollover_causes_no_wrongful_401(jwks: Jwks, entra_api: TestClient) -> None:
    old_key, new_key = SIGNER, rsa_key()
    jwks.publish([(old_key, "old")])
    assert entra_api.get("/api/me", headers=bearer_of(entra_token(kid="old"))).status_code == 200
    jwks.publish([(old_key, "old"), (new_key, "new")])  # the issuer publishes the next key
    assert entra_api.get("/api/me", headers=bearer_of(entra_token(key=new_key, kid="new"))).status_code == 200
    assert entra_api.get("/api/me", headers=bearer_of(entra_token(kid="old"))).status_code == 200
    jwks.publish([(new_key, "new")])  # and retires the old one
    for _ in range(3):
        assert entra_api.get("/api/me", headers=bearer_of(entra_token(key=new_key, kid="new"))).status_code == 200


def test_a_key_published_right_after_start_up_is_accepted_at_once(jwks: Jwks, entra_api: TestClient) -> None:
    first, second = rsa_key(), rsa_key()
    jwks.publish([(first, "first")])
    assert entra_api.get("/api/me", headers=bearer_of(entra_token(key=first, kid="first"))).status_code == 200
    jwks.publish([(second, "second")])  # an abrupt switch, without a key published in advance
    assert entra_api.get("/api/me", headers=bearer_of(entra_token(key=second, kid="second"))).status_code == 200


def test_an_unreachable_jwks_is_503_not_401(entra_api: TestClient, jwks: Jwks, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    monkeypatch.setenv("AUTH_JWKS_URL", "http://127.0.0.1:9/keys")  # discard port: nothing listens
    dependencies.reset()
    response = entra_api.get("/api/me", headers=bearer_of(entra_token()))
    assert response.status_code == 503 and response.json()["error"]["code"] == "temporarily_unavailable"
