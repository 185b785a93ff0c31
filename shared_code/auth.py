"""Bearer-token authentication with PyJWT, algorithm pinned per mode.

- local: the service signs short-lived HS256 tokens itself (development and self-hosting);
- entra: tokens from Entra ID (or any OIDC issuer), RS256 only, keys from the issuer's JWKS with caching
  and a refetch when an unknown `kid` appears (key rollover).
`iss`, `aud`, `exp`, `nbf` and `iat` are always checked; the user id comes only from a validated token.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jwt

from shared_code.errors import Forbidden, Unauthorized
from shared_code.settings import Settings

ALL_SCOPES = ("classify", "results:read", "results:write", "admin")
DEFAULT_USER_SCOPES = ("classify", "results:read", "results:write")
LEEWAY_S = 30
MAX_TOKEN_BYTES = 8192
_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do."""

    user_id: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"this operation needs the {scope!r} scope")


def issue_token(settings: Settings, user_id: str, scopes: tuple[str, ...] = DEFAULT_USER_SCOPES,
                minutes: int | None = None) -> str:
    """A locally signed HS256 access token (AUTH_MODE=local only)."""
    if settings.AUTH_MODE != "local":
        raise Forbidden("tokens are issued by the identity provider in this deployment")
    now = int(time.time())
    claims = {
        "iss": settings.AUTH_ISSUER, "aud": settings.AUTH_AUDIENCE, "sub": user_id, "iat": now, "nbf": now,
        "exp": now + 60 * (minutes or settings.AUTH_TOKEN_MINUTES), "scope": " ".join(scopes),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, settings.AUTH_SIGNING_KEY, algorithm="HS256")


@lru_cache(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    # Keys cached for an hour; PyJWKClient refetches the set when a token names a kid it has not seen.
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=3600, timeout=5)


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
        if any(name in header for name in _FORBIDDEN_HEADERS):
            raise Unauthorized("token header names a key source; keys come only from configuration")
        claims = _decode(settings, token, header)
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {type(exc).__name__}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise Unauthorized("malformed token") from exc
    user_id = str(claims.get("oid") or claims.get("sub") or "")
    if not user_id:
        raise Unauthorized("token has no subject")
    return Principal(user_id=user_id, scopes=_scopes(claims))


def _decode(settings: Settings, token: str, header: dict[str, Any]) -> dict[str, Any]:
    options: Any = {"require": ["exp", "iat", "iss", "aud", "sub"]}
    if settings.AUTH_MODE == "local":
        if header.get("alg") != "HS256":
            raise jwt.InvalidAlgorithmError("algorithm not allowed")
        key: Any = settings.AUTH_SIGNING_KEY
        algorithm = "HS256"
    else:
        if header.get("alg") != "RS256":
            raise jwt.InvalidAlgorithmError("algorithm not allowed")
        key = _jwks_client(settings.AUTH_JWKS_URL).get_signing_key_from_jwt(token).key
        algorithm = "RS256"
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=[algorithm], audience=settings.AUTH_AUDIENCE, issuer=settings.AUTH_ISSUER,
        leeway=LEEWAY_S, options=options,
    )
    return claims


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    granted: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            granted.update(value.split())
    roles = claims.get("roles")
    if isinstance(roles, list):
        granted.update(str(role) for role in roles)
    return frozenset(scope for scope in granted if scope in ALL_SCOPES)
