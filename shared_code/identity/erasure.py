"""Erasure markers: "this user's data was erased at T", so that writes in flight from before cannot bring it back.

`DELETE /api/me` writes the marker first and then deletes. Every write path that creates a document for a
user creates it and then checks the marker (check after write): either the document existed before the
sweep listed the user's documents (and the sweep deletes it), or it was written after the marker, and its
writer sees the marker and deletes it again. Updates of existing documents need no marker: they are
conditional replaces, which cannot create. The marker lives in the keys container (partitioned by user,
TTL enabled in Azure) and expires after the hold, which outlasts any request or blob invocation in flight
(host.json functionTimeout), so a user may use the service again afterwards.

A marker read that finds none is trusted for `clean_trust_s` (default 1 s) by this instance, so a user sending a
stream of requests costs one point read per second, not one per write. That is safe because the erasure sweeps
twice: once at once, and again `clean_trust_s` after its marker was written. A write that trusted a clean read
issued at T finished before T + clean_trust_s; the read found no marker, so the marker came after T, so the
second sweep (after marker + clean_trust_s) runs after that write finished and removes it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime

from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import CosmosHttpResponseError

from shared_code.cosmos import read_or_none, translate_cosmos_error, utc_now

MARKER_ID = "erasure"
MARKER_TYPE = "erasure"
DEFAULT_HOLD_S = 600
DEFAULT_CLEAN_TRUST_S = 1.0
MAX_TRUSTED_USERS = 10_000  # users whose clean read is remembered (least recently checked ones are forgotten)


class ErasureLog:
    """Erasure markers of one Cosmos container partitioned by /userId."""

    def __init__(self, container: ContainerProxy, *, hold_s: int = DEFAULT_HOLD_S,
                 clean_trust_s: float = DEFAULT_CLEAN_TRUST_S) -> None:
        self.container = container
        self.hold_s = hold_s
        self.clean_trust_s = clean_trust_s  # the erasure's second sweep waits this long after its marker
        self._clean_since: OrderedDict[str, float] = OrderedDict()  # user -> when a clean read was issued
        self._lock = threading.Lock()

    def mark(self, user_id: str) -> None:
        """Record that the user's data is being erased now (idempotent: a later erasure moves the time)."""
        marker = {"id": MARKER_ID, "userId": user_id, "type": MARKER_TYPE, "erasedAt": utc_now(),
                  "ttl": self.hold_s}  # real Cosmos drops it after the hold; the age check covers the emulator
        with self._lock:
            self._clean_since.pop(user_id, None)
        try:
            self.container.upsert_item(marker)
        except CosmosHttpResponseError as exc:
            raise translate_cosmos_error(exc) from exc

    def erased_recently(self, user_id: str) -> bool:
        """Whether the user's data was erased within the hold (a write from before must be undone).

        Call it after the write it guards: a clean answer may come from a read issued less than
        `clean_trust_s` ago (see the module docstring for why that still holds).
        """
        with self._lock:
            since = self._clean_since.get(user_id)
            if since is not None and time.monotonic() - since < self.clean_trust_s:
                self._clean_since.move_to_end(user_id)
                return False
        issued = time.monotonic()
        erased = self._read_marker(user_id)
        if not erased and self.clean_trust_s > 0:
            with self._lock:
                self._clean_since[user_id] = issued
                self._clean_since.move_to_end(user_id)
                while len(self._clean_since) > MAX_TRUSTED_USERS:
                    self._clean_since.popitem(last=False)
        return erased

    def _read_marker(self, user_id: str) -> bool:
        item = read_or_none(self.container, MARKER_ID, user_id)
        if item is None or item.get("type") != MARKER_TYPE:
            return False
        erased_at = datetime.fromisoformat(str(item["erasedAt"]).replace("Z", "+00:00"))
        return (datetime.now(UTC) - erased_at).total_seconds() < self.hold_s
