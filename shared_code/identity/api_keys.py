"""API keys: long-lived client secrets, exchanged at `POST /api/token` for short-lived bearer tokens.

A key reads `ick_<owner>_<key_id>_<secret>`: `owner` is the user id in hex (so the owning partition is known
and the lookup is a point read), `key_id` 16 hex digits, `secret` 256 random bits in hex. Only an
HMAC-SHA256 of the secret under a per-key random salt is stored; a slow hash (scrypt) protects guessable
passwords, and a 256-bit random secret is not guessable, so a fast hash costs an attacker nothing more.
Revoking deletes the document; tokens already issued from it carry `key_id` and are refused as soon as
the per-instance status cache (REVOCATION_CACHE_S) expires, immediately on the instance that revoked.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosHttpResponseError,
    CosmosResourceNotFoundError,
)
from pydantic import BaseModel, ConfigDict, Field

from shared_code.cosmos import read_or_none, translate_cosmos_error, utc_now
from shared_code.errors import AccountErased, BadRequest, Forbidden, NotFound, Unauthorized
from shared_code.identity.auth import ALL_SCOPES, Principal
from shared_code.results.blob_store import safe_user_id

logger = logging.getLogger(__name__)

KEY_PREFIX = "ick"
MAX_KEYS_PER_USER = 20
REVOCATION_CACHE_S = 30.0
LAST_USED_WRITE_S = 300.0  # last-use time is written at most this often per key
_STATUS_CACHE_SIZE = 10_000
_KEY = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{2,256}})_([0-9a-f]{{16}})_([0-9a-f]{{64}})$")


class ApiKeyRecord(BaseModel):
    """One stored key: metadata and the salted hash of its secret, never the secret."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str
    user_id: str = Field(alias="userId")
    name: str = ""
    scopes: list[str]
    salt: str
    secret_hash: str = Field(alias="secretHash")
    created_at: str = Field(default_factory=utc_now, alias="createdAt")
    last_used_at: str | None = Field(default=None, alias="lastUsedAt")
    etag: str | None = Field(default=None, alias="_etag", exclude=True)  # version read: if-match of the touch

    @property
    def display_prefix(self) -> str:
        """What lists show so a person can recognise a key without its secret."""
        return f"{KEY_PREFIX}_…_{self.id}"

    def to_cosmos(self) -> dict[str, Any]:
        return {**self.model_dump(by_alias=True, mode="json"), "type": "apiKey"}


def format_key(user_id: str, key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}_{user_id.encode('utf-8').hex()}_{key_id}_{secret}"


def parse_key(api_key: str) -> tuple[str, str, str]:
    """(user_id, key_id, secret) of a well-formed key; anything else is `Unauthorized`."""
    match = _KEY.fullmatch(api_key.strip())
    if match is None:
        raise Unauthorized("malformed API key")
    owner_hex, key_id, secret = match.groups()
    try:
        user_id = safe_user_id(bytes.fromhex(owner_hex).decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeDecodeError, BadRequest) as exc:
        raise Unauthorized("malformed API key") from exc
    return user_id, key_id, secret


def hash_secret(salt: bytes, secret: str) -> str:
    return hmac.new(salt, secret.encode("ascii"), hashlib.sha256).hexdigest()


def grantable_scopes(caller: Principal, requested: Iterable[str] | None) -> list[str]:
    """Scopes for a new key: a subset of the caller's (admin may grant any); default: the caller's, minus admin."""
    held = set(ALL_SCOPES) if "admin" in caller.scopes else set(caller.scopes)
    if requested is None:
        wanted = held - {"admin"} or held
        if not wanted:
            raise Forbidden("the caller has no scopes to grant to a key")
    else:
        wanted = set(requested)
        unknown = wanted - set(ALL_SCOPES)
        if unknown:
            raise BadRequest(f"unknown scopes: {', '.join(sorted(unknown))}")
        if not wanted:
            raise BadRequest("a key needs at least one scope")
        if not wanted <= held:
            raise Forbidden(f"a key cannot have scopes the caller lacks: {', '.join(sorted(wanted - held))}")
    return [scope for scope in ALL_SCOPES if scope in wanted]



class KeyStore:
    """API keys of one Cosmos container partitioned by /userId, with a per-instance revocation cache."""

    def __init__(self, container: ContainerProxy, *, revocation_cache_s: float = REVOCATION_CACHE_S,
                 erased_recently: Callable[[str], bool] | None = None) -> None:
        self.container = container
        self._erased_recently = erased_recently  # identity.erasure: checked after a key is created
        self._cache_s = revocation_cache_s
        self._status: OrderedDict[tuple[str, str], tuple[bool, float]] = OrderedDict()
        self._lock = threading.Lock()

    # --- management --------------------------------------------------------------------------------------
    def create(self, user_id: str, name: str, scopes: list[str]) -> tuple[ApiKeyRecord, str]:
        """Store a new key and return it with its full text, which is never available again."""
        user_id = safe_user_id(user_id)
        if len(self.list(user_id)) >= MAX_KEYS_PER_USER:
            raise Forbidden(f"a user may have at most {MAX_KEYS_PER_USER} API keys; revoke one first")
        key_id, secret, salt = secrets.token_hex(8), secrets.token_hex(32), secrets.token_bytes(16)
        record = ApiKeyRecord(id=key_id, user_id=user_id, name=name, scopes=scopes, salt=salt.hex(),
                              secret_hash=hash_secret(salt, secret))
        try:
            self.container.create_item(record.to_cosmos())
        except CosmosHttpResponseError as exc:
            raise translate_cosmos_error(exc) from exc
        if self._erased_recently is not None and self._erased_recently(user_id):
            # Check after write: the account was erased while this request was in flight; the key goes too.
            self.revoke(user_id, key_id)
            raise AccountErased("this account's data was erased while the request was in flight; no key was kept")
        self._remember(user_id, key_id, active=True)
        return record, format_key(user_id, key_id, secret)

    def list(self, user_id: str) -> list[ApiKeyRecord]:
        """The user's keys, oldest first (metadata only)."""
        try:
            items = list(self.container.query_items(
                "SELECT * FROM c WHERE c.userId = @user", parameters=[{"name": "@user", "value": user_id}],
                partition_key=user_id,
            ))
        except CosmosResourceNotFoundError:
            return []
        except CosmosHttpResponseError as exc:
            raise translate_cosmos_error(exc) from exc
        records = [ApiKeyRecord.model_validate(item) for item in items if item.get("type") == "apiKey"]
        return sorted(records, key=lambda record: record.created_at)

    def revoke(self, user_id: str, key_id: str) -> None:
        """Delete one of the user's keys; another user's key id is simply not found."""
        try:
            self.container.delete_item(key_id, partition_key=user_id)
        except CosmosResourceNotFoundError as exc:
            raise NotFound(f"no API key {key_id!r}") from exc
        except CosmosHttpResponseError as exc:
            raise translate_cosmos_error(exc) from exc
        finally:
            self._remember(user_id, key_id, active=False)

    def delete_all(self, user_id: str) -> int:
        """Revoke every key of the user (account deletion); returns how many there were."""
        records = self.list(user_id)
        for record in records:
            try:
                self.revoke(user_id, record.id)
            except NotFound:
                continue  # revoked concurrently: the outcome asked for
        return len(records)

    # --- use ---------------------------------------------------------------------------------------------
    def verify(self, api_key: str) -> ApiKeyRecord:
        """The stored key matching `api_key`; `Unauthorized` for unknown, revoked or wrong secrets."""
        user_id, key_id, secret = parse_key(api_key)
        record = self._read(user_id, key_id)
        if record is None or not hmac.compare_digest(hash_secret(bytes.fromhex(record.salt), secret),
                                                    record.secret_hash):
            raise Unauthorized("unknown or revoked API key")
        self._remember(user_id, key_id, active=True)
        self._touch(record)
        return record

    def is_active(self, user_id: str, key_id: str) -> bool:
        """Whether a key still exists; answered from a short per-instance cache (revocation check on use)."""
        now = time.monotonic()
        with self._lock:
            cached = self._status.get((user_id, key_id))
        if cached is not None and now - cached[1] < self._cache_s:
            return cached[0]
        active = self._read(user_id, key_id) is not None
        self._remember(user_id, key_id, active=active)
        return active

    def _read(self, user_id: str, key_id: str) -> ApiKeyRecord | None:
        item = read_or_none(self.container, key_id, user_id)
        return ApiKeyRecord.model_validate(item) if item is not None and item.get("type") == "apiKey" else None

    def _remember(self, user_id: str, key_id: str, *, active: bool) -> None:
        with self._lock:
            self._status[(user_id, key_id)] = (active, time.monotonic())
            self._status.move_to_end((user_id, key_id))
            while len(self._status) > _STATUS_CACHE_SIZE:
                self._status.popitem(last=False)

    def _touch(self, record: ApiKeyRecord) -> None:
        """Record the last use, at most every LAST_USED_WRITE_S: a busy key must not cost a write per token."""
        if record.last_used_at is not None:
            last = datetime.fromisoformat(record.last_used_at.replace("Z", "+00:00"))
            if (datetime.now(UTC) - last).total_seconds() < LAST_USED_WRITE_S:
                return
        record.last_used_at = utc_now()
        try:
            # A conditional replace: a key revoked since it was read stays revoked (never recreated by a touch),
            # and of two touches racing one wins; the other's write would say the same.
            self.container.replace_item(record.id, record.to_cosmos(), etag=record.etag,
                                        match_condition=MatchConditions.IfNotModified)
        except CosmosResourceNotFoundError:
            self._remember(record.user_id, record.id, active=False)
        except CosmosAccessConditionFailedError:
            pass  # touched (or changed) concurrently: the last-use time is recorded either way
        except CosmosHttpResponseError as exc:  # bookkeeping only: never fail a token exchange over it
            logger.warning("could not record last use of API key %s (%s)", record.id, exc.status_code)
