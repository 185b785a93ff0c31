"""Classification results in Cosmos DB (NoSQL API), partitioned by user.

Every read, list and delete names the caller's partition key: one user's documents are unreachable with
another user's id. Queries avoid OFFSET/LIMIT, GROUP BY and DISTINCT (paging uses continuation tokens).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, Literal

from azure.core import MatchConditions
from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)
from pydantic import BaseModel, ConfigDict, Field

from shared_code.cosmos import read_or_none, translate_cosmos_error, utc_now
from shared_code.errors import BadRequest, Conflict, NotFound, TransientError

ResultStatus = Literal["pending", "done", "rejected", "failed"]
UPDATE_ATTEMPTS = 8  # re-reads after a lost race before giving up (each loser re-reads the winner's write)


class PredictionOut(BaseModel):
    label: str
    class_index: int
    score: float


class ModelRef(BaseModel):
    name: str
    version: str
    backend: str | None = None  # engine and arithmetic, e.g. openvino-int8 (absent in older documents)


class ErrorInfo(BaseModel):
    code: str
    message: str


class ResultDocument(BaseModel):
    """One stored classification; `id` is deterministic so redelivery upserts instead of duplicating."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str
    user_id: str = Field(alias="userId")
    status: ResultStatus
    source: Literal["http", "blob"]
    filename: str = ""
    blob_name: str | None = Field(default=None, alias="blobName")
    blob_etag: str | None = Field(default=None, alias="blobEtag")
    created_at: str = Field(default_factory=utc_now, alias="createdAt")
    updated_at: str = Field(default_factory=utc_now, alias="updatedAt")
    uploaded_at: str | None = Field(default=None, alias="uploadedAt")
    predictions: list[PredictionOut] = Field(default_factory=list)
    predicted_label: str | None = Field(default=None, alias="predictedLabel")
    corrected_label: str | None = Field(default=None, alias="correctedLabel")
    model: ModelRef | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    features: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    attempts: int = 0
    # The stored version this copy was read at: the if-match of a conditional replace; never written.
    etag: str | None = Field(default=None, alias="_etag", exclude=True)

    def to_cosmos(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


class ResultsStore:
    """Results of one Cosmos container."""

    def __init__(self, container: ContainerProxy) -> None:
        self.container = container

    def upsert(self, document: ResultDocument) -> ResultDocument:
        """An unconditional write: seeding tests and tools only; the service creates or updates conditionally."""
        document.updated_at = utc_now()
        try:
            stored = self.container.upsert_item(document.to_cosmos())
        except CosmosHttpResponseError as exc:
            raise translate_cosmos_error(exc) from exc
        document.etag = stored.get("_etag")
        return document

    def create(self, document: ResultDocument) -> ResultDocument:
        """Store a new result; `Conflict` when one with this id exists (it is never overwritten)."""
        document.updated_at = utc_now()
        try:
            stored = self.container.create_item(document.to_cosmos())
        except CosmosResourceExistsError as exc:
            raise Conflict(f"result {document.id!r} already exists") from exc
        except CosmosHttpResponseError as exc:
            raise translate_cosmos_error(exc) from exc
        document.etag = stored.get("_etag")
        return document

    def update(self, user_id: str, result_id: str, change: Callable[[ResultDocument], bool], *,
               attempts: int = UPDATE_ATTEMPTS) -> ResultDocument | None:
        """Read, `change`, and replace only if nobody wrote in between; re-read and re-apply when someone did.

        `change` mutates the document it is given and returns whether there is anything to write; it may run
        several times (once per lost race), each time on the latest stored version. The write can only
        replace: a document deleted meanwhile (an erased account, a deleted result) stays deleted, and None
        is returned. Returns the stored document (unchanged when `change` said there was nothing to write).
        """
        for _ in range(attempts):
            document = self.find(user_id, result_id)
            if document is None:
                return None
            if not change(document):
                return document
            document.updated_at = utc_now()
            try:
                stored = self.container.replace_item(result_id, document.to_cosmos(), etag=document.etag,
                                                     match_condition=MatchConditions.IfNotModified)
            except CosmosAccessConditionFailedError:
                continue  # another writer won: apply the change again to what it wrote
            except CosmosResourceNotFoundError:
                return None
            except CosmosHttpResponseError as exc:
                raise translate_cosmos_error(exc) from exc
            document.etag = stored.get("_etag")
            return document
        raise TransientError(f"result {result_id!r} is being changed by others; retry")

    def find(self, user_id: str, result_id: str) -> ResultDocument | None:
        item = read_or_none(self.container, result_id, user_id)
        return None if item is None else ResultDocument.model_validate(item)

    def get(self, user_id: str, result_id: str) -> ResultDocument:
        document = self.find(user_id, result_id)
        if document is None:
            raise NotFound(f"no result {result_id!r}")
        return document

    def delete(self, user_id: str, result_id: str) -> None:
        try:
            self.container.delete_item(result_id, partition_key=user_id)
        except CosmosResourceNotFoundError as exc:
            raise NotFound(f"no result {result_id!r}") from exc
        except CosmosHttpResponseError as exc:
            raise translate_cosmos_error(exc) from exc

    def find_many(self, user_id: str, result_ids: Sequence[str]) -> list[ResultDocument]:
        """The caller's results among `result_ids` (one query in the caller's partition; unknown ids are absent)."""
        if not result_ids:
            return []
        try:
            items = self.container.query_items(
                "SELECT * FROM c WHERE c.userId = @user AND ARRAY_CONTAINS(@ids, c.id)",
                parameters=[{"name": "@user", "value": user_id}, {"name": "@ids", "value": list(result_ids)}],
                partition_key=user_id, max_item_count=len(result_ids))
            return [ResultDocument.model_validate(item) for item in items]
        except CosmosHttpResponseError as exc:
            raise translate_cosmos_error(exc) from exc

    def list_page(self, user_id: str, *, label: str | None = None, page_size: int = 20,
                  continuation: str | None = None) -> tuple[list[ResultDocument], str | None]:
        """The caller's results, newest first, one page at a time."""
        query = "SELECT * FROM c WHERE c.userId = @user"
        parameters: list[dict[str, Any]] = [{"name": "@user", "value": user_id}]
        if label:
            query += " AND (c.predictedLabel = @label OR c.correctedLabel = @label)"
            parameters.append({"name": "@label", "value": label})
        query += " ORDER BY c.createdAt DESC"
        token = decode_continuation(continuation) if continuation else None
        try:
            pages = self.container.query_items(
                query, parameters=parameters, partition_key=user_id, max_item_count=page_size
            ).by_page(token)
            page = list(next(pages, []))
            next_token = pages.continuation_token  # type: ignore[attr-defined]
        except CosmosHttpResponseError as exc:
            if exc.status_code == 400:
                raise BadRequest("invalid continuation token") from exc
            raise translate_cosmos_error(exc) from exc
        documents = [ResultDocument.model_validate(item) for item in page]
        return documents, encode_continuation(next_token) if next_token else None

    def iter_user(self, user_id: str) -> list[ResultDocument]:
        """Every result of one user (export and account deletion)."""
        items = self.container.query_items(
            "SELECT * FROM c WHERE c.userId = @user", parameters=[{"name": "@user", "value": user_id}],
            partition_key=user_id,
        )
        return [ResultDocument.model_validate(item) for item in items]


def encode_continuation(token: str) -> str:
    """Opaque, URL-safe continuation tokens for clients."""
    return base64.urlsafe_b64encode(token.encode("utf-8")).decode("ascii").rstrip("=")


def decode_continuation(token: str) -> str:
    """The Cosmos continuation a client sent back; it travels in a request header, so only printable ASCII
    (what Cosmos issues) is passed on: anything else is a token we never issued (400, not a transport error)."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("invalid continuation token") from exc
    if not text or not text.isprintable():
        raise BadRequest("invalid continuation token")
    return text
