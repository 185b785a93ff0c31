"""A user's finished results as a gallery: effective (corrected) classes, counts, and a lazy partition scan.

The effective class of a result is the user's correction when there is one, else the prediction. Counting is
done here in code over one partition-scoped query (the local Cosmos server has no GROUP BY; real Cosmos has,
but one code path serves both), reading only the fields the gallery needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from azure.cosmos.exceptions import CosmosHttpResponseError

from shared_code.cosmos import translate_cosmos_error
from shared_code.results.store import ResultDocument, ResultsStore

# Everything except features/timings/error: what a gallery tile, the export and its manifest show.
_GALLERY_FIELDS = ("id", "userId", "status", "source", "filename", "blobName", "createdAt", "updatedAt",
                   "predictedLabel", "correctedLabel", "model", "predictions")


def effective_label(document: ResultDocument) -> str | None:
    """The corrected label if the user set one, else the predicted label."""
    return document.corrected_label or document.predicted_label


def done_results(store: ResultsStore, user_id: str, *, label: str | None = None,
                 blobs_only: bool = False) -> Iterator[ResultDocument]:
    """The user's `done` results, oldest first, read page by page (nothing is held beyond one page).

    `label` keeps results whose effective class is exactly that label; `blobs_only` keeps direct uploads,
    the only results whose image the service keeps.
    """
    fields = ", ".join(f"c.{name}" for name in _GALLERY_FIELDS)
    query = f"SELECT {fields} FROM c WHERE c.userId = @user AND c.status = @status"  # noqa: S608 - fixed names
    parameters: list[dict[str, Any]] = [{"name": "@user", "value": user_id}, {"name": "@status", "value": "done"}]
    if blobs_only:
        query += " AND c.source = @source"
        parameters.append({"name": "@source", "value": "blob"})
    query += " ORDER BY c.createdAt ASC"
    try:
        items = store.container.query_items(query, parameters=parameters, partition_key=user_id,
                                            max_item_count=100)
        for item in items:
            document = ResultDocument.model_validate(item)
            if label is None or effective_label(document) == label:
                yield document
    except CosmosHttpResponseError as exc:
        raise translate_cosmos_error(exc) from exc


def class_counts(documents: Iterable[ResultDocument]) -> list[tuple[str, int]]:
    """(label, count) per effective class, most frequent first, ties by label."""
    counts = Counter(label for document in documents if (label := effective_label(document)))
    return sorted(counts.items(), key=lambda entry: (-entry[1], entry[0]))
