"""User feedback: the correct label for one of the caller's results, which drift monitoring counts as ground truth."""

from __future__ import annotations

import logging
from collections.abc import Collection

from shared_code.errors import BadRequest
from shared_code.results.store import ResultDocument, ResultsStore

logger = logging.getLogger(__name__)


def record_feedback(results: ResultsStore, labels: Collection[str], *, user_id: str, result_id: str,
                    label: str) -> ResultDocument:
    """Set `correctedLabel` on the caller's own result; NotFound for anyone else's id (partition-scoped read)."""
    if label not in labels:
        raise BadRequest(f"label {label!r} is not one of the served model's {len(labels)} labels")
    document = results.get(user_id, result_id)
    if document.status != "done":
        raise BadRequest(f"result {result_id} is {document.status}; only a classified result can be corrected")
    document.corrected_label = label
    stored = results.upsert(document)
    logger.info("feedback on %s: predicted %s, corrected %s", result_id, document.predicted_label, label)
    return stored
