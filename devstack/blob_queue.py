"""Event Grid-sourced blob triggers, as the blobs extension runs them: webhook -> host queue -> function.

In Azure, a blob trigger with `source="EventGrid"` does not poll. Event Grid POSTs `BlobCreated` events to
`/runtime/webhooks/blobs?functionName=Host.Functions.<name>`; the extension answers the validation handshake,
turns each event into a message `{"FunctionId", "BlobType", "ContainerName", "BlobName", "ETag"}` on the host's
queue `azure-webjobs-blobtrigger-<hostId>` (in `AzureWebJobsStorage`) and answers 202. A queue listener on every
instance then reads the blob's *current* properties and content (the ETag of the event is not checked for this
source) and invokes the function; a failed invocation makes the message visible again, and after
`poisonBlobThreshold` dequeues (host.json, default 5) it moves to `webjobs-blobtrigger-poison`. A message that
comes back with more dequeues than that (its worker died mid-invocation on the last attempt) is moved there
without another invocation. A blob deleted before its message is handled is skipped.

This module does the same against Azurite's queue service. A parameter annotated with an SDK type (the blob
extension's `BlobClient`: devstack/sdk_bindings.py) gets the client the extension builds from the connection
setting, after a properties read and without the host reading the blob; otherwise the function receives what the
Python worker passes: an `InputStream` with `name` (`container/blob`), `uri`, `length`, `blob_properties` (of the
blob read, not of the event) and `metadata`. The event itself (`data.sequencer`, `id`, `eventTime`) is dropped at the
webhook, in Azure as here: a function cannot see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import azure.functions as func
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.decorators.blob import BlobTrigger
from azure.storage.blob import BlobServiceClient, LinearRetry
from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient

from devstack.blob_trigger import HOST_STORAGE_SETTING, BlobPathPattern, BlobTriggerConfigError, connection_string_for
from devstack.invocation import IndexedFunction, Invoker
from devstack.local_settings import resolve_references
from devstack.sdk_bindings import blob_sdk_argument, uses_sdk_type

logger = logging.getLogger("devstack.host")

WEBHOOK_PATH = "/runtime/webhooks/blobs"
FUNCTION_ID_PREFIX = "Host.Functions."
POISON_QUEUE = "webjobs-blobtrigger-poison"
EVENT_GRID_SOURCE = "EventGrid"


def host_queue_name(host_id: str) -> str:
    """The host's blob-trigger queue (queue names: lower case, 3-63 characters)."""
    return f"azure-webjobs-blobtrigger-{host_id}"[:63].rstrip("-")


def is_event_grid(function: IndexedFunction) -> bool:
    """True for a blob trigger fed by Event Grid (`source="EventGrid"`)."""
    source = getattr(function.trigger, "source", None)
    return isinstance(function.trigger, BlobTrigger) and str(getattr(source, "value", source)) == EVENT_GRID_SOURCE


@dataclass(frozen=True)
class BlobQueueOptions:
    """How the host queue is read and retried."""

    host_id: str
    poll_seconds: float = 1.0
    max_attempts: int = 5
    workers: int = 2
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 30.0
    visibility_seconds: int = 30


@dataclass(frozen=True)
class WebhookResponse:
    """What the webhook answers."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain"


@dataclass(frozen=True)
class Registration:
    """One Event Grid blob function: its path pattern and the account its blobs are read from."""

    function: IndexedFunction
    pattern: BlobPathPattern
    service: BlobServiceClient
    connection: str = HOST_STORAGE_SETTING

    @property
    def deferred(self) -> bool:
        """The trigger parameter is an SDK type: the function gets a client and the host reads no content."""
        return uses_sdk_type(self.function)

    @property
    def function_id(self) -> str:
        """`Host.Functions.<name>`, as the subscription's `functionName` names it."""
        return f"{FUNCTION_ID_PREFIX}{self.function.name}"


def _storage(connection_string: str) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(
        connection_string, retry_policy=LinearRetry(backoff=1, retry_total=5, random_jitter_range=1))


class BlobTriggerQueue:
    """The webhook and the host queue listener for every Event Grid blob function of one host."""

    def __init__(self, invoker: Invoker, options: BlobQueueOptions) -> None:
        self.invoker = invoker
        self.options = options
        self.functions: dict[str, Registration] = {}
        self._queue: QueueClient | None = None
        self._poison: QueueClient | None = None
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = 0

    def add(self, function: IndexedFunction) -> Registration:
        """Register an Event Grid blob function (raises BlobTriggerConfigError when it cannot run here)."""
        trigger = function.trigger
        assert isinstance(trigger, BlobTrigger)
        pattern = BlobPathPattern.parse(resolve_references(trigger.path))
        missing = function.unbindable(set(pattern.parameters))
        if missing:
            raise BlobTriggerConfigError(f"parameters {missing} match no binding of the trigger path '{trigger.path}'")
        data = _storage(connection_string_for(trigger.connection))
        registration = Registration(function, pattern, data, trigger.connection or HOST_STORAGE_SETTING)
        self.functions[registration.function_id] = registration
        if self._queue is None:
            host_storage = os.environ.get(HOST_STORAGE_SETTING, "").strip() or connection_string_for(trigger.connection)
            service = QueueServiceClient.from_connection_string(
                host_storage, retry_policy=LinearRetry(backoff=1, retry_total=5, random_jitter_range=1))
            self._queue = service.get_queue_client(host_queue_name(self.options.host_id))
            self._poison = service.get_queue_client(POISON_QUEUE)
        return registration

    # --- the webhook ----------------------------------------------------------------------------------
    async def webhook(self, query: Mapping[str, str], headers: Mapping[str, str], body: bytes) -> WebhookResponse:
        """`POST /runtime/webhooks/blobs?functionName=Host.Functions.<name>` (headers with lower-case names)."""
        function_id = query.get("functionName", "")
        if function_id not in self.functions:
            return WebhookResponse(404, f"no Event Grid blob trigger named '{function_id}'".encode())
        kind = headers.get("aeg-event-type", "")
        try:
            parsed = json.loads(body or b"null")
        except ValueError:
            return WebhookResponse(400, b"the body is not JSON")
        events = parsed if isinstance(parsed, list) else [parsed] if isinstance(parsed, dict) else []
        if kind.lower() == "subscriptionvalidation":
            first = events[0] if events and isinstance(events[0], dict) else {}
            code = (first.get("data") or {}).get("validationCode")
            if not code:
                return WebhookResponse(400, b"no validationCode")
            logger.info("perform handshake with eventGrid for function: %s", function_id)
            return WebhookResponse(200, json.dumps({"validationResponse": code}).encode(), "application/json")
        if kind.lower() == "unsubscribe":
            return WebhookResponse(202)
        if kind.lower() != "notification":
            return WebhookResponse(400, b"unknown aeg-event-type")
        try:
            messages = [self._message(event, function_id) for event in events]
        except (KeyError, TypeError, ValueError) as exc:
            return WebhookResponse(400, f"not a blob event: {exc}".encode())
        try:
            for message in messages:
                await asyncio.to_thread(self._enqueue, message)
        except Exception as exc:
            # Not queued: a 5xx makes Event Grid deliver the event again later.
            logger.error("Blob webhook %s: could not queue the event (%s: %s)", function_id, type(exc).__name__, exc)
            return WebhookResponse(500)
        self._wake.set()
        return WebhookResponse(202)

    @staticmethod
    def _message(event: Mapping[str, Any], function_id: str) -> dict[str, str]:
        data = event["data"]
        path = unquote(urlsplit(str(data["url"])).path).lstrip("/").split("/")
        # Azurite's path-style URLs carry the account first (/devstoreaccount1/container/blob); Azure's do not.
        if path and path[0] == "devstoreaccount1":
            path = path[1:]
        container, blob_name = path[0], "/".join(path[1:])
        if not container or not blob_name:
            raise ValueError(f"no container/blob in {data['url']}")
        return {"Type": "BlobTrigger", "FunctionId": function_id,
                "BlobType": str(data.get("blobType", "BlockBlob")).replace("Blob", ""),
                "ContainerName": container, "BlobName": blob_name, "ETag": f'"{data.get("eTag", "")}"'}

    def _enqueue(self, message: dict[str, str]) -> None:
        assert self._queue is not None
        try:
            self._queue.send_message(json.dumps(message))
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self._queue.create_queue()
            self._queue.send_message(json.dumps(message))

    # --- the queue listener ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start reading the host queue (no-op without Event Grid functions)."""
        if not self.functions:
            return
        for registration in self.functions.values():
            logger.info("Blob trigger %s (source EventGrid): events at %s?functionName=%s, queue '%s'",
                        registration.function.name, WEBHOOK_PATH, registration.function_id,
                        host_queue_name(self.options.host_id))
        self._poller = asyncio.create_task(self._poll(), name="blob-trigger-queue")

    async def stop(self, grace_seconds: float) -> None:
        """Take no new messages; let running invocations finish for up to `grace_seconds`, then cancel them.

        An unfinished message is not deleted: it becomes visible again and is delivered again (at least once).
        """
        self._stopping = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        while self._busy and loop.time() < deadline:
            await asyncio.sleep(0.05)
        tasks = [*self._running, *([self._poller] if self._poller else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _ensure_queues(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                for queue in (self._queue, self._poison):
                    assert queue is not None
                    with contextlib.suppress(ResourceExistsError):
                        await asyncio.to_thread(queue.create_queue)
                return
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    logger.error("Blob trigger queue: storage is not reachable (%s: %s); retrying",
                                 type(exc).__name__, exc)
                await asyncio.sleep(self.options.poll_seconds)

    async def _poll(self) -> None:
        await self._ensure_queues()
        while not self._stopping:
            free = self.options.workers - len(self._running)
            messages: list[QueueMessage] = []
            if free > 0:
                try:
                    messages = await asyncio.to_thread(self._receive, free)
                except Exception as exc:
                    logger.warning("Blob trigger queue: receiving failed (%s: %s)", type(exc).__name__, exc)
            for message in messages:
                task = asyncio.create_task(self._handle(message))
                self._running.add(task)
                task.add_done_callback(self._finished)
            if not messages:
                # Woken by the webhook (a new message) or a finished worker (a free slot), else poll again.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.options.poll_seconds)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()

    def _receive(self, count: int) -> list[QueueMessage]:
        assert self._queue is not None
        pages = self._queue.receive_messages(max_messages=count, visibility_timeout=self.options.visibility_seconds)
        return list(pages)

    async def _handle(self, message: QueueMessage) -> None:
        self._busy += 1
        receipt = _Receipt(message)
        keepalive = asyncio.create_task(self._keep_invisible(receipt))
        try:
            await self._process(message, receipt, keepalive)
        except Exception:
            # A worker must outlive any one message; it becomes visible again and is retried.
            logger.exception("Blob trigger queue: handling message %s failed", message.id)
        finally:
            keepalive.cancel()
            self._busy -= 1

    async def _process(self, message: QueueMessage, receipt: _Receipt, keepalive: asyncio.Task[None]) -> None:
        try:
            body = json.loads(str(message.content))
            registration = self.functions.get(str(body["FunctionId"]))
        except (ValueError, KeyError, TypeError):
            logger.error("Blob trigger queue: message %s is not a blob trigger message; poison", message.id)
            await self._settle(keepalive, receipt, poison="invalid message")
            return
        if registration is None:
            logger.warning("Blob trigger queue: function %s not found (message %s)", body["FunctionId"], message.id)
            await self._settle(keepalive, receipt, delete=True)
            return
        blob_name = str(body["BlobName"])
        dequeues = int(message.dequeue_count or 1)
        if dequeues > self.options.max_attempts:
            logger.error("Blob '%s/%s' was dequeued %d times (its worker did not finish): poison, moved to '%s'",
                         body["ContainerName"], blob_name, dequeues, POISON_QUEUE)
            await self._settle(keepalive, receipt, poison="dequeue count exceeded")
            return
        parameters = registration.pattern.match(blob_name)
        if body["ContainerName"] != registration.pattern.container or parameters is None:
            logger.warning("Blob '%s/%s' does not match the path of %s; message %s ignored", body["ContainerName"],
                           blob_name, registration.function.name, message.id)
            await self._settle(keepalive, receipt, delete=True)
            return
        try:
            argument = await asyncio.to_thread(self._argument_for, registration, str(body["ContainerName"]), blob_name)
        except ResourceNotFoundError:
            logger.info("Blob '%s/%s' no longer exists; message %s ignored", body["ContainerName"], blob_name,
                        message.id)
            await self._settle(keepalive, receipt, delete=True)
            return
        except Exception as exc:
            logger.error("Blob '%s/%s' could not be read: %s: %s", body["ContainerName"], blob_name,
                         type(exc).__name__, exc)
            await self._failed(keepalive, receipt, dequeues, exc, body)
            return
        try:
            await self.invoker.invoke(
                registration.function, argument,
                reason=f"New blob detected({EVENT_GRID_SOURCE}): {body['ContainerName']}/{blob_name}",
                extras=parameters, retry_count=dequeues - 1,
                max_retry_count=self.options.max_attempts - 1)
        except Exception as exc:
            await self._failed(keepalive, receipt, dequeues, exc, body)
            return
        await self._settle(keepalive, receipt, delete=True)

    async def _failed(self, keepalive: asyncio.Task[None], receipt: _Receipt, dequeues: int, error: Exception,
                      body: Mapping[str, Any]) -> None:
        if dequeues >= self.options.max_attempts:
            logger.error("Blob '%s/%s' failed %d times: poison, moved to '%s' (last error %s: %s)",
                         body["ContainerName"], body["BlobName"], dequeues, POISON_QUEUE, type(error).__name__, error)
            await self._settle(keepalive, receipt, poison=f"{type(error).__name__}: {error}")
            return
        delay = min(self.options.retry_base_seconds * 2 ** (dequeues - 1), self.options.retry_max_seconds)
        logger.warning("Blob '%s/%s' attempt %d of %d failed; visible again in %.2f s", body["ContainerName"],
                       body["BlobName"], dequeues, self.options.max_attempts, delay)
        await self._settle(keepalive, receipt, visible_in=delay)

    async def _settle(self, keepalive: asyncio.Task[None], receipt: _Receipt, *, delete: bool = False,
                      poison: str | None = None, visible_in: float | None = None) -> None:
        keepalive.cancel()
        await asyncio.gather(keepalive, return_exceptions=True)
        assert self._queue is not None and self._poison is not None
        try:
            if poison is not None:
                await asyncio.to_thread(self._poison.send_message, str(receipt.message.content))
                delete = True
            if delete:
                await asyncio.to_thread(self._queue.delete_message, receipt.message.id, receipt.pop_receipt)
            elif visible_in is not None:
                await asyncio.to_thread(self._queue.update_message, receipt.message.id, receipt.pop_receipt,
                                        visibility_timeout=max(0, round(visible_in)))
        except Exception as exc:
            # The message reappears after its visibility timeout and is delivered again: at least once.
            logger.warning("Blob trigger queue: settling message %s failed (%s: %s); it will be redelivered",
                           receipt.message.id, type(exc).__name__, exc)

    async def _keep_invisible(self, receipt: _Receipt) -> None:
        """Renew the message's invisibility while its invocation runs (the WebJobs queue listener does too)."""
        assert self._queue is not None
        interval = max(1.0, self.options.visibility_seconds / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                updated = await asyncio.to_thread(self._queue.update_message, receipt.message.id, receipt.pop_receipt,
                                                  visibility_timeout=self.options.visibility_seconds)
                receipt.pop_receipt = updated.pop_receipt or receipt.pop_receipt
            except Exception as exc:
                logger.warning("Blob trigger queue: renewing message %s failed (%s)", receipt.message.id, exc)

    @classmethod
    def _argument_for(cls, registration: Registration, container: str, blob_name: str) -> Any:
        """What the function gets: an SDK client (after a properties read: deleted blobs are skipped), or content."""
        if registration.deferred:
            registration.service.get_blob_client(container, blob_name).get_blob_properties()
            return blob_sdk_argument(registration.function, connection=registration.connection, container=container,
                                     blob_name=blob_name)
        return cls._argument(registration.function, cls._read_current(registration, container, blob_name))

    @staticmethod
    def _read_current(registration: Registration, container: str, blob_name: str) -> func.blob.InputStream:
        """The blob as it is now (no pinned ETag: EventGrid-sourced triggers read the current version)."""
        blob = registration.service.get_blob_client(container, blob_name)
        downloader = blob.download_blob()
        data = downloader.readall()
        properties = downloader.properties
        modified, created = properties.last_modified, properties.creation_time
        etag = str(properties.etag or "").strip('"')
        return func.blob.InputStream(
            data=data, name=f"{container}/{blob_name}", uri=blob.url, length=len(data),
            blob_properties={"ETag": etag, "ContentLength": len(data), "Length": len(data),
                             "ContentType": properties.content_settings.content_type,
                             "LastModified": modified.isoformat() if modified else None,
                             "CreatedOn": created.isoformat() if created else None,
                             "BlobType": "BlockBlob"},
            metadata=dict(properties.metadata or {}),
        )

    @staticmethod
    def _argument(function: IndexedFunction, stream: func.blob.InputStream) -> Any:
        annotation = function.annotations.get(function.trigger.name)
        if annotation is bytes:
            return stream.read()
        if annotation is str:
            return stream.read().decode("utf-8")
        return stream


class _Receipt:
    """A received message and its latest pop receipt (each visibility update issues a new one)."""

    def __init__(self, message: QueueMessage) -> None:
        self.message = message
        self.pop_receipt = str(message.pop_receipt or "")
