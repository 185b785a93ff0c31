"""SDK-type bindings (deferred binding), as the Python worker and the Functions host run them.

When a trigger parameter is annotated with a type an installed extension registers (for blobs,
`azurefunctions.extensions.bindings.blob.BlobClient` / `ContainerClient` / `StorageStreamDownloader`), the worker
marks the binding `SupportsDeferredBinding` at indexing and the host then sends no content: it sends a
`ModelBindingData` (source `AzureStorageBlobs`, JSON content `{"Connection", "ContainerName", "BlobName"}`), and
the worker asks the extension's converter to build the SDK object from it and the app's settings. This module does
the same with the same converter, so the function gets exactly the client it gets in Azure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from devstack.invocation import IndexedFunction

try:  # the extension base is installed with any SDK-type binding extension; without it there are none
    from azurefunctions.extensions.base import Datum, meta
except ImportError:  # pragma: no cover - the app's requirements install it
    meta = None

BLOB_SOURCE = "AzureStorageBlobs"


@dataclass(frozen=True)
class ModelBindingData:
    """The host's deferred-binding payload (the worker's protobuf message has the same four fields)."""

    version: str
    source: str
    content_type: str
    content: bytes


def uses_sdk_type(function: IndexedFunction) -> bool:
    """True when the trigger parameter's annotation is an SDK type some installed extension converts."""
    annotation = function.annotations.get(function.trigger.name)
    return meta is not None and annotation is not None and bool(
        meta.get_binding_registry().check_supported_type(annotation))


def blob_sdk_argument(function: IndexedFunction, *, connection: str, container: str, blob_name: str) -> Any:
    """The SDK object the function's trigger parameter asks for, for one blob."""
    trigger = function.trigger
    return blob_sdk_object(connection=connection, container=container, blob_name=blob_name,
                           pytype=function.annotations[trigger.name], binding=trigger.get_binding_name())


def blob_sdk_object(*, connection: str, container: str, blob_name: str, pytype: type | None = None,
                    binding: str = "blobTrigger") -> Any:
    """An SDK object for one blob (default: `BlobClient`), built by the extension's converter as in Azure.

    The converter reads `connection` (or `connection__blobServiceUri`, `__credential`, `__clientId`: identity-based)
    from the environment, as it does in Azure; the host never reads the blob.
    """
    if meta is None:
        raise TypeError("azurefunctions-extensions-base is not installed: no SDK-type bindings")
    if pytype is None:
        from azurefunctions.extensions.bindings.blob import BlobClient  # noqa: PLC0415 - registers the converter

        pytype = BlobClient
    converter = meta.get_binding_registry().get(binding)
    if converter is None:
        raise TypeError(f"no SDK-type converter is registered for '{binding}'")
    content = json.dumps({"Connection": connection, "ContainerName": container, "BlobName": blob_name}).encode()
    datum = Datum(ModelBindingData("1.0", BLOB_SOURCE, "application/json", content), "model_binding_data")
    return converter.decode(datum, trigger_metadata={}, pytype=pytype)
