"""Identity routes: token exchange for API keys, key management, and the caller's own account.

- `POST /api/token`: JSON `{"api_key": "ick_..."}` -> a short-lived bearer token (AUTH_MODE=local only);
- `POST/GET /api/keys`, `DELETE /api/keys/{key_id}`: the caller's API keys (user tokens only);
- `GET /api/me`, `GET /api/me/export`, `DELETE /api/me`: who am I, download my data, erase my data.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from functions.api_deps import AUTH_ERRORS, error_responses, require
from functions.dependencies import AccountDep, ComponentsDep, RateLimiterDep, SettingsDep, TokenLimiterDep
from functions.schema_base import ApiModel
from shared_code.errors import Forbidden, NotFound
from shared_code.identity.api_keys import (
    ApiKeyRecord,
    KeyStore,
    grantable_scopes,
    parse_key,
)
from shared_code.identity.auth import Principal, issue_token
from shared_code.settings import Settings

Scope = Literal["classify", "results:read", "results:write", "admin"]
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


# --- schemas ------------------------------------------------------------------------------------------
class TokenRequest(ApiModel):
    api_key: str = Field(min_length=1, max_length=1024, description="An API key from POST /api/keys")


class TokenPublic(ApiModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int = Field(description="Seconds until the token expires")
    scope: str = Field(description="Space-separated scopes")


class ApiKeyCreate(ApiModel):
    name: str = Field(default="", max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$", examples=["nightly batch"])
    scopes: list[Scope] | None = Field(default=None, max_length=4, json_schema_extra={"minItems": 1},  # 400 if empty
                                       description="A subset of the caller's scopes; default: the caller's")


class ApiKeyPublic(ApiModel):
    id: str
    name: str
    scopes: list[str]
    prefix: str = Field(description="Recognisable part of the key; the secret is never shown again")
    created_at: str
    last_used_at: str | None


class ApiKeyCreated(ApiKeyPublic):
    api_key: str = Field(description="The key itself: shown once, store it now")


class ApiKeyList(ApiModel):
    items: list[ApiKeyPublic]


class MePublic(ApiModel):
    user_id: str
    scopes: list[str]
    via_api_key: bool


class DeletionPublic(ApiModel):
    blobs: int
    results: int
    keys: int
    feedback: int


class UserExport(ApiModel):
    user_id: str
    exported_at: str
    results: list[dict[str, object]]
    api_keys: list[dict[str, object]]


def key_public(record: ApiKeyRecord) -> ApiKeyPublic:
    return ApiKeyPublic(id=record.id, name=record.name, scopes=record.scopes, prefix=record.display_prefix,
                        created_at=record.created_at, last_used_at=record.last_used_at)


# --- dependencies -------------------------------------------------------------------------------------
def local_key_store(settings: SettingsDep, components: ComponentsDep) -> KeyStore:
    """API keys exist only where the service issues tokens itself; with Entra ID, use its credentials."""
    if settings.AUTH_MODE != "local":  # checked before the store is built: that connects to Cosmos
        raise Forbidden("API keys are not used with AUTH_MODE=entra: use Entra ID client credentials")
    return components.keys


LocalKeyStoreDep = Annotated[KeyStore, Depends(local_key_store)]


def client_address(request: Request, settings: Settings) -> str:
    """The caller's address: the front end's X-Forwarded-For entry in Azure, the peer address otherwise.

    Only the last entry is the front end's own; earlier ones are whatever the client sent. Locally there is
    no front end, so the header (any client may set it) is ignored unless TRUST_FORWARDED_FOR is on.
    """
    if settings.TRUST_FORWARDED_FOR:
        forwarded = request.headers.get("x-forwarded-for", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            host = last.rsplit(":", 1)[0] if last.count(":") == 1 else last  # IPv4:port; IPv6 left whole
            return host[:64]
    return request.client.host if request.client else "unknown"


# --- routes -------------------------------------------------------------------------------------------
router = APIRouter(prefix="/api", tags=["identity"])


@router.post("/token", responses=error_responses(400, 401, 403, 422, 429, 503))
async def exchange_api_key(body: TokenRequest, settings: SettingsDep, components: ComponentsDep,
                           limiter: RateLimiterDep, per_client: TokenLimiterDep, request: Request) -> TokenPublic:
    """Exchange an API key (JSON body, client-credentials style) for a short-lived bearer token."""
    if settings.AUTH_MODE != "local":
        raise Forbidden("tokens are issued by Entra ID in this deployment")
    # Per client address first: the key id is the caller's choice, so it alone cannot stop guessing.
    await run_in_threadpool(per_client.check, f"ip:{client_address(request, settings)}")
    _, key_id, _ = parse_key(body.api_key)
    limiter.check(f"key:{key_id}")
    record = await run_in_threadpool(components.keys.verify, body.api_key)
    minutes = settings.API_KEY_TOKEN_MINUTES
    scopes = tuple(record.scopes)
    token = issue_token(settings, record.user_id, scopes, minutes, key_id=record.id)
    return TokenPublic(access_token=token, expires_in=60 * minutes, scope=" ".join(scopes))


@router.post("/keys", status_code=201, responses={**AUTH_ERRORS, **error_responses(400, 409)})
async def create_api_key(principal: Annotated[Principal, require(None, user_token=True)], keys: LocalKeyStoreDep,
                         body: ApiKeyCreate) -> ApiKeyCreated:
    """Create an API key; the response is the only time its secret is shown."""
    scopes = grantable_scopes(principal, body.scopes)
    record, api_key = await run_in_threadpool(keys.create, principal.user_id, body.name, scopes)
    return ApiKeyCreated(**key_public(record).model_dump(), api_key=api_key)


@router.get("/keys", responses=AUTH_ERRORS)
async def list_api_keys(principal: Annotated[Principal, require(None, user_token=True)],
                        keys: LocalKeyStoreDep) -> ApiKeyList:
    """The caller's API keys, without secrets."""
    records = await run_in_threadpool(keys.list, principal.user_id)
    return ApiKeyList(items=[key_public(record) for record in records])


@router.delete("/keys/{key_id}", status_code=204, responses={**AUTH_ERRORS, **error_responses(404)})
async def revoke_api_key(principal: Annotated[Principal, require(None, user_token=True)], keys: LocalKeyStoreDep,
                         key_id: Annotated[str, Path(max_length=64)]) -> None:
    """Revoke one of the caller's keys: new exchanges fail at once, its tokens within 30 s on every instance."""
    if not _KEY_ID.fullmatch(key_id):
        raise NotFound(f"no API key {key_id!r}")
    await run_in_threadpool(keys.revoke, principal.user_id, key_id)


@router.get("/me", responses=error_responses(401, 429, 503))
async def who_am_i(principal: Annotated[Principal, require(None)]) -> MePublic:
    """The caller as the service sees it: user id and scopes from the validated token."""
    return MePublic(user_id=principal.user_id, scopes=sorted(principal.scopes), via_api_key=principal.via_api_key)


@router.get("/me/export", response_model=UserExport, responses=AUTH_ERRORS)
async def export_my_data(principal: Annotated[Principal, require("results:read")],
                         account: AccountDep) -> Response:
    """Everything stored about the caller (results and key metadata) as a JSON download."""
    export = await run_in_threadpool(account.export, principal.user_id)
    return Response(
        content=json.dumps(export, ensure_ascii=False), media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="imgclass-export-{principal.user_id}.json"'},
    )


@router.delete("/me", responses=AUTH_ERRORS)
async def delete_my_data(principal: Annotated[Principal, require("results:write", user_token=True)],
                         account: AccountDep) -> DeletionPublic:
    """Erase the caller's uploads, results, API keys and feedback; returns how many of each were removed."""
    report = await run_in_threadpool(account.delete, principal.user_id)
    return DeletionPublic(**report.as_dict())
