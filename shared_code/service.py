"""Use cases of the service: classify over HTTP, grant uploads, process uploaded blobs, manage results.

Triggers call exactly one of these methods; all storage and model access happens here.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from shared_code import telemetry
from shared_code.blob_store import (
    BlobStore,
    UploadGrant,
    idempotent_result_id,
    new_result_id,
    parse_upload_blob_name,
    safe_user_id,
)
from shared_code.errors import BadRequest, DecodeTooSlow, ImageRejected, NotFound, ServiceError
from shared_code.model_repository import ModelProvider
from shared_code.pipeline import ImageClassification
from shared_code.results_store import (
    ErrorInfo,
    ModelRef,
    PredictionOut,
    ResultDocument,
    ResultsStore,
    utc_now,
)

logger = logging.getLogger(__name__)
_RESULT_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class UploadedFile:
    filename: str
    data: bytes


@dataclass(frozen=True)
class BlobEvent:
    """One delivery of a blob-created event (the trigger may deliver the same blob several times)."""

    blob_name: str  # path inside the uploads container: {user}/{file}
    data: bytes
    etag: str
    uploaded_at: str | None = None


class ClassificationService:
    """The application core the function triggers call."""

    def __init__(self, models: ModelProvider, results: ResultsStore, blobs: BlobStore, *, max_attempts: int = 5,
                 upload_minutes: int = 10, before_result_write: Callable[[ResultDocument], None] | None = None,
                 decode_timeout_s: float = 0.0, max_request_pixels: int = 0) -> None:
        self.models = models
        self.results = results
        self.blobs = blobs
        self.max_attempts = max_attempts
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
            self.results.upsert(document)
        return documents

    def health(self) -> ModelRef:
        card = self.models.current().card
        return ModelRef(name=card.name, version=card.version)

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
        self.results.upsert(ResultDocument(id=grant.result_id, user_id=user_id, status="pending", source="blob",
                                           filename=filename[:256], blob_name=grant.blob_name))
        return grant

    def process_blob(self, event: BlobEvent) -> ResultDocument:
        """Exactly one result per blob version, however often the event is delivered."""
        user_id, result_id = parse_upload_blob_name(event.blob_name)
        existing = self.results.find(user_id, result_id)
        if existing is not None and existing.blob_etag == event.etag and existing.status in ("done", "rejected"):
            logger.info("blob %s already processed as %s; duplicate delivery ignored", event.blob_name, result_id)
            return existing
        if existing is not None and existing.blob_etag not in (event.etag, None) and self._superseded(event):
            # An older version delivered late (events are not ordered): the newer version has its own event.
            logger.info("blob %s: event for ETag %s is stale (the blob was overwritten); ignored", event.blob_name,
                        event.etag)
            return existing
        same_version = existing is not None and existing.blob_etag in (event.etag, None)
        attempts = (existing.attempts if existing is not None and same_version else 0) + 1
        document = ResultDocument(
            id=result_id, user_id=user_id, status="pending", source="blob", blob_name=event.blob_name,
            blob_etag=event.etag, uploaded_at=event.uploaded_at, attempts=attempts,
            filename=existing.filename if existing is not None else event.blob_name.rsplit("/", 1)[-1],
            created_at=existing.created_at if existing is not None else utc_now(),
        )
        self.results.upsert(document)  # records the attempt before work that may crash
        with telemetry.invocation_span("process_blob", result_id=result_id, blob=event.blob_name):
            try:
                outcome: ImageClassification | ImageRejected = self._within_decode_deadline(
                    self.models.current().classify_bytes(event.data))
            except ImageRejected as rejection:
                outcome = rejection
            except Exception as exc:
                if attempts < self.max_attempts:
                    raise  # transient: the trigger redelivers
                logger.exception("blob %s failed %d times; marking it failed", event.blob_name, attempts)
                document.status = "failed"
                telemetry.record_failed_result(reason=getattr(exc, "code", "processing_failed"), source="blob")
                document.error = ErrorInfo(code=getattr(exc, "code", "processing_failed"),
                                           message=f"processing failed after {attempts} attempts")
                return self.results.upsert(document)
            final = self._complete(document, outcome, source="blob")
            if self._before_result_write is not None:
                self._before_result_write(final)
            latest = self.results.find(user_id, result_id)
            if latest is not None and latest.blob_etag != event.etag and self._superseded(event):
                # A newer version was uploaded and recorded while this one was processed: it wins.
                logger.info("blob %s: ETag %s was overwritten during processing; its result is dropped",
                            event.blob_name, event.etag)
                return latest
            self.results.upsert(final)
        if event.uploaded_at and final.status == "done":
            lag = (datetime.now(UTC) - datetime.fromisoformat(event.uploaded_at.replace("Z", "+00:00"))).total_seconds()
            telemetry.record_blob_lag(max(0.0, lag))
        return final

    # --- results ----------------------------------------------------------------------------------------
    def get_result(self, user_id: str, result_id: str) -> ResultDocument:
        return self.results.get(safe_user_id(user_id), _known_result_id(result_id))

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
        if isinstance(outcome, ImageClassification):
            top = outcome.predictions[0]
            document.status = "done"
            document.predictions = [PredictionOut(label=p.label, class_index=p.class_index, score=round(p.score, 6))
                                    for p in outcome.predictions]
            document.predicted_label = top.label
            document.model = ModelRef(name=outcome.model_name, version=outcome.model_version)
            document.timings_ms = outcome.timings_ms
            document.features = outcome.features.to_dict()
            document.error = None
            telemetry.record_classification(
                model_name=outcome.model_name, model_version=outcome.model_version, predicted_label=top.label,
                confidence=top.score, inference_ms=outcome.timings_ms.get("inference", 0.0),
                decode_ms=outcome.timings_ms.get("decode", 0.0), source=source, result_id=document.id,
            )
        else:
            document.status = "rejected"
            document.error = ErrorInfo(code=outcome.code, message=outcome.message)
            telemetry.record_rejection(reason=outcome.code, source=source)
        return document


def _known_result_id(result_id: str) -> str:
    """Result ids are 32 hex digits; anything else cannot exist, so it is not sent to the store at all."""
    if not _RESULT_ID.fullmatch(result_id):
        raise NotFound(f"no result {result_id[:64]!r}")
    return result_id
