"""FastAPI dependencies shared by every router: the service, settings, and scope-checked callers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from functions.dependencies import SettingsDep, get_components
from functions.schema_base import ApiModel
from shared_code.errors import Forbidden, Unauthorized
from shared_code.identity.auth import Principal, authenticate
from shared_code.identity.rate_limit import TokenBucketLimiter
from shared_code.settings import Settings

bearer = HTTPBearer(auto_error=False, description="JWT: `make token USER=<id>` or `POST /api/token` locally, "
                                                  "Entra ID in Azure")


def current_principal(credentials: HTTPAuthorizationCredentials | None, settings: Settings) -> Principal:
    """The caller of a request (blocking: an Entra key refresh or an API key's revocation check may do I/O)."""
    header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    principal = authenticate(settings, header)
    # Tokens exchanged for an API key die with the key: a cached point read per key (see api_keys). The key
    # store is asked for only then (and so are the worker's components): building it connects to Cosmos, which
    # a plain user token never needs, and an unauthenticated request must get its 401 before anything is built.
    if principal.key_id is not None and not get_components().keys.is_active(principal.user_id, principal.key_id):
        raise Unauthorized("the API key this token was issued for has been revoked")
    return principal


def require(scope: str | None, *, user_token: bool = False) -> Any:
    """Authenticate, apply the caller's rate limit, and check one scope (None: any authenticated caller).

    `user_token=True` refuses tokens exchanged for an API key: a leaked key must not mint more keys or
    delete the account. All of it (token check, key revocation read, shared rate-limit counter: each may block)
    runs in one thread-pool call, not one per step.
    """

    def authorise(credentials: HTTPAuthorizationCredentials | None, settings: Settings) -> Principal:
        principal = current_principal(credentials, settings)
        get_components().rate_limiter.check(f"user:{principal.user_id}")
        if scope is not None:
            principal.require(scope)
        if user_token and principal.via_api_key:
            raise Forbidden("this operation needs a user token, not a token exchanged for an API key")
        return principal

    async def checker(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                      settings: SettingsDep) -> Principal:
        return await run_in_threadpool(authorise, credentials, settings)

    return Depends(checker)


def charge_images(limiter: TokenBucketLimiter, principal: Principal, count: int) -> None:
    """Count `count` images against the caller's image limit (429 with Retry-After when over it).

    Requests are limited per request (`require`); work that scales with images (upload grants, HTTP
    classification) is also limited per image, so a folder sent as a few batch requests is neither
    throttled by the request count nor a way around the per-image rate.
    """
    limiter.check(f"images:{principal.user_id}", cost=count)


class ErrorDetail(ApiModel):
    code: str
    message: str


class ErrorBody(ApiModel):
    """The one error shape of the API."""

    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "Bad request (undecodable image, invalid value)",
    401: "Missing, invalid, expired or revoked bearer token",
    403: "The token lacks the scope, or the operation needs a user token",
    404: "Not found (or owned by another user)",
    409: "Conflict: the account was erased while this request was in flight",
    413: "Payload, image or pixel count too large",
    415: "Unsupported content type or image format",
    422: "Request validation failed, or the image took too long to decode",
    429: "Rate limit exceeded; see Retry-After",
    503: "A dependency is temporarily unavailable; retry",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries in the one error shape (429 documents its Retry-After header)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[status]}
        if status == 429:
            entry["headers"] = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
        responses[status] = entry
    return responses


AUTH_ERRORS = error_responses(401, 403, 422, 429, 503)
