"""Blob triggers with source LogsAndContainerScan, by polling Azurite: new blobs and new versions, retries, poison,
receipts for restarts (EventGrid-sourced triggers: devstack/blob_queue.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.functions.decorators.blob import BlobTrigger
from azure.storage.blob import BlobServiceClient, ContainerClient, LinearRetry

from devstack.invocation import IndexedFunction, Invoker
from devstack.local_settings import resolve_references
from devstack.sdk_bindings import blob_sdk_argument, uses_sdk_type

logger = logging.getLogger("devstack.host")

HOST_STORAGE_SETTING = "AzureWebJobsStorage"  # the Functions host's own storage account (receipts live there)
RECEIPTS_CONTAINER = "azure-webjobs-hosts"  # where the Functions host keeps its blob receipts too
_PATH_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class BlobTriggerConfigError(ValueError):
    """The trigger's path or connection cannot be resolved locally."""


@dataclass(frozen=True)
class BlobPathPattern:
    """`container/{param}/...` split into the container and a matcher for blob names."""

    container: str
    name_template: str
    regex: re.Pattern[str]
    parameters: tuple[str, ...]

    @classmethod
    def parse(cls, path: str) -> BlobPathPattern:
        """Parse a trigger path such as `uploads/{user}/{name}`."""
        container, _, name_template = path.strip("/").partition("/")
        if not container or "{" in container:
            raise BlobTriggerConfigError(f"blob trigger path '{path}' must start with a literal container name")
        regex, position, parameters = "", 0, []
        for found in _PATH_PARAMETER.finditer(name_template):
            regex += re.escape(name_template[position:found.start()]) + f"(?P<{found.group(1)}>.+?)"
            parameters.append(found.group(1))
            position = found.end()
        regex += re.escape(name_template[position:])
        return cls(container, name_template, re.compile(regex), tuple(parameters))

    @property
    def listing_prefix(self) -> str:
        """The literal start of the name template, which narrows the container listing."""
        return self.name_template.split("{", 1)[0]

    def match(self, blob_name: str) -> dict[str, str] | None:
        """Path parameters for a blob name, or None when the blob does not belong to this trigger."""
        if not self.name_template:
            return {}
        found = self.regex.fullmatch(blob_name)
        return found.groupdict() if found else None


def connection_string_for(setting: str | None) -> str:
    """The connection string named by a trigger's `connection`, looked up like the Functions host does."""
    name = setting or HOST_STORAGE_SETTING
    for candidate in (name, f"AzureWebJobs{name}"):
        value = os.environ.get(candidate, "").strip()
        if value:
            return value
    if os.environ.get(f"{name}__blobServiceUri") or os.environ.get(f"{name}__serviceUri"):
        raise BlobTriggerConfigError(
            f"connection '{name}' is identity-based ({name}__blobServiceUri); locally set '{name}' to the "
            "Azurite connection string in local.settings.json"
        )
    raise BlobTriggerConfigError(f"connection setting '{name}' is not set (local.settings.json Values or environment)")


@dataclass(frozen=True)
class BlobVersion:
    """One version of one blob to deliver, with its delivery attempt count."""

    name: str
    etag: str
    attempt: int = 0
    last_error: BaseException | None = None


class ReceiptStore:
    """Completion markers `blobreceipts/{host}/{function}/{etag}/{container}/{blob}`, one per delivered version."""

    def __init__(self, service: BlobServiceClient, host_id: str, function_name: str, container: str) -> None:
        self._container = service.get_container_client(RECEIPTS_CONTAINER)
        self._prefix = f"blobreceipts/{host_id}/{function_name}/"
        self._watched_container = container

    def ensure_container(self) -> None:
        """Create the receipts container when missing."""
        with contextlib.suppress(ResourceExistsError):
            self._container.create_container()

    def completed(self) -> set[tuple[str, str]]:
        """(blob name, etag) pairs that were completed or poisoned by an earlier run of this host."""
        done = set()
        for receipt in self._container.list_blobs(name_starts_with=self._prefix):
            etag, container, blob_name = receipt.name[len(self._prefix):].split("/", 2)
            if container == self._watched_container:
                done.add((blob_name, etag))
        return done

    def write(self, version: BlobVersion, status: str, error: BaseException | None = None) -> None:
        """Record the final outcome of a blob version."""
        record = {"status": status, "attempts": version.attempt, "at": datetime.now(UTC).isoformat(),
                  "error": f"{type(error).__name__}: {error}" if error else None}
        name = f"{self._prefix}{version.etag}/{self._watched_container}/{version.name}"
        self._container.upload_blob(name, json.dumps(record).encode(), overwrite=True, metadata={"status": status})

    def read(self, blob_name: str, etag: str) -> dict[str, Any] | None:
        """The receipt of one blob version, if any (for tests and diagnostics)."""
        client = self._container.get_blob_client(f"{self._prefix}{_bare(etag)}/{self._watched_container}/{blob_name}")
        try:
            record: dict[str, Any] = json.loads(client.download_blob().readall())
        except ResourceNotFoundError:
            return None
        return record


def _host_storage_client(connection_string: str) -> BlobServiceClient:
    """The host's own storage client: a transient 503 or a restarting Azurite is retried within seconds.

    The SDK default (exponential from 15 s) would stall a trigger worker for a minute on one ServerBusy; the
    Functions host retries its storage calls on a scale of seconds too.
    """
    return BlobServiceClient.from_connection_string(
        connection_string, retry_policy=LinearRetry(backoff=1, retry_total=5, random_jitter_range=1))


def _bare(etag: str) -> str:
    return etag.strip('"')


@dataclass(frozen=True)
class BlobTriggerOptions:
    """How blobs are detected and retried."""

    host_id: str
    poll_seconds: float = 1.0
    max_attempts: int = 5
    workers: int = 2
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 30.0


class BlobTriggerListener:
    """Polls one container and delivers each new blob version to one function at least once."""

    def __init__(self, function: IndexedFunction, invoker: Invoker, options: BlobTriggerOptions) -> None:
        trigger = function.trigger
        if not isinstance(trigger, BlobTrigger):
            raise TypeError(f"{function.name} is not a blob-triggered function")
        self.function = function
        self.pattern = BlobPathPattern.parse(resolve_references(trigger.path))
        missing = function.unbindable(set(self.pattern.parameters))
        if missing:
            raise BlobTriggerConfigError(f"parameters {missing} match no binding of the trigger path '{trigger.path}'")
        connection_string = connection_string_for(trigger.connection)
        self.connection = trigger.connection or HOST_STORAGE_SETTING
        self.service = _host_storage_client(connection_string)
        host_storage = os.environ.get(HOST_STORAGE_SETTING, "").strip() or connection_string
        self.receipts = ReceiptStore(_host_storage_client(host_storage), options.host_id,
                                     function.name, self.pattern.container)
        self.container: ContainerClient = self.service.get_container_client(self.pattern.container)
        self.invoker = invoker
        self.options = options
        self.source = str(getattr(trigger, "source", None) or "LogsAndContainerScan")
        self._seen: set[tuple[str, str]] = set()
        self._queue: asyncio.Queue[BlobVersion] = asyncio.Queue()
        self._retries: set[asyncio.TimerHandle] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self._stopping = False
        self._warned_missing_container = False

    async def start(self) -> None:
        """Start polling and the worker pool; receipts are loaded before the first scan."""
        logger.info("Blob trigger %s watches '%s/%s' (source %s, emulated by polling every %.1f s)",
                    self.function.name, self.pattern.container, self.pattern.name_template, self.source,
                    self.options.poll_seconds)
        self._tasks.append(asyncio.create_task(self._poll(), name=f"poll-{self.function.name}"))
        for index in range(self.options.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"blob-{self.function.name}-{index}"))

    async def _load_receipts(self) -> None:
        """Retry until storage answers: the host stays up (HTTP keeps serving) while Azurite is away."""
        failures = 0
        while not self._stopping:
            try:
                await asyncio.to_thread(self.receipts.ensure_container)
                self._seen = await asyncio.to_thread(self.receipts.completed)
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    logger.error("Blob trigger %s: storage is not reachable (%s: %s); retrying",
                                 self.function.name, type(exc).__name__, exc)
                await asyncio.sleep(self.options.poll_seconds)
                continue
            logger.info("Blob trigger %s: %d versions already delivered by earlier runs", self.function.name,
                        len(self._seen))
            return

    async def stop(self, grace_seconds: float) -> None:
        """Take no new blobs, let running invocations finish for up to `grace_seconds`, then cancel the rest.

        Versions not finished get no receipt, so the next host run delivers them again.
        """
        self._stopping = True
        for handle in self._retries:
            handle.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        while self._busy and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _poll(self) -> None:
        await self._load_receipts()
        while not self._stopping:
            try:
                fresh = await asyncio.to_thread(self._scan)
            except ResourceNotFoundError:
                if not self._warned_missing_container:
                    logger.warning("Blob trigger %s: container '%s' does not exist yet", self.function.name,
                                   self.pattern.container)
                    self._warned_missing_container = True
                fresh = []
            except Exception:
                logger.exception("Blob trigger %s: listing '%s' failed", self.function.name, self.pattern.container)
                fresh = []
            for version in fresh:
                self._queue.put_nowait(version)
            await asyncio.sleep(self.options.poll_seconds)

    def _scan(self) -> list[BlobVersion]:
        fresh = []
        for blob in self.container.list_blobs(name_starts_with=self.pattern.listing_prefix or None):
            key = (blob.name, _bare(blob.etag))
            if key in self._seen or self.pattern.match(blob.name) is None:
                continue
            self._seen.add(key)
            fresh.append(BlobVersion(name=key[0], etag=key[1]))
        return fresh

    async def _work(self) -> None:
        while not self._stopping:
            version = await self._queue.get()
            self._busy += 1
            try:
                await self._deliver(version)
            except Exception:
                # A worker must outlive any one blob; the version stays unreceipted and is redelivered on restart.
                logger.exception("Blob trigger %s: delivering '%s' failed", self.function.name, version.name)
            finally:
                self._busy -= 1

    async def _deliver(self, version: BlobVersion) -> None:
        attempt = replace(version, attempt=version.attempt + 1)
        try:
            argument = await asyncio.to_thread(self._argument_for, attempt)
        except ResourceModifiedError:
            logger.info("Blob '%s/%s' changed before delivery of ETag %s; the newer version follows",
                        self.pattern.container, version.name, version.etag)
            return
        except ResourceNotFoundError:
            logger.info("Blob '%s/%s' was deleted before delivery", self.pattern.container, version.name)
            return
        except Exception as exc:
            logger.error("Blob '%s/%s' could not be read: %s: %s", self.pattern.container, version.name,
                         type(exc).__name__, exc)
            self._after_failure(replace(attempt, last_error=exc), exc)
            return
        parameters = self.pattern.match(version.name) or {}
        try:
            await self.invoker.invoke(
                self.function, argument,
                reason=f"New blob detected({self.source}): {self.pattern.container}/{version.name}",
                extras=parameters, retry_count=attempt.attempt - 1, max_retry_count=self.options.max_attempts - 1,
                last_error=version.last_error,
            )
        except Exception as exc:
            self._after_failure(replace(attempt, last_error=exc), exc)
            return
        await self._record(attempt, "completed")

    def _argument_for(self, version: BlobVersion) -> Any:
        """An SDK client for an SDK-typed parameter (once the detected version is still current), else content."""
        if not uses_sdk_type(self.function):
            return self._argument(self._download(version))
        current = self.container.get_blob_client(version.name).get_blob_properties()
        if _bare(str(current.etag)) != version.etag:
            raise ResourceModifiedError(f"blob {version.name} has a newer version")
        return blob_sdk_argument(self.function, connection=self.connection, container=self.pattern.container,
                                 blob_name=version.name)

    def _download(self, version: BlobVersion) -> func.blob.InputStream:
        blob = self.container.get_blob_client(version.name)
        # Pinning the ETag delivers exactly the version that was detected, never a newer one under its name.
        downloader = blob.download_blob(etag=f'"{version.etag}"', match_condition=MatchConditions.IfNotModified)
        data = downloader.readall()
        properties = downloader.properties
        modified = properties.last_modified
        return func.blob.InputStream(
            data=data, name=f"{self.pattern.container}/{version.name}", uri=blob.url, length=len(data),
            blob_properties={"ETag": version.etag, "Length": len(data),
                             "ContentType": properties.content_settings.content_type,
                             "LastModified": modified.isoformat() if modified else None},
            metadata=dict(properties.metadata or {}),
        )

    def _argument(self, stream: func.blob.InputStream) -> Any:
        annotation = self.function.annotations.get(self.function.trigger.name)
        if annotation is bytes:
            return stream.read()
        if annotation is str:
            return stream.read().decode("utf-8")
        return stream

    def _after_failure(self, version: BlobVersion, error: Exception) -> None:
        if version.attempt >= self.options.max_attempts:
            logger.error("Blob '%s/%s' (ETag %s) failed %d times: poison, no more retries (last error %s: %s)",
                         self.pattern.container, version.name, version.etag, version.attempt,
                         type(error).__name__, error)
            task = asyncio.create_task(self._record(version, "poison", error))
            self._tasks.append(task)
            return
        delay = min(self.options.retry_base_seconds * 2 ** (version.attempt - 1), self.options.retry_max_seconds)
        logger.warning("Blob '%s/%s' attempt %d of %d failed; retrying in %.2f s", self.pattern.container,
                       version.name, version.attempt, self.options.max_attempts, delay)
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def requeue() -> None:
            self._retries.discard(handle)
            if not self._stopping:
                self._queue.put_nowait(version)

        handle = loop.call_later(delay, requeue)
        self._retries.add(handle)

    async def _record(self, version: BlobVersion, status: str, error: BaseException | None = None) -> None:
        try:
            await asyncio.to_thread(self.receipts.write, version, status, error)
        except Exception:
            # Without a receipt the version is delivered again after a restart: at least once, never lost.
            logger.exception("Could not write the %s receipt of blob '%s'", status, version.name)
