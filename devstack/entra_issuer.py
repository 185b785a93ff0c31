"""A local stand-in for Entra ID's token side: OpenID discovery, a JWKS with key rotation, Entra-shaped tokens.

The issuer string in the tokens and the discovery document is the real one,
`https://login.microsoftonline.com/{tenant}/v2.0`, so the app runs with exactly the settings Bicep gives
it (AUTH_ISSUER, AUTH_AUDIENCE = the API's client id); only AUTH_JWKS_URL is substituted by this server's
loopback address, the way emulator endpoints replace Azure ones. Paths mirror Entra's:

- `GET /{tenant}/v2.0/.well-known/openid-configuration`
- `GET /{tenant}/discovery/v2.0/keys`

Tokens are minted in process (`user_token`, `app_token`, `v1_user_token`), shaped like Entra's access tokens:
header `typ`/`alg` RS256/`kid`; claims `aud`, `iss`, `iat`, `nbf`, `exp`, `aio`, `azp` (v2) or `appid` (v1),
`azpacr`/`appidacr`, `oid`, `sub`, `tid`, `uti`, `rh`, `ver`, and `scp` for delegated (user) tokens,
`roles` for app role assignments (applications, and users assigned a role such as `admin`). `mint` takes
arbitrary claims for hostile variants. `rotate()` publishes a new key and signs with it; `retire(kid)`
stops publishing a key; `publish()` replaces the published keys (tests that bring their own keys).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devstack.loopback_json import LoopbackJsonServer, LoopbackService
from devstack.processes import LOOPBACK

AUTHORITY_HOST = "https://login.microsoftonline.com"
TOKEN_LIFETIME_S = 3600


def new_rsa_key() -> rsa.RSAPrivateKey:
    """A 2048-bit RSA signing key, the size Entra ID uses."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _kid_for(key: rsa.RSAPrivateKey) -> str:
    # Entra's kids are base64url thumbprint-like strings; a hash of the public modulus has the same shape.
    modulus = key.public_key().public_numbers().n.to_bytes(256, "big")
    return base64.urlsafe_b64encode(hashlib.sha1(modulus).digest()).rstrip(b"=").decode()  # noqa: S324 - an id


@dataclass
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    def public_jwk(self, issuer: str) -> dict[str, Any]:
        """The key as Entra publishes it: kty/use/kid/n/e (and `issuer`), without `alg`."""
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {"kty": "RSA", "use": "sig", "kid": self.kid, "n": jwk["n"], "e": jwk["e"], "issuer": issuer}


@dataclass
class EntraIssuer(LoopbackService):
    """The issuer for one tenant and one API app registration (its client id is the tokens' `aud`)."""

    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    host: str = LOOPBACK
    port: int = 0
    hits: dict[str, int] = field(default_factory=dict)
    _keys: list[SigningKey] = field(default_factory=list)
    _signing: SigningKey | None = None
    _server: LoopbackJsonServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- addresses ------------------------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        """`iss` of v2.0 access tokens, and AUTH_ISSUER."""
        return f"{AUTHORITY_HOST}/{self.tenant_id}/v2.0"

    @property
    def v1_issuer(self) -> str:
        """`iss` of v1.0 access tokens (app registrations without `requestedAccessTokenVersion: 2`)."""
        return f"https://sts.windows.net/{self.tenant_id}/"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def jwks_path(self) -> str:
        return f"/{self.tenant_id}/discovery/v2.0/keys"

    @property
    def jwks_url(self) -> str:
        """What AUTH_JWKS_URL is set to locally (Bicep: https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys)."""
        return f"{self.base_url}{self.jwks_path}"

    @property
    def discovery_url(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/v2.0/.well-known/openid-configuration"

    def app_settings(self) -> dict[str, str]:
        """The identity settings main.bicep gives the app, with the JWKS address substituted."""
        return {"AUTH_MODE": "entra", "AUTH_ISSUER": self.issuer, "AUTH_AUDIENCE": self.client_id,
                "AUTH_JWKS_URL": self.jwks_url}

    def discovery_document(self) -> dict[str, Any]:
        tenant = f"{AUTHORITY_HOST}/{self.tenant_id}"
        return {
            "issuer": self.issuer, "jwks_uri": self.jwks_url,
            "authorization_endpoint": f"{tenant}/oauth2/v2.0/authorize",
            "token_endpoint": f"{tenant}/oauth2/v2.0/token",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"], "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "oid", "tid", "ver", "roles", "scp"],
            "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com",
        }

    # --- keys -----------------------------------------------------------------------------------------
    @property
    def signing_kid(self) -> str:
        return self._current().kid

    @property
    def signing_private_key(self) -> rsa.RSAPrivateKey:
        """The current signing key (tests share it with another issuer to isolate one claim)."""
        return self._current().private_key

    @property
    def published_kids(self) -> list[str]:
        with self._lock:
            return [key.kid for key in self._keys]

    def rotate(self) -> str:
        """Publish a new key and sign with it from now on; the previous keys stay published. Returns its kid."""
        key = new_rsa_key()
        signing = SigningKey(_kid_for(key), key)
        with self._lock:
            self._keys.append(signing)
            self._signing = signing
        return signing.kid

    def retire(self, kid: str) -> None:
        """Stop publishing `kid` (the end of a rollover)."""
        with self._lock:
            self._keys = [key for key in self._keys if key.kid != kid]

    def publish(self, keys: list[tuple[str, rsa.RSAPrivateKey]]) -> None:
        """Replace the published keys (the first one signs); for tests that hold their own keys."""
        with self._lock:
            self._keys = [SigningKey(kid, key) for kid, key in keys]
            self._signing = self._keys[0] if self._keys else None

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [key.public_jwk(self.issuer) for key in self._keys]}

    def _current(self) -> SigningKey:
        with self._lock:
            signing = self._signing
        if signing is None:
            raise RuntimeError("the issuer has no signing key: call rotate() or publish() first")
        return signing

    # --- tokens ---------------------------------------------------------------------------------------
    def base_claims(self, *, oid: str, client_app_id: str, version: str = "2.0",
                    lifetime_s: int = TOKEN_LIFETIME_S) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": self.client_id if version == "2.0" else f"api://{self.client_id}",
            "iss": self.issuer if version == "2.0" else self.v1_issuer,
            "iat": now, "nbf": now, "exp": now + lifetime_s,
            "aio": secrets.token_urlsafe(40), "oid": oid, "sub": oid, "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16), "rh": f"0.{secrets.token_urlsafe(30)}.", "ver": version,
        }
        if version == "2.0":
            claims.update(azp=client_app_id, azpacr="1")
        else:
            claims.update(appid=client_app_id, appidacr="1")
        return claims

    def user_token(self, oid: str, scopes: tuple[str, ...] = ("classify", "results:read", "results:write"),
                   roles: tuple[str, ...] = (), *, client_app_id: str | None = None, name: str = "Local User",
                   **changes: Any) -> str:
        """A delegated v2.0 token: `scp` from consent, `roles` only if the user is assigned app roles."""
        claims = self.base_claims(oid=oid, client_app_id=client_app_id or str(uuid.uuid4()))
        claims.update(name=name, preferred_username=f"{oid[:8]}@contoso.test", scp=" ".join(scopes))
        if roles:
            claims["roles"] = list(roles)
        return self.mint({**claims, **changes})

    def app_token(self, client_app_id: str, roles: tuple[str, ...], *, oid: str | None = None,
                  **changes: Any) -> str:
        """An application (client-credentials) v2.0 token: `roles`, no `scp`, `idtyp` app."""
        claims = self.base_claims(oid=oid or str(uuid.uuid4()), client_app_id=client_app_id)
        claims.update(idtyp="app", roles=list(roles))
        return self.mint({**claims, **changes})

    def v1_user_token(self, oid: str, scopes: tuple[str, ...] = ("classify",), **changes: Any) -> str:
        """A delegated v1.0 token: issuer sts.windows.net/{tid}/, `aud` the application id URI api://{client id}."""
        claims = self.base_claims(oid=oid, client_app_id=str(uuid.uuid4()), version="1.0")
        claims.update(scp=" ".join(scopes), unique_name=f"{oid[:8]}@contoso.test")
        return self.mint({**claims, **changes})

    def mint(self, claims: dict[str, Any], *, kid: str | None = None,
             key: rsa.RSAPrivateKey | None = None) -> str:
        """Sign `claims` as the issuer does (RS256, `typ` JWT, `kid` header); keys `None` in claims are dropped."""
        signing = self._current()
        body = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(body, key or signing.private_key, algorithm="RS256",
                          headers={"typ": "JWT", "kid": kid or signing.kid})

    # --- server ---------------------------------------------------------------------------------------
    def start(self) -> Self:
        if not self._keys:
            self.rotate()
        self._server = LoopbackJsonServer(self._answer, host=self.host, port=self.port, name="entra-issuer")
        self.port = self._server.start()
        return self

    def _answer(self, path: str, _query: dict[str, list[str]], _headers: Message) -> tuple[int, object]:
        with self._lock:
            self.hits[path] = self.hits.get(path, 0) + 1
        if path == self.jwks_path:
            return 200, self.jwks()
        if path == f"/{self.tenant_id}/v2.0/.well-known/openid-configuration":
            return 200, self.discovery_document()
        return 404, {"error": "not_found", "error_description": f"no such path {path}"}



def main() -> None:
    """`python -m devstack.entra_issuer [--port N]`: serve, print the app settings and a sample user token."""
    import argparse  # noqa: PLC0415 - command-line use only

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tenant", default=str(uuid.uuid4()))
    parser.add_argument("--client-id", default=str(uuid.uuid4()))
    parser.add_argument("--user", default="00000000-0000-0000-0000-0000000a11ce", help="oid of the sample token")
    args = parser.parse_args()
    with EntraIssuer(tenant_id=args.tenant, client_id=args.client_id, port=args.port) as issuer:
        print(json.dumps(issuer.app_settings()), flush=True)
        print(issuer.user_token(args.user), flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
