"""A user's own data as a whole: export everything, or delete everything (uploads, results, keys, feedback)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from shared_code.cosmos import utc_now
from shared_code.errors import NotFound
from shared_code.identity.api_keys import KeyStore
from shared_code.identity.erasure import ErasureLog
from shared_code.results.blob_store import BlobStore, safe_user_id
from shared_code.results.store import ResultsStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeletionReport:
    """How many things of each kind were removed."""

    blobs: int
    results: int
    keys: int
    feedback: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def __add__(self, other: DeletionReport) -> DeletionReport:
        return DeletionReport(blobs=self.blobs + other.blobs, results=self.results + other.results,
                              keys=self.keys + other.keys, feedback=self.feedback + other.feedback)


class AccountService:
    """Export and erase one user's data; every store is addressed by the user's partition or prefix."""

    def __init__(self, results: ResultsStore, blobs: BlobStore, keys: KeyStore,
                 feedback: ContainerProxy | None = None, erasures: ErasureLog | None = None, *,
                 between_sweeps: Callable[[], None] | None = None) -> None:
        self.erasures = erasures
        self._between_sweeps = between_sweeps  # tests: what happens while the first sweep's trust window runs
        self.results = results
        self.blobs = blobs
        self.keys = keys
        self.feedback = feedback

    def export(self, user_id: str) -> dict[str, Any]:
        """All of the user's results and key metadata (never key secrets or hashes) as one JSON object."""
        user_id = safe_user_id(user_id)
        results = sorted(self.results.iter_user(user_id), key=lambda document: document.created_at)
        keys = self.keys.list(user_id)
        return {
            "user_id": user_id,
            "exported_at": utc_now(),
            "results": [document.model_dump(mode="json") for document in results],
            "api_keys": [{"id": key.id, "name": key.name, "scopes": key.scopes, "created_at": key.created_at,
                          "last_used_at": key.last_used_at} for key in keys],
        }

    def delete(self, user_id: str) -> DeletionReport:
        """Remove the user's uploads, results, API keys and feedback; keys first so no new token is minted.

        The erasure marker is written before anything is deleted: a write in flight from before sees it
        after its own write and undoes that write (identity.erasure), and blob events that arrive later
        find no result and delete their blob instead of recreating one (ClassificationService.process_blob).
        A writer may trust a clean marker read for `clean_trust_s`, so everything is swept again once that
        long has passed since the marker (the second sweep finds what such a writer created meanwhile).
        """
        user_id = safe_user_id(user_id)
        marked = time.monotonic()
        if self.erasures is not None:
            self.erasures.mark(user_id)
            marked = time.monotonic()
        report = self._sweep(user_id)
        if self.erasures is not None and self.erasures.clean_trust_s > 0:
            if self._between_sweeps is not None:
                self._between_sweeps()
            time.sleep(max(0.0, marked + self.erasures.clean_trust_s - time.monotonic()))
            report = report + self._sweep(user_id)
        logger.info("deleted account data: %d blobs, %d results, %d keys, %d feedback",
                    report.blobs, report.results, report.keys, report.feedback)
        return report

    def _sweep(self, user_id: str) -> DeletionReport:
        keys = self.keys.delete_all(user_id)
        blobs = self.blobs.delete_prefix(self.blobs.uploads_container, f"{user_id}/")
        results = 0
        for document in self.results.iter_user(user_id):
            with contextlib.suppress(NotFound):  # deleted concurrently: the outcome asked for
                self.results.delete(user_id, document.id)
                results += 1
        return DeletionReport(blobs=blobs, results=results, keys=keys, feedback=self._delete_feedback(user_id))

    def _delete_feedback(self, user_id: str) -> int:
        if self.feedback is None:
            return 0
        try:
            ids = [str(item["id"]) for item in self.feedback.query_items(
                "SELECT c.id FROM c WHERE c.userId = @user", parameters=[{"name": "@user", "value": user_id}],
                partition_key=user_id,
            )]
        except CosmosResourceNotFoundError:
            return 0  # no feedback container in this deployment
        removed = 0
        for item_id in ids:
            with contextlib.suppress(CosmosResourceNotFoundError):
                self.feedback.delete_item(item_id, partition_key=user_id)
                removed += 1
        return removed
