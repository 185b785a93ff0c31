"""Admin approval of a retrained candidate: its gate results, its state, and the conditional pointer move.

model.train writes the gates it measured into the version's `evaluation.json` (`promotion`: `promotable`,
`reasons`, `gates`; see model/gates.py) and, under RETRAIN_PROMOTION=approval, publishes a promotable
version without moving `{name}/latest.json`. An admin then approves it (`POST
/api/models/{name}/versions/{version}/promote`):

- only a version whose evaluation says it passed every gate (the split and the trusted guard set), and whose
  evaluation is of this very card (same model id), may be approved; anything else is a 409;
- the pointer moves with a conditional write: read `latest.json` and its ETag, refuse when it already names
  this or a newer version, write If-Match that ETag (create-only when there is none) and look again when
  another approval got in between. So two approvals racing leave the newer version current, never the older;
- the pointer itself carries who approved and when (one atomic write), and `{name}/{version}/approval.json`
  keeps the approval record of the version after later versions supersede it.

Going back to an older version is not an approval (publish it again as a new version).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContentSettings

from shared_code import telemetry
from shared_code.errors import Conflict, ModelUnavailable, NotFound
from shared_code.inference.model_card import CARD_SUFFIX, ModelCard
from shared_code.inference.model_repository import (
    BlobModelRepository,
    advance_pointer,
    version_key,
)
from shared_code.retraining.spec import utc_iso

logger = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
APPROVAL_FILE = "approval.json"
# current: latest.json names it; candidate: passed its gates, newer than current, awaiting approval;
# not_promotable: failed a gate; superseded: passed, but a newer version is current; unevaluated: no gate results
VersionState = Literal["current", "candidate", "not_promotable", "superseded", "unevaluated"]


@dataclass(frozen=True)
class Gates:
    """What model.train recorded about a version's promotion gates."""

    passed: bool
    reasons: list[str]
    mode: str | None
    split: dict[str, Any] | None
    guard: dict[str, Any] | None


def gates_of(evaluation: Mapping[str, Any] | None) -> Gates | None:
    """The gate results of an evaluation.json, or None when it has none (published by hand, or by a trainer
    from before the gates: such a version cannot be approved)."""
    promotion = evaluation.get("promotion") if evaluation else None
    if not isinstance(promotion, Mapping) or not isinstance(promotion.get("promotable"), bool):
        return None
    gates = promotion.get("gates")
    split, guard = (gates.get("split"), gates.get("guard")) if isinstance(gates, Mapping) else (None, None)
    return Gates(passed=bool(promotion["promotable"]), reasons=[str(r) for r in promotion.get("reasons") or []],
                 mode=str(promotion["mode"]) if promotion.get("mode") else None,
                 split=dict(split) if isinstance(split, Mapping) else None,
                 guard=dict(guard) if isinstance(guard, Mapping) else None)


def version_state(version: str, *, latest: str | None, gates: Gates | None) -> VersionState:
    if version == latest:
        return "current"
    if gates is None:
        return "unevaluated"
    if not gates.passed:
        return "not_promotable"
    if latest is not None and version_key(version) <= version_key(latest):
        return "superseded"
    return "candidate"


def read_json(repository: BlobModelRepository, name: str, version: str, file: str) -> dict[str, Any] | None:
    """A small JSON file of a version, or None when it is missing or not a JSON object."""
    data = repository.read_file(name, version, file)
    try:
        value = json.loads(data) if data else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- approving ----------------------------------------------------------------------------------------
def approve(repository: BlobModelRepository, name: str, version: str, *, approved_by: str,
            now: datetime | None = None) -> dict[str, Any]:
    """Make a candidate that passed its gates the promoted version; the approval record.

    NotFound: no such published version. Conflict: it did not pass its gates, its evaluation is of another
    model, or it (or a newer version) is current already.
    """
    try:
        versions = repository.list_versions(name)
    except ResourceNotFoundError:  # no models container at all
        versions = []
    if version not in versions:
        raise NotFound(f"model {name!r} has no published version {version!r}")
    card_bytes = repository.read_file(name, version, f"model{CARD_SUFFIX}")
    if card_bytes is None:
        raise NotFound(f"model {name!r} has no published version {version!r}")
    card = ModelCard.model_validate_json(card_bytes)
    evaluation = read_json(repository, name, version, EVALUATION_FILE)
    gates = gates_of(evaluation)
    if gates is None:
        raise Conflict(f"{name}:{version} has no gate results ({EVALUATION_FILE} from model.train): it cannot be "
                       "approved")
    if not gates.passed:
        raise Conflict(f"{name}:{version} did not pass its promotion gates: {'; '.join(gates.reasons)}")
    candidate = (evaluation or {}).get("candidate")
    evaluated = candidate.get("model") if isinstance(candidate, Mapping) else None
    if evaluated != card.model_id:
        raise Conflict(f"{name}:{version}'s evaluation is of {evaluated!r}, not of its card {card.model_id}")

    approved_at = utc_iso(now or datetime.now(UTC))
    fields = {"sha256": card.sha256, "approved_by": approved_by, "approved_at": approved_at}
    try:
        moved, current = advance_pointer(repository.container, name, version, fields)
    except ModelUnavailable as exc:
        raise Conflict(str(exc)) from exc
    if not moved and current == version:
        raise Conflict(f"{name}:{version} is already the promoted version")
    if not moved:
        raise Conflict(f"{name}:{current} is promoted and newer than {version}; going back is not an approval")
    record = {"version": version, **fields, "previous": current}
    # after the pointer (which already names the approver): a lost write here loses only the per-version copy
    repository.container.upload_blob(f"{name}/{version}/{APPROVAL_FILE}", json.dumps({"name": name, **record}),
                                     overwrite=True, content_settings=ContentSettings(content_type="application/json"))
    logger.info("model %s:%s approved by %s (was %s)", name, version, approved_by, current)
    telemetry.record_retraining(event="promoted", window_id=str((evaluation or {}).get("window") or ""),
                                model_version=version)
    return {"name": name, **record}


def approval_of(repository: BlobModelRepository, name: str, version: str, *,
                pointer: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Who approved a version and when: its approval.json, else the pointer's fields when it names it."""
    record = read_json(repository, name, version, APPROVAL_FILE)
    if record is None and pointer and str(pointer.get("version")) == version and pointer.get("approved_by"):
        record = dict(pointer)
    if record is None:
        return None
    return {"approved_by": record.get("approved_by"), "approved_at": record.get("approved_at"),
            "previous": record.get("previous")}
