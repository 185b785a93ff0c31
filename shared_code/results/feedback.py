"""User feedback: the correct label for one of the caller's results, which drift monitoring counts as ground truth."""

from __future__ import annotations

import logging
from collections.abc import Collection

from shared_code.errors import BadRequest, NotFound
from shared_code.results.store import ResultDocument, ResultsStore

logger = logging.getLogger(__name__)


def record_feedback(results: ResultsStore, labels: Collection[str], *, user_id: str, result_id: str,
                    label: str) -> ResultDocument:
    """Set `correctedLabel` on the caller's own result; NotFound for anyone else's id (partition-scoped read)."""
    if label not in labels:
        raise BadRequest(f"label {label!r} is not one of the served model's {len(labels)} labels")
    refused: list[str] = []

    def correct(document: ResultDocument) -> bool:
        # Runs on the latest stored version: a blob reprocessed meanwhile neither loses this correction nor
        # has it applied to a result that is no longer classified.
        refused.clear()
        if document.status != "done":
            refused.append(document.status)
            return False
        document.corrected_label = label
        return True

    stored = results.update(user_id, result_id, correct)
    if stored is None:
        raise NotFound(f"no result {result_id!r}")
    if refused:
        raise BadRequest(f"result {result_id} is {refused[0]}; only a classified result can be corrected")
    logger.info("feedback on %s: predicted %s, corrected %s", result_id, stored.predicted_label, label)
    return stored
