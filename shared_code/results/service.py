"""Use cases of the service: classify over HTTP, grant uploads, process uploaded blobs, manage results.

Triggers call exactly one of these methods; all storage and model access happens here.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from azure.storage.blob import BlobClient

from shared_code import telemetry
from shared_code.errors import (
    AccountErased,
    BadRequest,
    Conflict,
    DecodeTooSlow,
    ImageRejected,
    ImageTooLarge,
    NotFound,
    ServiceError,
)
from shared_code.inference.model_repository import ModelProvider
from shared_code.inference.pipeline import ImageClassification
from shared_code.results.blob_store import (
    BlobStore,
    UploadedVersion,
    UploadGrant,
    idempotent_result_id,
    new_result_id,
    parse_upload_blob_name,
    read_uploaded_version,
    safe_user_id,
)
from shared_code.results.store import (
    ErrorInfo,
    ModelRef,
    PredictionOut,
    ResultDocument,
    ResultsStore,
)

logger = logging.getLogger(__name__)
_RESULT_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_BACKOFF_S = 8.0  # a longer wait holds a worker slot; the host's redelivery adds its own delay


@dataclass(frozen=True)
class UploadedFile:
    filename: str
    data: bytes


@dataclass(frozen=True)
class BlobEvent:
    """One delivery of a blob-created event (the trigger may deliver the same blob several times)."""

    blob_name: str  # path inside the uploads container: {user}/{file}
    data: bytes | None  # None: the blob is larger than the upload limit and was never read
    etag: str
    uploaded_at: str | None = None
    size: int | None = None

    @classmethod
    def of(cls, version: UploadedVersion) -> BlobEvent:
        """The event for a version as the trigger read it."""
        return cls(blob_name=version.blob_name, data=version.data, etag=version.etag,
                   uploaded_at=version.last_modified, size=version.size)


class ClassificationService:
    """The application core the function triggers call."""

    def __init__(self, models: ModelProvider, results: ResultsStore, blobs: BlobStore, *, max_attempts: int = 5,
                 upload_minutes: int = 10, before_result_write: Callable[[ResultDocument], None] | None = None,
                 decode_timeout_s: float = 0.0, max_request_pixels: int = 0,
                 erased_recently: Callable[[str], bool] | None = None, retry_backoff_s: float = 0.0,
                 max_upload_bytes: int = 20 * 1024 * 1024) -> None:
        self.models = models
        self.max_upload_bytes = max_upload_bytes
        self.results = results
        self.blobs = blobs
        self.max_attempts = max_attempts
        # "Was this user's data erased moments ago?" (identity.erasure); checked after every creation.
        self._erased_recently = erased_recently
        self.retry_backoff_s = retry_backoff_s
        self.upload_minutes = upload_minutes
        self.decode_timeout_s = decode_timeout_s
        self.max_request_pixels = max_request_pixels
        # Test seam for fault injection (a crash after inference, before the write); None in production.
        self._before_result_write = before_result_write

    # --- HTTP classification --------------------------------------------------------------------------
    def classify_files(self, user_id: str, files: Sequence[UploadedFile], top_k: int) -> list[ResultDocument]:
        """Classify and store; a lone bad image raises its rejection, bad ones in a batch come back rejected."""
        user_id = safe_user_id(user_id)
        pipeline = self.models.current()
        outcomes = [self._within_decode_deadline(o) for o in pipeline.classify_many(
            [f.data for f in files], top_k, max_total_pixels=self.max_request_pixels)]
        if len(files) == 1 and isinstance(outcomes[0], ImageRejected):
            telemetry.record_rejection(reason=outcomes[0].code, source="http")
            raise outcomes[0]
        documents = []
        for upload, outcome in zip(files, outcomes, strict=True):
            document = ResultDocument(id=new_result_id(), user_id=user_id, status="pending", source="http",
                                      filename=upload.filename[:256])
            documents.append(self._complete(document, outcome, source="http"))
        for document in documents:
            self.results.create(document)  # fresh random ids: a create never overwrites anything
        self._undo_if_erased(user_id, [document.id for document in documents])
        return documents

    def health(self) -> ModelRef:
        pipeline = self.models.current()
        return ModelRef(name=pipeline.card.name, version=pipeline.card.version,
                        backend=pipeline.classifier.backend_label)

    # --- direct uploads ---------------------------------------------------------------------------------
    def grant_upload(self, user_id: str, filename: str, idempotency_key: str | None = None) -> UploadGrant:
        """An upload URL for one blob, and a `pending` result the client can poll right away.

        With an idempotency key, a retried request (its answer lost to a timeout or a restart) maps to the same
        result id and blob name: it gets a fresh URL for the same blob instead of leaving a second `pending`
        result behind that no upload will ever complete.
        """
        user_id = safe_user_id(user_id)
        result_id = idempotent_result_id(user_id, idempotency_key) if idempotency_key else None
        grant = self.blobs.grant_upload(user_id, filename, self.upload_minutes, result_id=result_id)
        if result_id is not None:
            existing = self.results.find(user_id, result_id)
            if existing is not None:
                if existing.blob_name != grant.blob_name:
                    raise BadRequest("this Idempotency-Key was already used for a file of another type; "
                                     "use a new key for each file")
                return grant
        try:
            self.results.create(ResultDocument(id=grant.result_id, user_id=user_id, status="pending", source="blob",
                                               filename=filename[:256], blob_name=grant.blob_name))
        except Conflict:
            if result_id is None:
                raise
            # The same idempotency key raced with itself: the other request created it; same grant.
        self._undo_if_erased(user_id, [grant.result_id])
        return grant

    def process_uploaded_blob(self, client: BlobClient) -> ResultDocument | None:
        """The classifying trigger's entry: size first, at most `max_upload_bytes` read, then `process_blob`.

        None when the blob is gone or was replaced meanwhile (nothing to record: the newer version has its own
        event), or when its result was deleted.
        """
        version = read_uploaded_version(client, self.max_upload_bytes)
        if version is None:
            logger.info("blob %s is gone or was replaced before it was read; nothing to do", client.blob_name)
            return None
        return self.process_blob(BlobEvent.of(version))

    def process_oversized_blob(self, client: BlobClient) -> ResultDocument | None:
        """The oversized-upload trigger's entry: `rejected` from the properties alone, never a download.

        A blob that is within the limit by now was overwritten since its event; that version has its own event
        (routed to the classifier), so nothing is recorded here.
        """
        version = read_uploaded_version(client, self.max_upload_bytes, download=False)
        if version is None or version.size <= self.max_upload_bytes:
            logger.info("blob %s is gone or no longer above the limit; nothing to do", client.blob_name)
            return None
        return self.process_blob(BlobEvent.of(version))

    def process_blob(self, event: BlobEvent) -> ResultDocument | None:
        """Exactly one result per blob version, however often and in whatever order events are delivered.

        Every write is a conditional replace of the result the upload grant created: an older version's event
        never overwrites a newer version's result, a duplicate never undoes a finished result or its
        correction, and a result deleted meanwhile (the result, or the whole account) is never recreated;
        its blob, if the event brought one back, is deleted instead. Returns None in that case.
        A blob written without an upload grant (tools, tests) gets its result created here (`_adopt`).
        """
        user_id, result_id = parse_upload_blob_name(event.blob_name)
        plan: dict[str, str] = {}

        def start_attempt(document: ResultDocument) -> bool:
            plan.clear()
            if document.blob_etag == event.etag and document.status in ("done", "rejected", "failed"):
                plan["skip"] = "duplicate"
                return False
            if self._newer_than_event(document, event):
                plan["skip"] = "stale"
                return False
            same_version = document.blob_etag in (event.etag, None)
            if not same_version:  # a new upload over the old one: the old outcome (and its correction) is void
                _clear_outcome(document)
                document.corrected_label = None
            document.attempts = (document.attempts if same_version else 0) + 1
            document.status = "pending"
            document.blob_name, document.blob_etag = event.blob_name, event.etag
            document.uploaded_at = event.uploaded_at
            if document.attempts > self.max_attempts:
                # The previous attempts ended without a word (the worker died: out of memory, timeout). Recorded
                # before any work, so a blob that kills its worker ends `failed` instead of `pending` forever.
                document.status = "failed"
                document.error = ErrorInfo(code="processing_failed", message=f"processing failed after "
                                           f"{self.max_attempts} attempts (the worker stopped)")
                plan["skip"] = "gave_up"
            return True

        current = self.results.update(user_id, result_id, start_attempt)  # records the attempt before work
        if current is None:
            current = self._adopt(event, user_id, result_id, start_attempt)
            if current is None:
                return None
        if plan.get("skip") == "duplicate":
            logger.info("blob %s already processed as %s; duplicate delivery ignored", event.blob_name, result_id)
            return current
        if plan.get("skip") == "stale":
            logger.info("blob %s: event for ETag %s is older than the stored result; ignored", event.blob_name,
                        event.etag)
            return current
        if plan.get("skip") == "gave_up":
            telemetry.record_failed_result(reason="worker_stopped", source="blob")
            return current
        attempts = current.attempts
        with telemetry.invocation_span("process_blob", result_id=result_id, blob=event.blob_name):
            try:
                if event.data is None:
                    raise ImageTooLarge(f"the blob has {event.size} bytes; the limit is {self.max_upload_bytes}")
                outcome: ImageClassification | ServiceError = self._within_decode_deadline(
                    self.models.current().classify_bytes(event.data))
            except ImageRejected as rejection:
                outcome = rejection
            except Exception as exc:
                if attempts < self.max_attempts:
                    self._back_off(attempts)
                    raise  # transient: the trigger redelivers
                logger.exception("blob %s failed %d times; marking it failed", event.blob_name, attempts)
                code = getattr(exc, "code", "processing_failed")
                telemetry.record_failed_result(reason=code, source="blob")
                error = ErrorInfo(code=code, message=f"processing failed after {attempts} attempts")
                return self._finish(event, user_id, result_id, lambda document: _fail(document, error))
            preview = current.model_copy(deep=True)
            _apply_outcome(preview, outcome)
            if self._before_result_write is not None:
                self._before_result_write(preview)
            final = self._finish(event, user_id, result_id, lambda document: _apply_outcome(document, outcome))
        if final is not None and final.blob_etag == event.etag:
            self._record(final, outcome, source="blob")
            if event.uploaded_at and final.status == "done":
                uploaded = datetime.fromisoformat(event.uploaded_at.replace("Z", "+00:00"))
                telemetry.record_blob_lag(max(0.0, (datetime.now(UTC) - uploaded).total_seconds()))
        return final

    def _finish(self, event: BlobEvent, user_id: str, result_id: str,
                apply: Callable[[ResultDocument], None]) -> ResultDocument | None:
        """Write this version's outcome, unless a newer version took over or another worker finished it."""

        def write(document: ResultDocument) -> bool:
            if document.blob_etag != event.etag:
                logger.info("blob %s: ETag %s was overwritten during processing; its result is dropped",
                            event.blob_name, event.etag)
                return False
            if document.status != "pending":
                return False  # another delivery of this version finished first; its outcome stands
            apply(document)
            return True

        final = self.results.update(user_id, result_id, write)
        if final is None:
            self._delete_orphan(event)
        return final

    # --- results ----------------------------------------------------------------------------------------
    def get_result(self, user_id: str, result_id: str) -> ResultDocument:
        return self.results.get(safe_user_id(user_id), _known_result_id(result_id))

    def get_results(self, user_id: str, result_ids: Sequence[str]) -> list[ResultDocument]:
        """Many of the caller's results at once (ids that cannot exist are not sent to the store)."""
        known = list(dict.fromkeys(result_id for result_id in result_ids if _RESULT_ID.fullmatch(result_id)))
        return self.results.find_many(safe_user_id(user_id), known)

    def list_results(self, user_id: str, *, label: str | None, page_size: int, continuation: str | None
                     ) -> tuple[list[ResultDocument], str | None]:
        return self.results.list_page(safe_user_id(user_id), label=label, page_size=page_size,
                                      continuation=continuation)

    def delete_result(self, user_id: str, result_id: str) -> None:
        document = self.results.get(safe_user_id(user_id), _known_result_id(result_id))
        if document.blob_name:
            self.blobs.delete(self.blobs.uploads_container, document.blob_name)
        with contextlib.suppress(NotFound):  # deleted concurrently: the outcome the caller asked for
            self.results.delete(user_id, result_id)

    # --- helpers ----------------------------------------------------------------------------------------
    def _superseded(self, event: BlobEvent) -> bool:
        """True when the blob is no longer the version the event carries (overwritten or deleted)."""
        return self.blobs.etag(self.blobs.uploads_container, event.blob_name) != event.etag.strip('"')

    def _within_decode_deadline(self, outcome: ImageClassification | ImageRejected
                                ) -> ImageClassification | ImageRejected:
        """A slow decode becomes a rejection: the work is done, but a client cannot make it the norm."""
        if isinstance(outcome, ImageClassification) and self.decode_timeout_s > 0:
            decode_ms = outcome.timings_ms.get("decode", 0.0)
            if decode_ms > self.decode_timeout_s * 1000.0:
                return DecodeTooSlow(f"decoding the image took {decode_ms / 1000.0:.2f} s; the limit is "
                                     f"{self.decode_timeout_s:g} s")
        return outcome

    def _complete(self, document: ResultDocument, outcome: ImageClassification | ServiceError, *, source: str
                  ) -> ResultDocument:
        _apply_outcome(document, outcome)
        self._record(document, outcome, source=source)
        return document

    @staticmethod
    def _record(document: ResultDocument, outcome: ImageClassification | ServiceError, *, source: str) -> None:
        if isinstance(outcome, ImageClassification):
            top = outcome.predictions[0]
            telemetry.record_classification(
                model_name=outcome.model_name, model_version=outcome.model_version, predicted_label=top.label,
                confidence=top.score, inference_ms=outcome.timings_ms.get("inference", 0.0),
                decode_ms=outcome.timings_ms.get("decode", 0.0), source=source, result_id=document.id,
                backend=outcome.backend,
            )
        else:
            telemetry.record_rejection(reason=outcome.code, source=source)

    def _newer_than_event(self, document: ResultDocument, event: BlobEvent) -> bool:
        """Whether the stored result is of a newer blob version than the event's.

        Versions are ordered by the blob's last-modified time; when that cannot decide (equal to the second,
        or unknown), the blob itself says which version is current.
        """
        if document.blob_etag in (None, event.etag):
            return False
        stored, delivered = _timestamp(document.uploaded_at), _timestamp(event.uploaded_at)
        if stored is not None and delivered is not None and stored != delivered:
            return stored > delivered
        return self._superseded(event)

    def _adopt(self, event: BlobEvent, user_id: str, result_id: str,
               start_attempt: Callable[[ResultDocument], bool]) -> ResultDocument | None:
        """A result for a live blob that has none; never for a blob deleted with its result or account.

        Check after write: the result is created first, then the blob and the erasure marker are looked at
        again. A `DELETE` racing with this deletes the blob before the result, so either it deletes the result
        created here too, or this sees the blob gone (or the account erased) and deletes the result itself.
        """
        if self.blobs.etag(self.blobs.uploads_container, event.blob_name) != event.etag.strip('"'):
            return None  # deleted (with its result) or overwritten (the newer version's event will come)
        with contextlib.suppress(Conflict):  # another delivery created it first: go on with that one
            self.results.create(ResultDocument(id=result_id, user_id=user_id, status="pending", source="blob",
                                               blob_name=event.blob_name,
                                               filename=event.blob_name.rsplit("/", 1)[-1]))
        erased = self._erased_recently is not None and self._erased_recently(user_id)
        if erased or self.blobs.etag(self.blobs.uploads_container, event.blob_name) is None:
            with contextlib.suppress(NotFound):
                self.results.delete(user_id, result_id)
            if erased:
                self._delete_orphan(event)  # uploaded through a grant issued before the erasure
            return None
        return self.results.update(user_id, result_id, start_attempt)

    def _delete_orphan(self, event: BlobEvent) -> None:
        """The result is gone (deleted, or the account erased): the blob version this event names goes too."""
        logger.info("blob %s has no result (deleted or erased); the blob is deleted, not processed", event.blob_name)
        self.blobs.delete(self.blobs.uploads_container, event.blob_name, etag=event.etag)

    def _undo_if_erased(self, user_id: str, result_ids: Sequence[str]) -> None:
        """Check after write: results created while the account was being erased are deleted again."""
        if self._erased_recently is None or not self._erased_recently(user_id):
            return
        for result_id in result_ids:
            with contextlib.suppress(NotFound):
                self.results.delete(user_id, result_id)
        raise AccountErased("this account's data was erased while the request was in flight; nothing was kept")

    def _back_off(self, attempts: int) -> None:
        """Wait a little before the redelivery of a transient failure (exponential, with jitter, capped)."""
        if self.retry_backoff_s > 0:
            delay = min(MAX_BACKOFF_S, self.retry_backoff_s * 2 ** (attempts - 1))
            time.sleep(delay * random.uniform(0.5, 1.0))


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _clear_outcome(document: ResultDocument) -> None:
    document.predictions, document.predicted_label, document.model = [], None, None
    document.timings_ms, document.features, document.error = {}, None, None


def _fail(document: ResultDocument, error: ErrorInfo) -> None:
    document.status = "failed"
    document.error = error


def _apply_outcome(document: ResultDocument, outcome: ImageClassification | ServiceError) -> None:
    """Set the fields one outcome decides; the user's correction and the version fields are left alone."""
    if isinstance(outcome, ImageClassification):
        top = outcome.predictions[0]
        document.status = "done"
        document.predictions = [PredictionOut(label=p.label, class_index=p.class_index, score=round(p.score, 6))
                                for p in outcome.predictions]
        document.predicted_label = top.label
        document.model = ModelRef(name=outcome.model_name, version=outcome.model_version,
                                  backend=outcome.backend or None)
        document.timings_ms = outcome.timings_ms
        document.features = outcome.features.to_dict()
        document.error = None
    else:
        document.status = "rejected"
        document.error = ErrorInfo(code=outcome.code, message=outcome.message)


def _known_result_id(result_id: str) -> str:
    """Result ids are 32 hex digits; anything else cannot exist, so it is not sent to the store at all."""
    if not _RESULT_ID.fullmatch(result_id):
        raise NotFound(f"no result {result_id[:64]!r}")
    return result_id
