"""Bearer-token authentication with PyJWT, algorithm pinned per mode.

- local: the service signs short-lived HS256 tokens itself (development and self-hosting): minted by the
  CLI (`make token`) or exchanged for an API key at `POST /api/token` (those carry a `key_id` claim);
- entra: access tokens from Entra ID, RS256 only, keys from the issuer's JWKS with caching and a
  rate-limited refetch when an unknown `kid` appears (key rollover). A v2.0 token carries
  `iss` = `https://login.microsoftonline.com/{tid}/v2.0` and `aud` = the API's client id; a v1.0 token (an
  app registration left at `requestedAccessTokenVersion: null`) carries `iss` = `https://sts.windows.net/{tid}/`
  and `aud` = `api://{client id}`. Both are accepted, each only with its own issuer, audience and `ver`, and
  `tid` must be the configured tenant. `admin` comes only from app roles (`roles`): delegated scopes (`scp`)
  are consentable, not entitlements.
`iss`, `aud`, `exp`, `nbf` and `iat` are required and checked; the user id comes only from a validated token.
Every failure is `Unauthorized` (401); only an unreachable JWKS endpoint is a `TransientError` (503).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jwt

from shared_code.errors import BadRequest, Forbidden, TransientError, Unauthorized
from shared_code.results.blob_store import safe_user_id
from shared_code.settings import Settings

ALL_SCOPES = ("classify", "results:read", "results:write", "admin")
DEFAULT_USER_SCOPES = ("classify", "results:read", "results:write")
LEEWAY_S = 30
MAX_TOKEN_BYTES = 8192
MAX_LOCAL_TOKEN_MINUTES = 24 * 60
JWKS_LIFESPAN_S = 3600  # a key removed from the JWKS stops being trusted within this time
JWKS_MIN_REFETCH_S = 10  # unknown kids trigger at most one JWKS refetch per this interval
_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit", "b64", "zip")
_ALLOWED_TYPES = (None, "JWT", "jwt", "at+jwt", "application/at+jwt")
_KID = re.compile(r"^[A-Za-z0-9_.:=+/-]{1,128}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
ROLE_ONLY_SCOPES = frozenset({"admin"})  # in entra mode granted by an app role assignment, never by consent


@dataclass(frozen=True)
class TokenShape:
    """One accepted (issuer, audience, version) triple: a token must match all three of one shape."""

    issuer: str
    audience: str
    version: str | None  # None: the claim is not checked (locally issued tokens have no `ver`)


def accepted_shapes(settings: Settings) -> tuple[TokenShape, ...]:
    """The token shapes this deployment accepts: never an issuer of one shape with the audience of another."""
    if settings.AUTH_MODE == "local":
        return (TokenShape(settings.AUTH_ISSUER, settings.AUTH_AUDIENCE, None),)
    tenant, client_id = settings.entra_tenant_id, settings.AUTH_AUDIENCE
    return (TokenShape(settings.AUTH_ISSUER, client_id, "2.0"),
            TokenShape(f"https://sts.windows.net/{tenant}/", f"api://{client_id}", "1.0"))


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do; `key_id` is set when the token was exchanged for an API key."""

    user_id: str
    scopes: frozenset[str]
    key_id: str | None = None

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"this operation needs the {scope!r} scope")

    @property
    def via_api_key(self) -> bool:
        return self.key_id is not None


def issue_token(settings: Settings, user_id: str, scopes: tuple[str, ...] = DEFAULT_USER_SCOPES,
                minutes: int | None = None, *, key_id: str | None = None) -> str:
    """A locally signed HS256 access token (AUTH_MODE=local only)."""
    if settings.AUTH_MODE != "local":
        raise Forbidden("tokens are issued by the identity provider in this deployment")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.AUTH_ISSUER, "aud": settings.AUTH_AUDIENCE, "sub": user_id, "iat": now, "nbf": now,
        "exp": now + 60 * (minutes or settings.AUTH_TOKEN_MINUTES), "scope": " ".join(scopes),
        "jti": uuid.uuid4().hex,
    }
    if key_id is not None:
        claims["key_id"] = key_id
    return jwt.encode(claims, settings.AUTH_SIGNING_KEY, algorithm="HS256", headers={"typ": "JWT"})


class JwksKeys:
    """The issuer's signing keys: one cached JWKS, refetched on an unknown kid at most every few seconds.

    PyJWKClient's own per-kid LRU cache is not used: it never forgets a key that the issuer has removed.
    Its cooldown is replaced because it starts at the first fetch, which would refuse a key published
    moments after start-up; here only refetches caused by unknown kids start the cooldown.
    """

    def __init__(self, url: str, *, lifespan_s: float = JWKS_LIFESPAN_S,
                 min_refetch_s: float = JWKS_MIN_REFETCH_S) -> None:
        self._client = jwt.PyJWKClient(url, cache_keys=False, cache_jwk_set=True, lifespan=lifespan_s,
                                       timeout=5, cooldown_duration=0)
        self._min_refetch_s = min_refetch_s
        self._last_forced: float | None = None
        self._lock = threading.Lock()

    def signing_key(self, kid: str) -> jwt.PyJWK:
        """The RSA key named `kid`; raises `PyJWKClientError` when the issuer does not publish it."""
        with self._lock:
            key = self._match(self._client.get_signing_keys(), kid)
            if key is None and self._may_refetch():
                self._last_forced = time.monotonic()
                key = self._match(self._client.get_signing_keys(refresh=True), kid)
        if key is None:
            raise jwt.PyJWKClientError("the token names a key the issuer does not publish")
        if key.key_type != "RSA":
            raise jwt.InvalidKeyError("the issuer's key is not an RSA key")
        return key

    def _may_refetch(self) -> bool:
        return self._last_forced is None or time.monotonic() - self._last_forced >= self._min_refetch_s

    @staticmethod
    def _match(keys: list[jwt.PyJWK], kid: str) -> jwt.PyJWK | None:
        return next((key for key in keys if key.key_id == kid), None)


@lru_cache(maxsize=4)
def jwks_keys(url: str) -> JwksKeys:
    """One key cache per JWKS URL per process."""
    return JwksKeys(url)


def authenticate(settings: Settings, authorization: str | None) -> Principal:
    """Validate an `Authorization: Bearer` header and return the caller."""
    if not authorization:
        raise Unauthorized("missing bearer token")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("expected 'Authorization: Bearer <token>'")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized("token too large")
    try:
        header = jwt.get_unverified_header(token)
        _check_header(header)
        claims = _decode(settings, token, header)
    except jwt.PyJWKClientConnectionError as exc:
        raise TransientError("the identity provider's signing keys cannot be fetched right now") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {type(exc).__name__}") from exc
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        raise Unauthorized("malformed token") from exc
    return _principal(settings, claims)


def _check_header(header: dict[str, Any]) -> None:
    if any(name in header for name in _FORBIDDEN_HEADERS):
        raise Unauthorized("token header names a key source or extension; keys come only from configuration")
    if header.get("typ") not in _ALLOWED_TYPES:
        raise Unauthorized("token type is not an access token")


def _shape_of(settings: Settings, token: str) -> TokenShape:
    """The shape whose issuer the (not yet verified) token names; `jwt.decode` then verifies all of it."""
    issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
    for shape in accepted_shapes(settings):
        if issuer == shape.issuer:
            return shape
    raise jwt.InvalidIssuerError("token issuer is not accepted")


def _decode(settings: Settings, token: str, header: dict[str, Any]) -> dict[str, Any]:
    shape = _shape_of(settings, token)
    # strict_aud: `aud` must be exactly our audience as a string (Entra never issues audience lists).
    options: Any = {"require": ["exp", "iat", "nbf", "iss", "aud", "sub"],
                    "strict_aud": settings.AUTH_MODE == "entra"}
    key: Any
    if settings.AUTH_MODE == "local":
        if header.get("alg") != "HS256":
            raise jwt.InvalidAlgorithmError("algorithm not allowed")
        key, algorithm = settings.AUTH_SIGNING_KEY, "HS256"
    else:
        if header.get("alg") != "RS256":
            raise jwt.InvalidAlgorithmError("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
            raise jwt.InvalidTokenError("token has no usable kid")  # never refetch the JWKS for these
        key, algorithm = jwks_keys(settings.AUTH_JWKS_URL).signing_key(kid).key, "RS256"
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=[algorithm], audience=shape.audience, issuer=shape.issuer,
        leeway=LEEWAY_S, options=options,
    )
    if shape.version is not None and claims.get("ver") != shape.version:
        raise jwt.InvalidTokenError("token version does not match its issuer")
    if settings.AUTH_MODE == "entra" and claims.get("tid") != settings.entra_tenant_id:
        raise jwt.InvalidTokenError("token is from another tenant")
    # PyJWT has checked that exp and iat are integers and iat is not in the future.
    if settings.AUTH_MODE == "local" and int(claims["exp"]) - int(claims["iat"]) > 60 * MAX_LOCAL_TOKEN_MINUTES:
        raise jwt.InvalidTokenError("token lifetime exceeds what this service issues")
    return claims


def _principal(settings: Settings, claims: dict[str, Any]) -> Principal:
    subject = claims.get("oid") or claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthorized("token has no subject")
    try:
        user_id = safe_user_id(subject)
    except BadRequest as exc:
        raise Unauthorized("token subject has characters that are not allowed") from exc
    key_id = claims.get("key_id") if settings.AUTH_MODE == "local" else None
    if key_id is not None and (not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id)):
        raise Unauthorized("token names a malformed API key id")
    scopes = _entra_scopes(claims) if settings.AUTH_MODE == "entra" else _local_scopes(claims)
    return Principal(user_id=user_id, scopes=scopes, key_id=key_id)


def _space_separated(claims: dict[str, Any], name: str) -> set[str]:
    value = claims.get(name)
    return set(value.split()) if isinstance(value, str) else set()


def _role_list(claims: dict[str, Any]) -> set[str]:
    roles = claims.get("roles")
    return {role for role in roles if isinstance(role, str)} if isinstance(roles, list) else set()


def _local_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """Tokens this service signed itself: whatever scopes it wrote (`scope`; `scp`/`roles` for symmetry)."""
    granted = _space_separated(claims, "scope") | _space_separated(claims, "scp") | _role_list(claims)
    return frozenset(scope for scope in granted if scope in ALL_SCOPES)


def _entra_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """Delegated scopes (`scp`) minus the role-only ones, plus app roles (`roles`) assigned to the user or app."""
    delegated = _space_separated(claims, "scp") - ROLE_ONLY_SCOPES
    return frozenset(scope for scope in delegated | _role_list(claims) if scope in ALL_SCOPES)
