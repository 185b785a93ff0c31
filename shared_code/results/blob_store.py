"""Blob Storage: upload grants (short-lived SAS), reading and deleting user blobs.

In Azure the grant is a user delegation SAS signed with a key obtained through the managed identity
(shared-key access is off on the account); against Azurite it is a SAS signed with the emulator's
account key. Either way it allows create/write of exactly one blob, for a few minutes, over HTTPS in Azure.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import (
    BlobClient,
    BlobSasPermissions,
    BlobServiceClient,
    LinearRetry,
    UserDelegationKey,
    generate_blob_sas,
)

from shared_code.errors import BadRequest, ImageTooLarge, NotFound, TransientError

ALLOWED_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
_RESULT_ID = re.compile(r"^[0-9a-f]{32}$")
_USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
_BLOB_NAMESPACE = uuid.UUID("6f1c2b9e-4d0a-4c55-9a57-2f8e0d3b7c11")
# One user delegation key signs the grants of this long; a grant's SAS never outlives the key that signs it.
DELEGATION_KEY_LIFETIME = timedelta(hours=2)


@dataclass(frozen=True)
class UploadedVersion:
    """One version of an uploaded blob as the trigger found it: its properties, and its bytes when within the limit."""

    blob_name: str  # path inside the container: {user}/{file}
    etag: str  # unquoted
    size: int
    last_modified: str | None
    data: bytes | None  # None: larger than the limit, never downloaded


def read_uploaded_version(client: BlobClient, max_bytes: int, *, download: bool = True) -> UploadedVersion | None:
    """Properties first, then the bytes of that same version only when it has at most `max_bytes` (and `download`).

    The trigger hands over a client, not content (SDK-type binding), so a 3 GB blob written with the upload grant
    (Put Blob From URL included: a SAS cannot cap size) costs one HEAD here, never a download. None when the blob
    is gone, or was replaced between the two calls (the newer version's own event follows).
    """
    # The binding's client carries the SDK's default retry (15 s initial back-off, base 3): one 503 would hold
    # the invocation for a minute. Same blob and credential, the short retries every request path here uses;
    # the trigger's own redelivery (with back-off) covers longer outages.
    client = BlobClient.from_blob_url(client.url, credential=client.credential, retry_policy=request_retry_policy())
    try:
        properties = client.get_blob_properties()
    except ResourceNotFoundError:
        return None
    except AzureError as exc:
        raise TransientError("blob storage is temporarily unavailable") from exc
    etag, size = str(properties.etag), int(properties.size)
    modified = properties.last_modified.isoformat() if properties.last_modified else None
    data: bytes | None = None
    if download and size <= max_bytes:
        try:
            data = client.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified).readall()
        except (ResourceNotFoundError, ResourceModifiedError):  # 412: replaced since the HEAD
            return None
        except AzureError as exc:
            raise TransientError("blob storage is temporarily unavailable") from exc
    return UploadedVersion(blob_name=client.blob_name, etag=etag.strip('"'), size=size, last_modified=modified,
                           data=data)


def request_retry_policy() -> LinearRetry:
    """Retries for a client that serves HTTP requests: three, 2 s (+-1 s) apart.

    The SDK's default (15 s initial backoff, base 3) also retries a failed managed identity token request,
    so an identity without its endpoint or role held every upload grant for ~90 s before the 503
    (tests/integration/test_managed_identity.py). Event Grid and the timer retry whole invocations anyway.
    """
    return LinearRetry(backoff=2, random_jitter_range=1, retry_total=3)


@dataclass(frozen=True)
class UploadGrant:
    result_id: str
    blob_name: str
    upload_url: str
    expires_at: datetime


def new_result_id() -> str:
    return uuid.uuid4().hex


def idempotent_result_id(user_id: str, idempotency_key: str) -> str:
    """The result id a client's retried grant request maps to: the same key from the same user, the same id."""
    return uuid.uuid5(_BLOB_NAMESPACE, f"grant\n{user_id}\n{idempotency_key}").hex


def safe_user_id(user_id: str) -> str:
    """User ids become partition keys and blob prefixes: only a conservative character set is allowed."""
    if not _USER_ID.fullmatch(user_id) or user_id in {".", ".."}:
        raise BadRequest("user id contains characters that are not allowed")
    return user_id


def _char_class(letter: str) -> str:
    return f"[{letter.upper()}{letter}]" if letter.isalpha() else re.escape(letter)


# The file name's extension: the text after its last dot, when a character other than a path separator comes
# before that dot. One regex, so the OpenAPI document (FILENAME_PATTERN) says exactly what is accepted.
FILENAME_PATTERN = (r"^[\s\S]*[^/\\]\.(?:" + "|".join(
    "".join(_char_class(c) for c in ext[1:]) for ext in sorted(ALLOWED_EXTENSIONS)) + r")$")
# `$` (not `\Z`) on purpose: JSON Schema validators in Python search patterns with re, where `$` also matches
# before a final newline; the server reads the name the same way, so schema and server agree on every string.
_EXTENSION = re.compile(r"[^/\\]\.([^./\\\n]*)$")


def upload_blob_name(user_id: str, result_id: str, filename: str) -> str:
    """`{user}/{result_id}{ext}`: the client's file name never becomes a path (no traversal, no clashes)."""
    found = _EXTENSION.search(filename)
    extension = f".{found.group(1).lower()}" if found and found.group(1) else ""
    if extension not in ALLOWED_EXTENSIONS:
        raise BadRequest(f"file extension {extension or '(none)'!r} is not accepted; use one of "
                         f"{', '.join(sorted(ALLOWED_EXTENSIONS))}")
    return f"{safe_user_id(user_id)}/{result_id}{extension}"


def parse_upload_blob_name(blob_name: str) -> tuple[str, str]:
    """(user_id, result_id) for a blob in the uploads container; ids of foreign names are derived stably."""
    user_id, _, rest = blob_name.partition("/")
    if not user_id or not rest:
        raise BadRequest(f"blob {blob_name!r} is not under a user prefix")
    stem = PurePosixPath(rest).stem
    if "/" not in rest and _RESULT_ID.fullmatch(stem):
        return user_id, stem
    return user_id, uuid.uuid5(_BLOB_NAMESPACE, blob_name).hex


@dataclass(frozen=True)
class BlobStream:
    """A blob read lazily in ranged chunks, pinned to the version (ETag) whose size was checked."""

    size: int
    etag: str
    content_type: str
    chunks: Iterator[bytes]


class BlobStore:
    """One storage account's blob containers."""

    def __init__(self, service: BlobServiceClient, *, uploads_container: str, account_key: str | None = None,
                 public_endpoint: str | None = None) -> None:
        self.service = service
        self.uploads_container = uploads_container
        self._account_key = account_key
        self._public_endpoint = public_endpoint
        self._delegation_key: UserDelegationKey | None = None
        self._delegation_key_expiry = datetime.min.replace(tzinfo=UTC)
        self._delegation_lock = threading.Lock()

    def grant_upload(self, user_id: str, filename: str, minutes: int, *, result_id: str | None = None) -> UploadGrant:
        """A create/write-only SAS URL for one new blob under the user's prefix."""
        result_id = result_id or new_result_id()
        blob_name = upload_blob_name(user_id, result_id, filename)
        start = datetime.now(UTC) - timedelta(minutes=1)  # tolerate small clock skew
        expiry = datetime.now(UTC) + timedelta(minutes=minutes)
        permission = BlobSasPermissions(create=True, write=True)
        account = self.service.account_name or ""
        try:
            if self._account_key:
                token = generate_blob_sas(account, self.uploads_container, blob_name, account_key=self._account_key,
                                          permission=permission, expiry=expiry, start=start)
            else:
                delegation_key = self._user_delegation_key(expiry)
                token = generate_blob_sas(account, self.uploads_container, blob_name,
                                          user_delegation_key=delegation_key, permission=permission,
                                          expiry=expiry, start=start, protocol="https")
        except AzureError as exc:
            raise TransientError("could not create an upload grant") from exc
        blob_url = self.service.get_blob_client(self.uploads_container, blob_name).url
        return UploadGrant(result_id, blob_name, f"{blob_url}?{token}", expiry)

    def _user_delegation_key(self, needed_until: datetime) -> UserDelegationKey:
        """A delegation key valid until at least `needed_until`, requested at most once per key lifetime.

        Getting one is a Storage round trip (and an authorisation check) per grant otherwise. The key is only
        a signing key: what a SAS allows is still bounded by its own permissions and expiry and by the
        identity's current RBAC rights, and revoking the identity's delegation keys revokes every SAS.
        """
        with self._delegation_lock:
            if self._delegation_key is None or self._delegation_key_expiry < needed_until:
                start = datetime.now(UTC) - timedelta(minutes=1)
                expiry = max(needed_until, datetime.now(UTC) + DELEGATION_KEY_LIFETIME)
                self._delegation_key = self.service.get_user_delegation_key(start, expiry)
                self._delegation_key_expiry = expiry
            return self._delegation_key

    def read(self, container: str, blob_name: str, max_bytes: int) -> tuple[bytes, str]:
        """Blob content and its ETag; refuses blobs larger than max_bytes without downloading them."""
        client = self.service.get_blob_client(container, blob_name)
        try:
            properties = client.get_blob_properties()
            if properties.size > max_bytes:
                raise ImageTooLarge(f"the blob has {properties.size} bytes; the limit is {max_bytes}")
            downloader = client.download_blob(etag=properties.etag, match_condition=MatchConditions.IfNotModified)
            return downloader.readall(), str(properties.etag)
        except ResourceNotFoundError as exc:
            raise NotFound(f"blob {blob_name!r} does not exist") from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise TransientError("the blob changed while it was read") from exc
            raise TransientError(f"blob storage error ({exc.status_code})") from exc

    def stream(self, container: str, blob_name: str, *, chunk_size: int = 1 << 20,
               max_bytes: int | None = None) -> BlobStream:
        """Open a blob for streaming: properties now (NotFound raised here), then one ranged GET per chunk.

        Memory stays at one chunk however large the blob; a blob replaced meanwhile fails the next chunk
        (the reads are conditional on the ETag) instead of mixing two versions.
        """
        client = self.service.get_blob_client(container, blob_name)
        try:
            properties = client.get_blob_properties()
        except ResourceNotFoundError as exc:
            raise NotFound(f"blob {blob_name!r} does not exist") from exc
        except HttpResponseError as exc:
            raise TransientError(f"blob storage error ({exc.status_code})") from exc
        size, etag = int(properties.size), str(properties.etag)
        if max_bytes is not None and size > max_bytes:
            raise ImageTooLarge(f"the blob has {size} bytes; the limit is {max_bytes}")

        def chunks() -> Iterator[bytes]:
            for offset in range(0, size, chunk_size):
                length = min(chunk_size, size - offset)
                try:
                    yield client.download_blob(offset=offset, length=length, etag=etag,
                                               match_condition=MatchConditions.IfNotModified).readall()
                except ResourceNotFoundError as exc:
                    raise NotFound(f"blob {blob_name!r} was deleted while it was read") from exc
                except HttpResponseError as exc:
                    raise TransientError(f"blob {blob_name!r} changed or failed while it was read "
                                         f"({exc.status_code})") from exc

        content_type = properties.content_settings.content_type or "application/octet-stream"
        return BlobStream(size=size, etag=etag, content_type=content_type, chunks=chunks())

    def etag(self, container: str, blob_name: str) -> str | None:
        """The blob's current ETag (unquoted), or None when it does not exist."""
        try:
            properties = self.service.get_blob_client(container, blob_name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise TransientError("blob storage is temporarily unavailable") from exc
        return str(properties.etag).strip('"')

    def delete(self, container: str, blob_name: str, *, etag: str | None = None) -> bool:
        """Delete a blob (with `etag`: only that version, so a newer upload under the name survives)."""
        conditions: dict[str, Any] = {}
        if etag:
            conditions = {"etag": f'"{etag.strip(chr(34))}"', "match_condition": MatchConditions.IfNotModified}
        try:
            self.service.get_blob_client(container, blob_name).delete_blob(delete_snapshots="include", **conditions)
        except ResourceNotFoundError:
            return False
        except ResourceModifiedError:
            return False  # overwritten since: the newer version has its own event
        return True

    def delete_prefix(self, container: str, prefix: str) -> int:
        client = self.service.get_container_client(container)
        names = [blob.name for blob in client.list_blobs(name_starts_with=prefix)]
        for name in names:
            self.delete(container, name)
        return len(names)

