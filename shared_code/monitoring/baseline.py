"""Automatic drift baselines: a served version without a reference profile learns one from its own traffic.

The baseline of a model version collects the rows of its drift windows until it holds at least
`min_images` rows spanning at least `min_days` (whichever comes later); from then on it is that version's
reference, and windows compare only rows created after the last row it holds. An explicit profile (shipped
with the model, or `make drift-profile`) always wins; a new version has a baseline key of its own, so a
promotion starts afresh unless its profile ships with it.

State lives where drift state lives: one small document per version in the Cosmos `drift` container (the
progress, ETag-guarded) and the profile itself (a bounded sample, never raw rows) in the reports container.
Each revision of the profile has its own blob, so a writer that loses the ETag race never overwrites the
profile the winning document names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import CosmosAccessConditionFailedError, CosmosResourceExistsError
from azure.storage.blob import ContainerClient, ContentSettings

logger = logging.getLogger(__name__)

BASELINE_KIND = "baseline"
BaselineState = Literal["collecting", "complete"]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class BaselinePolicy:
    """When a baseline is complete: `min_images` rows and `min_days` days, whichever comes later."""

    min_images: int
    min_days: float
    sample: int  # rows the stored profile keeps (the profile is a sample of the rows, never all of them)

    @property
    def enabled(self) -> bool:
        return self.min_images > 0

    def is_complete(self, rows: int, first_at: str | None, last_at: str | None) -> bool:
        if rows < self.min_images or first_at is None or last_at is None:
            return False
        return (parse_time(last_at) - parse_time(first_at)).total_seconds() >= self.min_days * 86400.0


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def baseline_key(model_name: str, model_version: str) -> str:
    """A Cosmos-id- and blob-safe key per model version (readable, plus a hash so sanitising never collides)."""
    digest = hashlib.sha256(f"{model_name}\x00{model_version}".encode()).hexdigest()[:12]
    return f"baseline-{_UNSAFE.sub('_', model_name)[:60]}-{_UNSAFE.sub('_', model_version)[:40]}-{digest}"


@dataclass(frozen=True)
class Baseline:
    """One version's baseline document (with its ETag when it was read from the store)."""

    document: dict[str, Any]

    @property
    def state(self) -> BaselineState:
        return "complete" if self.document.get("status") == "complete" else "collecting"

    @property
    def rows(self) -> int:
        return int(self.document.get("rowCount", 0))

    @property
    def first_at(self) -> str | None:
        return self.document.get("firstAt")

    @property
    def last_at(self) -> str | None:
        """createdAt of the newest row the baseline holds: later windows compare only rows after it."""
        return self.document.get("lastAt")

    @property
    def windows(self) -> list[str]:
        return list(self.document.get("windows", []))

    @property
    def profile_blob(self) -> str | None:
        return self.document.get("profileBlob")


class BaselineStore:
    """Baseline documents in the drift container, their profiles in the reports container."""

    def __init__(self, container: ContainerProxy, reports: ContainerClient) -> None:
        self.container = container
        self.reports = reports

    def get(self, model_name: str, model_version: str) -> Baseline | None:
        key = baseline_key(model_name, model_version)
        try:
            document: dict[str, Any] = self.container.read_item(key, partition_key=key)
        except ResourceNotFoundError:
            return None
        return Baseline(document)

    def load_profile(self, baseline: Baseline) -> dict[str, Any] | None:
        if not baseline.profile_blob:
            return None
        try:
            data = self.reports.download_blob(baseline.profile_blob).readall()
        except ResourceNotFoundError:
            logger.warning("baseline %s names a missing profile %s", baseline.document.get("id"), baseline.profile_blob)
            return None
        profile: dict[str, Any] = json.loads(data)
        return profile

    def save(self, previous: Baseline | None, *, model_name: str, model_version: str, profile: dict[str, Any],
             rows: int, first_at: str, last_at: str, window_id: str, state: BaselineState,
             policy: BaselinePolicy) -> Baseline | None:
        """Store the next revision; None when another writer got there first (the caller re-reads)."""
        key = baseline_key(model_name, model_version)
        revision = int(previous.document.get("revision", 0)) + 1 if previous else 1
        blob = f"drift/baselines/{key}/profile-{revision:06d}.json"
        self.reports.upload_blob(blob, json.dumps(profile, separators=(",", ":")).encode("utf-8"), overwrite=True,
                                 content_settings=ContentSettings(content_type="application/json"))
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        windows = [*(previous.windows if previous else []), window_id][-100:]  # bounded: the newest 100
        body: dict[str, Any] = {
            "id": key, "windowId": key, "kind": BASELINE_KIND, "status": state,
            "model": {"name": model_name, "version": model_version}, "rowCount": rows, "firstAt": first_at,
            "lastAt": last_at, "windows": windows, "revision": revision, "profileBlob": blob,
            "sampleSize": int(profile.get("sample_size", 0)),
            "policy": {"min_images": policy.min_images, "min_days": policy.min_days, "sample": policy.sample},
            "startedAt": previous.document.get("startedAt", now) if previous else now, "updatedAt": now,
            "completedAt": now if state == "complete" else None,
            "completedWindow": window_id if state == "complete" else None,
        }
        try:
            if previous is None:
                stored = self.container.create_item(body)
            else:
                stored = self.container.replace_item(key, body, etag=previous.document["_etag"],
                                                     match_condition=MatchConditions.IfNotModified)
        except (CosmosResourceExistsError, CosmosAccessConditionFailedError):
            logger.info("baseline %s was updated by another run first; re-reading", key)
            return None
        return Baseline(stored)
