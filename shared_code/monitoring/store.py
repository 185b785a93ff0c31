"""Where drift runs are coordinated and kept: one Cosmos document per window, reports in Blob Storage.

The window document doubles as the claim. `create_item` succeeds for exactly one instance (the others get
409 Conflict), so one run happens per window however many instances fire. A claim whose holder died is
taken over after `stale_after` with an ETag-checked replace, which again only one instance can win.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosAccessConditionFailedError, CosmosResourceExistsError
from azure.storage.blob import ContainerClient, ContentSettings, StorageStreamDownloader

from shared_code.errors import NotFound
from shared_code.monitoring.window import DriftWindow

logger = logging.getLogger(__name__)

DRIFT_CONTAINER = "drift"
DRIFT_PARTITION_KEY_PATH = "/windowId"
CLAIM_STALE_AFTER = timedelta(minutes=30)  # longer than the Functions timeout: a live run is never taken over
REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.json"
_WINDOW_QUERY = (
    "SELECT c.id, c.userId, c.createdAt, c.predictedLabel, c.correctedLabel, c.features, c.model FROM c "
    "WHERE c.createdAt >= @start AND c.createdAt < @end AND c.status = 'done'"
)


def ensure_drift_container(client: CosmosClient, database: str) -> ContainerProxy:
    """Create the drift container if missing (local emulator and tests; Bicep creates it in Azure)."""
    db = client.create_database_if_not_exists(database)
    return db.create_container_if_not_exists(DRIFT_CONTAINER, partition_key=PartitionKey(path=DRIFT_PARTITION_KEY_PATH))


@dataclass(frozen=True)
class DriftClaim:
    """The outcome of claiming a window: the document we now hold (with its ETag), or why not."""

    window: DriftWindow
    document: dict[str, Any] | None
    reason: str = ""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class DriftStore:
    """The drift container: window claims and summaries, partitioned by window key."""

    def __init__(self, container: ContainerProxy, *, stale_after: timedelta = CLAIM_STALE_AFTER) -> None:
        self.container = container
        self.stale_after = stale_after

    def _claim_document(self, window: DriftWindow, owner: str, now: datetime, attempt: int) -> dict[str, Any]:
        return {"id": window.key, "windowId": window.key, "window": window.id, "windowStart": window.start_iso,
                "windowEnd": window.end_iso, "status": "running", "owner": owner, "claimedAt": _iso(now),
                "attempt": attempt}

    def claim(self, window: DriftWindow, *, owner: str, now: datetime, force: bool = False) -> DriftClaim:
        """Take the window for this run; `force` re-runs a finished window (never one that is running)."""
        try:
            created = self.container.create_item(self._claim_document(window, owner, now, 1))
            return DriftClaim(window, created)
        except CosmosResourceExistsError:
            pass
        existing = self.get(window.key)
        if existing is None:  # deleted between our create and read: let the next firing claim it
            return DriftClaim(window, None, "claim vanished; retry later")
        status = existing.get("status")
        claimed_at = datetime.fromisoformat(str(existing.get("claimedAt") or "1970-01-01T00:00:00+00:00")
                                            .replace("Z", "+00:00"))
        if status == "running" and now - claimed_at < self.stale_after:
            return DriftClaim(window, None, f"running since {existing.get('claimedAt')} by {existing.get('owner')}")
        if status == "done" and not force:
            return DriftClaim(window, None, "already done")
        if status == "running":
            logger.warning("taking over stale drift claim %s from %s", window.id, existing.get("owner"))
        try:
            replaced = self.container.replace_item(
                window.key, self._claim_document(window, owner, now, int(existing.get("attempt", 1)) + 1),
                etag=existing["_etag"], match_condition=MatchConditions.IfNotModified)
        except CosmosAccessConditionFailedError:  # another instance took it over first
            return DriftClaim(window, None, "another instance took the claim over")
        return DriftClaim(window, replaced)

    def complete(self, claim: DriftClaim, summary: dict[str, Any]) -> None:
        """Turn the claim into the window's summary document (only if we still hold the claim)."""
        self._finish(claim, {"status": "done", "summary": summary})

    def fail(self, claim: DriftClaim, message: str) -> None:
        """Mark the run failed so the next firing may retry it at once."""
        self._finish(claim, {"status": "failed", "error": message[:1000]})

    def _finish(self, claim: DriftClaim, fields: dict[str, Any]) -> None:
        if claim.document is None:
            raise ValueError("cannot finish a claim that was not granted")
        body = {key: value for key, value in claim.document.items() if not key.startswith("_")}
        body.update(fields, finishedAt=_iso(datetime.now(UTC)))
        try:
            self.container.replace_item(claim.window.key, body, etag=claim.document["_etag"],
                                        match_condition=MatchConditions.IfNotModified)
        except CosmosAccessConditionFailedError:
            logger.warning("drift claim %s was taken over before this run finished; result not stored",
                           claim.window.id)

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            item: dict[str, Any] = self.container.read_item(key, partition_key=key)
        except ResourceNotFoundError:
            return None
        return item

    def list_windows(self, limit: int) -> list[dict[str, Any]]:
        """Finished windows, newest first (one small document per window, so sorting here is cheap)."""
        items = self.container.query_items("SELECT * FROM c WHERE c.status = 'done'", enable_cross_partition_query=True)
        ordered = sorted(items, key=lambda item: str(item.get("windowStart", "")), reverse=True)
        return ordered[:limit]


def read_window_rows(results: ContainerProxy, window: DriftWindow) -> Iterator[dict[str, Any]]:
    """Every finished result created in the window, across users (a cross-partition query, paged by the SDK)."""
    parameters: list[dict[str, Any]] = [{"name": "@start", "value": window.start_iso},
                                        {"name": "@end", "value": window.end_iso}]
    yield from results.query_items(_WINDOW_QUERY, parameters=parameters, enable_cross_partition_query=True,
                                   max_item_count=1000)


def report_blob_name(window_key: str, file: str) -> str:
    return f"drift/{window_key}/{file}"


def write_report(reports: ContainerClient, window: DriftWindow, *, html: str, summary_json: str) -> None:
    """`drift/{key}/report.html` and `drift/{key}/summary.json` in the reports container."""
    reports.upload_blob(report_blob_name(window.key, REPORT_FILE), html.encode("utf-8"), overwrite=True,
                        content_settings=ContentSettings(content_type="text/html; charset=utf-8"))
    reports.upload_blob(report_blob_name(window.key, SUMMARY_FILE), summary_json.encode("utf-8"), overwrite=True,
                        content_settings=ContentSettings(content_type="application/json"))


def open_report(reports: ContainerClient, window_key: str, file: str) -> StorageStreamDownloader[bytes]:
    """A streaming download of one stored report file; NotFound when the window has none."""
    try:
        return reports.download_blob(report_blob_name(window_key, file))
    except ResourceNotFoundError as exc:
        raise NotFound(f"no drift {file} for window {window_key}") from exc


def ensure_reports_container(reports: ContainerClient) -> None:
    """Create the reports container if missing (local emulator; Bicep creates it in Azure)."""
    with contextlib.suppress(ResourceExistsError):
        reports.create_container()
