"""Blob triggers: a new upload under `uploads/{user}/{name}` becomes exactly one result document.

Both take the SDK-type `BlobClient` binding (azurefunctions-extensions-bindings-blob): the host passes a
reference, not the content, so the size is known before a byte is read and at most MAX_UPLOAD_BYTES ever is.
In Azure they are fed by two Event Grid subscriptions on `data.contentLength` (infra/modules/
blob-events-subscription.bicep): uploads within the limit reach `classify_uploaded_blob`, larger ones
`reject_oversized_upload`, which records `rejected` from the properties alone. The connection is the host
storage account, identity-based via the AzureWebJobsStorage__* settings (Flex Consumption has no polling trigger).
"""

from __future__ import annotations

import logging

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_binding

from functions.dependencies import get_service
from shared_code.results.store import ResultDocument

logger = logging.getLogger(__name__)
blueprint = func.Blueprint()  # type: ignore[no-untyped-call]
UPLOADS_PATH = "uploads/{user}/{name}"


@blueprint.blob_trigger(arg_name="client", path=UPLOADS_PATH, connection="AzureWebJobsStorage",
                        source=func.BlobSource.EVENT_GRID)
def classify_uploaded_blob(client: blob_binding.BlobClient) -> None:
    """Classify an uploaded image; bad or oversized images end `rejected`, persistent failures `failed`."""
    _log(client.blob_name, get_service().process_uploaded_blob(client))


@blueprint.blob_trigger(arg_name="client", path=UPLOADS_PATH, connection="AzureWebJobsStorage",
                        source=func.BlobSource.EVENT_GRID)
def reject_oversized_upload(client: blob_binding.BlobClient) -> None:
    """Record `rejected` (image_too_large) for an upload above the limit; reads its properties, never its bytes."""
    _log(client.blob_name, get_service().process_oversized_blob(client))


def _log(blob_name: str, result: ResultDocument | None) -> None:
    if result is None:
        logger.info("blob %s: nothing recorded (gone, replaced, or its result was deleted)", blob_name)
    else:
        logger.info("blob %s -> result %s (%s)", blob_name, result.id, result.status)
