"""Erasure markers: "this user's data was erased at T", so that writes in flight from before cannot bring it back.

`DELETE /api/me` writes the marker first and then deletes. Every write path that creates a document for a
user creates it and then checks the marker (check after write): either the document existed before the
sweep listed the user's documents (and the sweep deletes it), or it was written after the marker, and its
writer sees the marker and deletes it again. Updates of existing documents need no marker: they are
conditional replaces, which cannot create. The marker lives in the keys container (partitioned by user,
TTL enabled in Azure) and expires after the hold, which outlasts any request or blob invocation in flight
(host.json functionTimeout), so a user may use the service again afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime

from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import CosmosHttpResponseError

from shared_code.cosmos import read_or_none, translate_cosmos_error, utc_now

MARKER_ID = "erasure"
MARKER_TYPE = "erasure"
DEFAULT_HOLD_S = 600


class ErasureLog:
    """Erasure markers of one Cosmos container partitioned by /userId."""

    def __init__(self, container: ContainerProxy, *, hold_s: int = DEFAULT_HOLD_S) -> None:
        self.container = container
        self.hold_s = hold_s

    def mark(self, user_id: str) -> None:
        """Record that the user's data is being erased now (idempotent: a later erasure moves the time)."""
        marker = {"id": MARKER_ID, "userId": user_id, "type": MARKER_TYPE, "erasedAt": utc_now(),
                  "ttl": self.hold_s}  # real Cosmos drops it after the hold; the age check covers the emulator
        try:
            self.container.upsert_item(marker)
        except CosmosHttpResponseError as exc:
            raise translate_cosmos_error(exc) from exc

    def erased_recently(self, user_id: str) -> bool:
        """Whether the user's data was erased within the hold (a write from before must be undone)."""
        item = read_or_none(self.container, MARKER_ID, user_id)
        if item is None or item.get("type") != MARKER_TYPE:
            return False
        erased_at = datetime.fromisoformat(str(item["erasedAt"]).replace("Z", "+00:00"))
        return (datetime.now(UTC) - erased_at).total_seconds() < self.hold_s
