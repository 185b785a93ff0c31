"""Blob trigger: a new upload under `uploads/{user}/{name}` becomes exactly one result document."""

from __future__ import annotations

import logging

import azure.functions as func

from functions.dependencies import get_service
from shared_code.results.service import BlobEvent

logger = logging.getLogger(__name__)
blueprint = func.Blueprint()  # type: ignore[no-untyped-call]


def blob_event_from(blob: func.InputStream) -> BlobEvent:
    """Adapt the trigger's InputStream (name is `container/path`) to the core's event."""
    name = blob.name or ""
    _, _, path = name.partition("/")
    properties = getattr(blob, "blob_properties", None) or {}
    etag = str(properties.get("ETag") or properties.get("Etag") or properties.get("etag") or "")
    uploaded = properties.get("LastModified") or properties.get("CreatedOn")
    return BlobEvent(blob_name=path, data=blob.read(), etag=etag.strip('"') or f"len-{blob.length}",
                     uploaded_at=_iso(uploaded))


def _iso(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if "T" in text else None


# In Azure the trigger is fed by an Event Grid subscription (Flex Consumption has no polling blob trigger);
# the connection is the host storage account, identity-based via AzureWebJobsStorage__* settings.
@blueprint.blob_trigger(arg_name="blob", path="uploads/{user}/{name}", connection="AzureWebJobsStorage",
                        source=func.BlobSource.EVENT_GRID)
def classify_uploaded_blob(blob: func.InputStream) -> None:
    """Classify an uploaded image; bad images end `rejected`, persistent failures `failed`."""
    event = blob_event_from(blob)
    result = get_service().process_blob(event)
    if result is None:
        logger.info("blob %s has no result (deleted or erased): the blob was deleted", event.blob_name)
    else:
        logger.info("blob %s -> result %s (%s)", event.blob_name, result.id, result.status)
